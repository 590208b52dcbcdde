# The reference architecture's knobs. Topics are written with {placeholders}, as in the
# reference; the rules turn them into MQTT topic filters.

variable "name_prefix" {
  description = "Prefix of every resource name"
  type        = string
  default     = "fleet"
}

variable "thing_type" {
  description = "The thing type of the simulated sensors"
  type        = string
  default     = "sensor"
}

variable "device_count" {
  description = "How many things (each with its own certificate) to register"
  type        = number
  default     = 3
}

variable "telemetry_topic" {
  description = "Where devices publish telemetry"
  type        = string
  default     = "devices/{thingName}/telemetry"
}

variable "shadow_update_topic" {
  description = "Where devices publish reported state for their shadow"
  type        = string
  default     = "devices/{thingName}/shadow/update"
}

variable "alert_topic" {
  description = "Where alerts are republished"
  type        = string
  default     = "alerts/{thingType}/{severity}"
}

variable "temperature_threshold" {
  description = "Telemetry above this temperature is an alert"
  type        = number
  default     = 30
}

variable "stream_shards" {
  description = "Shards of the telemetry stream"
  type        = number
  default     = 2
}

variable "log_retention_days" {
  description = "How long the processor's logs are kept"
  type        = number
  default     = 14
}

variable "max_messages_per_window" {
  description = "Device Defender flags a device that sends this many messages or more in one window"
  type        = number
  default     = 1000
}

variable "defender_window_seconds" {
  description = "Device Defender's window for counting messages and authorization failures"
  type        = number
  default     = 300
}

variable "lake_buffering_seconds" {
  description = "How long the delivery stream buffers telemetry before writing a lake object"
  type        = number
  default     = 60
}
