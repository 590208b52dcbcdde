# The reference architecture (an AWS IoT workshop provisioned with Terraform), for fleetcore:
# `fleetcore apply examples/reference-stack` against a running server.

terraform {
  required_providers {
    aws   = { source = "hashicorp/aws" }
    awscc = { source = "hashicorp/awscc" }
  }
}

provider "aws" {
  region = "us-east-1"
}

locals {
  telemetry_filter = replace(var.telemetry_topic, "{thingName}", "+")
  shadow_filter    = replace(var.shadow_update_topic, "{thingName}", "+")
  # The thing name is the second level of both device topics.
  alert_topic = replace(replace(var.alert_topic, "{thingType}", var.thing_type), "{severity}", "critical")
  tags = {
    stack = var.name_prefix
  }
  # IoT Analytics and IoT Events names take underscores, not dashes.
  underscored = replace(var.name_prefix, "-", "_")
}

# IAM: accepted and ignored by fleetcore (it authorises with its own credentials); the
# rules below still name the role as they would on AWS.
resource "aws_iam_role" "rules" {
  name = "${var.name_prefix}-iot-rules"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "iot.amazonaws.com" } }]
  })
}

# ---------------------------------------------------------------------------------------------
# Registry, identity and access

resource "aws_iot_thing_type" "sensor" {
  name = var.thing_type
  properties {
    description           = "Simulated temperature sensor"
    searchable_attributes = ["site"]
  }
}

resource "aws_iot_thing_group" "fleet" {
  name = "${var.name_prefix}-devices"
  properties {
    description = "Every device of the reference fleet"
  }
  tags = local.tags
}

resource "aws_iot_thing" "device" {
  count           = var.device_count
  name            = format("%s-device-%d", var.name_prefix, count.index)
  thing_type_name = aws_iot_thing_type.sensor.name
  attributes = {
    site = "lab"
  }
}

resource "aws_iot_certificate" "device" {
  count  = var.device_count
  active = true
}

resource "aws_iot_thing_principal_attachment" "device" {
  count     = var.device_count
  thing     = aws_iot_thing.device[count.index].name
  principal = aws_iot_certificate.device[count.index].arn
}

# Least privilege: a device connects as its thing and uses its own topics and shadow.
resource "aws_iot_policy" "device" {
  name = "${var.name_prefix}-device"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["iot:Connect"]
        Resource = ["arn:aws:iot:*:*:client/$${iot:Connection.Thing.ThingName}"]
      },
      {
        Effect = "Allow"
        Action = ["iot:Publish", "iot:Receive"]
        Resource = [
          "arn:aws:iot:*:*:topic/devices/$${iot:Connection.Thing.ThingName}/*",
          "arn:aws:iot:*:*:topic/$aws/things/$${iot:Connection.Thing.ThingName}/shadow/*",
        ]
      },
      {
        Effect = "Allow"
        Action = ["iot:Subscribe"]
        Resource = [
          "arn:aws:iot:*:*:topicfilter/devices/$${iot:Connection.Thing.ThingName}/*",
          "arn:aws:iot:*:*:topicfilter/$aws/things/$${iot:Connection.Thing.ThingName}/shadow/*",
        ]
      },
    ]
  })
}

resource "aws_iot_policy_attachment" "device" {
  count  = var.device_count
  policy = aws_iot_policy.device.name
  target = aws_iot_certificate.device[count.index].arn
}

# Fleet provisioning by claim: a device holding a claim certificate gets its own certificate,
# a thing named after its serial number and the device policy.
resource "aws_iot_provisioning_template" "fleet" {
  name                  = "${var.name_prefix}-fleet-provisioning"
  description           = "Devices of the reference fleet provisioning themselves by claim"
  provisioning_role_arn = aws_iam_role.rules.arn
  enabled               = true
  template_body = jsonencode({
    Parameters = {
      SerialNumber                = { Type = "String" }
      "AWS::IoT::Certificate::Id" = { Type = "String" }
    }
    Resources = {
      thing = {
        Type = "AWS::IoT::Thing"
        Properties = {
          ThingName        = { "Fn::Join" = ["", ["${var.name_prefix}-device-", { Ref = "SerialNumber" }]] }
          AttributePayload = { site = "lab" }
        }
      }
      certificate = {
        Type       = "AWS::IoT::Certificate"
        Properties = { CertificateId = { Ref = "AWS::IoT::Certificate::Id" }, Status = "ACTIVE" }
      }
      policy = {
        Type       = "AWS::IoT::Policy"
        Properties = { PolicyName = aws_iot_policy.device.name }
      }
    }
  })
}

