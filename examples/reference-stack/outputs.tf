output "stream_name" {
  value = aws_kinesis_stream.telemetry.name
}

output "stream_arn" {
  value = aws_kinesis_stream.telemetry.arn
}

output "lake_bucket" {
  value = aws_s3_bucket.lake.bucket
}

output "alert_topic" {
  value = local.alert_topic
}

output "things" {
  value = aws_iot_thing.device[*].name
}

output "temperature_threshold" {
  value = var.temperature_threshold
}

output "analytics_dataset" {
  value = awscc_iotanalytics_dataset.per_device.dataset_name
}

output "detector_model" {
  value = awscc_iotevents_detector_model.overheat.detector_model_name
}

output "security_profile" {
  value = awscc_iot_security_profile.fleet.security_profile_name
}

output "alarm_model" {
  value = awscc_iotevents_alarm_model.overheat.alarm_model_name
}
