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