# Device Defender: every thing is watched for message floods and authorization failures;
# violations go to the alert topic.
resource "awscc_iot_security_profile" "fleet" {
  security_profile_name        = "${var.name_prefix}-fleet"
  security_profile_description = "Message floods and authorization failures"
  behaviors = [
    {
      name   = "message_flood"
      metric = "aws:num-messages-sent"
      criteria = {
        comparison_operator             = "less-than"
        value                           = { count = var.max_messages_per_window }
        duration_seconds                = var.defender_window_seconds
        consecutive_datapoints_to_alarm = 1
        consecutive_datapoints_to_clear = 1
      }
    },
    {
      name   = "authorization_failures"
      metric = "aws:num-authorization-failures"
      criteria = {
        comparison_operator = "less-than"
        value               = { count = 5 }
        duration_seconds    = var.defender_window_seconds
      }
    },
  ]
  alert_targets = {
    SNS = {
      alert_target_arn = aws_sns_topic.alerts.arn
      role_arn         = aws_iam_role.rules.arn
    }
  }
  # `arn:aws:iot:REGION:ACCOUNT:all/things`, from an ARN the server gave.
  target_arns = [replace(aws_iot_thing_group.fleet.arn, "thinggroup/${aws_iot_thing_group.fleet.name}", "all/things")]
}

# ---------------------------------------------------------------------------------------------
# Stream, lake, processor

resource "aws_kinesis_stream" "telemetry" {
  name             = "${var.name_prefix}-telemetry"
  shard_count      = var.stream_shards
  retention_period = 24
  tags             = local.tags
}

# The lake: on fleetcore a folder of the data dir's lake (or the configured S3 store).
resource "aws_s3_bucket" "lake" {
  bucket = "${var.name_prefix}-lake"
}

resource "aws_kinesis_firehose_delivery_stream" "archive" {
  name        = "${var.name_prefix}-archive"
  destination = "extended_s3"
  extended_s3_configuration {
    role_arn            = aws_iam_role.rules.arn
    bucket_arn          = aws_s3_bucket.lake.arn
    prefix              = "telemetry/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/"
    error_output_prefix = "errors/!{firehose:error-output-type}/"
    buffering_size      = 1
    buffering_interval  = var.lake_buffering_seconds
    compression_format  = "GZIP"
  }
}

resource "aws_cloudwatch_log_group" "processor" {
  name              = "/aws/lambda/${var.name_prefix}-processor"
  retention_in_days = var.log_retention_days
}

# The enrichment processor of examples/functions/python-enrich, zipped (see README.md).
resource "aws_lambda_function" "processor" {
  function_name    = "${var.name_prefix}-processor"
  role             = aws_iam_role.rules.arn
  runtime          = "python3.11"
  handler          = "lambda_function.lambda_handler"
  filename         = "${path.module}/functions/processor.zip"
  source_code_hash = filebase64sha256("${path.module}/functions/processor.zip")
  timeout          = 10
  environment {
    variables = {
      STREAM = aws_kinesis_stream.telemetry.name
    }
  }
  depends_on = [aws_cloudwatch_log_group.processor]
}

# ---------------------------------------------------------------------------------------------
# Notifications and detector

resource "aws_sns_topic" "alerts" {
  name         = "${var.name_prefix}-alerts"
  display_name = "Fleet alerts"
  tags         = local.tags
}

# Alerts reach MQTT subscribers of the alert topic.
resource "aws_sns_topic_subscription" "alerts_mqtt" {
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "mqtt"
  endpoint  = local.alert_topic
}

resource "awscc_iotevents_input" "telemetry" {
  input_name        = "${replace(var.name_prefix, "-", "_")}_telemetry"
  input_description = "Telemetry from the devices, fed by the events rule"
  input_definition = {
    attributes = [
      { json_path = "thing" },
      { json_path = "temperature" },
    ]
  }
}

resource "awscc_iotevents_detector_model" "overheat" {
  detector_model_name        = "${var.name_prefix}-overheat"
  detector_model_description = "Normal -> Overheating above the threshold -> Normal again below it"
  key                        = "thing"
  evaluation_method          = "SERIAL"
  role_arn                   = aws_iam_role.rules.arn
  detector_model_definition = {
    initial_state_name = "Normal"
    states = [
      {
        state_name = "Normal"
        on_input = {
          transition_events = [{
            event_name = "hot"
            condition  = "$input.${awscc_iotevents_input.telemetry.input_name}.temperature > ${var.temperature_threshold}"
            next_state = "Overheating"
          }]
        }
      },
      {
        state_name = "Overheating"
        on_enter = {
          events = [{
            event_name = "notify"
            condition  = "true"
            actions = [{
              sns = {
                target_arn = aws_sns_topic.alerts.arn
                payload = {
                  type               = "STRING"
                  content_expression = "'overheating: ' + $input.${awscc_iotevents_input.telemetry.input_name}.thing"
                }
              }
            }]
          }]
        }
        on_input = {
          transition_events = [{
            event_name = "cooled"
            condition  = "$input.${awscc_iotevents_input.telemetry.input_name}.temperature <= ${var.temperature_threshold}"
            next_state = "Normal"
          }]
        }
      },
    ]
  }
}

# The same breach as an alarm (acknowledgeable, one per thing), notified on the alert topic.
resource "awscc_iotevents_alarm_model" "overheat" {
  alarm_model_name        = "${var.name_prefix}-overheat-alarm"
  alarm_model_description = "Temperature above the threshold"
  key                     = "thing"
  severity                = 2
  role_arn                = aws_iam_role.rules.arn
  alarm_rule = {
    simple_rule = {
      input_property      = "$input.${awscc_iotevents_input.telemetry.input_name}.temperature"
      comparison_operator = "GREATER"
      threshold           = tostring(var.temperature_threshold)
    }
  }
  alarm_event_actions = {
    alarm_actions = [{ sns = { target_arn = aws_sns_topic.alerts.arn } }]
  }
  alarm_capabilities = {
    acknowledge_flow = { enabled = true }
  }
}

# ---------------------------------------------------------------------------------------------
# Analytics: channel -> pipeline -> datastore -> dataset

resource "awscc_iotanalytics_channel" "telemetry" {
  channel_name     = "${local.underscored}_telemetry"
  retention_period = { unlimited = true }
  tags             = [{ key = "stack", value = var.name_prefix }]
}

resource "awscc_iotanalytics_datastore" "telemetry" {
  datastore_name   = "${local.underscored}_telemetry"
  retention_period = { unlimited = true }
  tags             = [{ key = "stack", value = var.name_prefix }]
}

resource "awscc_iotanalytics_pipeline" "telemetry" {
  pipeline_name = "${local.underscored}_telemetry"
  pipeline_activities = [
    { channel = { name = "from_channel", channel_name = awscc_iotanalytics_channel.telemetry.channel_name, next = "fahrenheit" } },
    { math = { name = "fahrenheit", attribute = "temperature_f", math = "temperature * 1.8 + 32", next = "to_datastore" } },
    { datastore = { name = "to_datastore", datastore_name = awscc_iotanalytics_datastore.telemetry.datastore_name } },
  ]
}

resource "awscc_iotanalytics_dataset" "per_device" {
  dataset_name = "${local.underscored}_per_device"
  actions = [{
    action_name = "per_device"
    query_action = {
      sql_query = "SELECT thing, count(*) AS readings, max(temperature) AS max_temperature, max(temperature_f) AS max_temperature_f FROM ${awscc_iotanalytics_datastore.telemetry.datastore_name} GROUP BY thing ORDER BY thing"
    }
  }]
  depends_on = [awscc_iotanalytics_pipeline.telemetry]
}

# ---------------------------------------------------------------------------------------------
# Rules: one payload, many destinations

resource "aws_iot_topic_rule" "telemetry_stream" {
  name        = "${replace(var.name_prefix, "-", "_")}_telemetry_stream"
  description = "Raw telemetry to the Kinesis stream"
  enabled     = true
  sql         = "SELECT *, topic(2) AS thing FROM '${local.telemetry_filter}'"
  sql_version = "2016-03-23"
  kinesis {
    role_arn      = aws_iam_role.rules.arn
    stream_name   = aws_kinesis_stream.telemetry.name
    partition_key = "$${topic(2)}"
  }
}

resource "aws_iot_topic_rule" "telemetry_archive" {
  name        = "${replace(var.name_prefix, "-", "_")}_telemetry_archive"
  description = "Raw telemetry to the lake through the delivery stream"
  enabled     = true
  sql         = "SELECT *, topic(2) AS thing, timestamp() AS received_at FROM '${local.telemetry_filter}'"
  sql_version = "2016-03-23"
  firehose {
    role_arn             = aws_iam_role.rules.arn
    delivery_stream_name = aws_kinesis_firehose_delivery_stream.archive.name
    separator            = "\n"
  }
}

resource "aws_iot_topic_rule" "telemetry_enrich" {
  name        = "${replace(var.name_prefix, "-", "_")}_telemetry_enrich"
  description = "Telemetry through the enrichment processor, which forwards it to the stream"
  enabled     = true
  sql         = "SELECT *, topic(2) AS thing FROM '${local.telemetry_filter}'"
  sql_version = "2016-03-23"
  lambda {
    function_arn = aws_lambda_function.processor.arn
  }
}

resource "aws_iot_topic_rule" "telemetry_events" {
  name        = "${replace(var.name_prefix, "-", "_")}_telemetry_events"
  description = "Telemetry into the detector's input"
  enabled     = true
  sql         = "SELECT topic(2) AS thing, temperature FROM '${local.telemetry_filter}'"
  sql_version = "2016-03-23"
  iot_events {
    role_arn   = aws_iam_role.rules.arn
    input_name = awscc_iotevents_input.telemetry.input_name
  }
}

resource "aws_iot_topic_rule" "telemetry_analytics" {
  name        = "${local.underscored}_telemetry_analytics"
  description = "Telemetry into the analytics channel"
  enabled     = true
  sql         = "SELECT *, topic(2) AS thing FROM '${local.telemetry_filter}'"
  sql_version = "2016-03-23"
  iot_analytics {
    role_arn     = aws_iam_role.rules.arn
    channel_name = awscc_iotanalytics_channel.telemetry.channel_name
  }
}

resource "aws_iot_topic_rule" "alerts" {
  name        = "${replace(var.name_prefix, "-", "_")}_alerts"
  description = "Readings above the threshold, republished on the alert topic"
  enabled     = true
  sql         = "SELECT *, topic(2) AS thing, 'critical' AS severity FROM '${local.telemetry_filter}' WHERE temperature > ${var.temperature_threshold}"
  sql_version = "2016-03-23"
  republish {
    role_arn = aws_iam_role.rules.arn
    topic    = local.alert_topic
    qos      = 1
  }
  error_action {
    republish {
      role_arn = aws_iam_role.rules.arn
      topic    = "errors/${var.name_prefix}/alerts"
    }
  }
}

resource "aws_iot_topic_rule" "shadow_update" {
  name        = "${replace(var.name_prefix, "-", "_")}_shadow_update"
  description = "A device's reported state, from its own topic into its shadow"
  enabled     = true
  sql         = "SELECT state FROM '${local.shadow_filter}'"
  sql_version = "2016-03-23"
  republish {
    role_arn = aws_iam_role.rules.arn
    topic    = "$$aws/things/$${topic(2)}/shadow/update"
    qos      = 1
  }
}

# ---------------------------------------------------------------------------------------------
# Observability

resource "aws_cloudwatch_metric_alarm" "stream_idle" {
  alarm_name          = "${var.name_prefix}-telemetry-idle"
  alarm_description   = "No telemetry reached the stream for 5 minutes"
  namespace           = "AWS/Kinesis"
  metric_name         = "IncomingRecords"
  dimensions          = { StreamName = aws_kinesis_stream.telemetry.name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

resource "aws_cloudwatch_dashboard" "fleet" {
  dashboard_name = "${var.name_prefix}-overview"
  dashboard_body = jsonencode({
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title   = "Telemetry into the stream"
          region  = "us-east-1"
          stat    = "Sum"
          period  = 60
          metrics = [["AWS/Kinesis", "IncomingRecords", "StreamName", aws_kinesis_stream.telemetry.name]]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title   = "Lake deliveries"
          region  = "us-east-1"
          stat    = "Sum"
          period  = 60
          metrics = [["AWS/Firehose", "DeliveryToS3.Records", "DeliveryStreamName", aws_kinesis_firehose_delivery_stream.archive.name]]
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 12, height = 6
        properties = {
          title   = "Processor invocations and errors"
          region  = "us-east-1"
          stat    = "Sum"
          period  = 60
          metrics = [
            ["AWS/Lambda", "Invocations", "FunctionName", aws_lambda_function.processor.function_name],
            ["AWS/Lambda", "Errors", "FunctionName", aws_lambda_function.processor.function_name],
          ]
        }
      },
    ]
  })
}
