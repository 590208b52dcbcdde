//! The metrics a behaviour can watch: the broker's cloud-side metrics (`aws:...`) and custom
//! metrics (`cmet:<name>`), with how a window of per-period datapoints folds into one value.

/// A cloud-side metric the broker measures for every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloudMetric {
    /// PUBLISH packets the device sent (summed over the window).
    MessagesSent,
    /// PUBLISH packets the device received (summed over the window).
    MessagesReceived,
    /// The largest payload the device published, in bytes (largest over the window).
    MessageByteSize,
    /// Actions the device's policy refused (summed over the window).
    AuthorizationFailures,
    /// CONNECT packets with the device's client id (summed over the window).
    ConnectionAttempts,
    /// Connections of the device that ended (summed over the window).
    Disconnects,
    /// Minutes the device has been disconnected (0 while connected; no window).
    DisconnectDuration,
    /// The source addresses the device connected from (the set over the window).
    SourceIpAddress,
}

/// Every cloud-side metric, in the order of [`CloudMetric::index`].
pub const CLOUD_METRICS: [CloudMetric; 8] = [
    CloudMetric::MessagesSent,
    CloudMetric::MessagesReceived,
    CloudMetric::MessageByteSize,
    CloudMetric::AuthorizationFailures,
    CloudMetric::ConnectionAttempts,
    CloudMetric::Disconnects,
    CloudMetric::DisconnectDuration,
    CloudMetric::SourceIpAddress,
];

/// Device-side metric names AWS defines, which this server does not evaluate (yet).
const DEVICE_SIDE: [&str; 8] = [
    "aws:all-bytes-out",
    "aws:all-bytes-in",
    "aws:all-packets-out",
    "aws:all-packets-in",
    "aws:destination-ip-addresses",
    "aws:listening-tcp-ports",
    "aws:listening-udp-ports",
    "aws:num-established-tcp-connections",
];

impl CloudMetric {
    /// The metric's AWS name (`aws:num-messages-sent`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CloudMetric::MessagesSent => "aws:num-messages-sent",
            CloudMetric::MessagesReceived => "aws:num-messages-received",
            CloudMetric::MessageByteSize => "aws:message-byte-size",
            CloudMetric::AuthorizationFailures => "aws:num-authorization-failures",
            CloudMetric::ConnectionAttempts => "aws:num-connection-attempts",
            CloudMetric::Disconnects => "aws:num-disconnects",
            CloudMetric::DisconnectDuration => "aws:disconnect-duration",
            CloudMetric::SourceIpAddress => "aws:source-ip-address",
        }
    }

    /// The metric named `name`, if it is a cloud-side metric.
    pub fn parse(name: &str) -> Option<CloudMetric> {
        CLOUD_METRICS.into_iter().find(|m| m.name() == name)
    }

    /// Position in [`CLOUD_METRICS`] (and in a datapoint's counts).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the metric is a number compared with `count` (all but the address set).
    pub fn is_numeric(self) -> bool {
        self != CloudMetric::SourceIpAddress
    }

    /// Whether the metric is folded over `durationSeconds` (and so needs it).
    pub fn is_windowed(self) -> bool {
        !matches!(
            self,
            CloudMetric::DisconnectDuration | CloudMetric::SourceIpAddress
        )
    }

    /// How a window of per-period values folds into one: the largest, or the sum.
    pub fn folds_by_max(self) -> bool {
        self == CloudMetric::MessageByteSize
    }
}

/// Whether `name` is one of AWS's device-side metrics.
pub fn is_device_side(name: &str) -> bool {
    DEVICE_SIDE.contains(&name)
}

/// The type of a custom metric (`metricType`), which fixes the operators and value field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomMetricType {
    /// `number`: compared with `value.number`.
    Number,
    /// `number-list`: compared with `value.numbers` (in-set / not-in-set).
    NumberList,
    /// `string-list`: compared with `value.strings` (in-set / not-in-set).
    StringList,
    /// `ip-address-list`: compared with `value.cidrs` (in-cidr-set / not-in-cidr-set).
    IpAddressList,
}

impl CustomMetricType {
    /// The type named `text` as AWS spells it.
    pub fn parse(text: &str) -> Option<CustomMetricType> {
        Some(match text {
            "number" => CustomMetricType::Number,
            "number-list" => CustomMetricType::NumberList,
            "string-list" => CustomMetricType::StringList,
            "ip-address-list" => CustomMetricType::IpAddressList,
            _ => return None,
        })
    }

    /// AWS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CustomMetricType::Number => "number",
            CustomMetricType::NumberList => "number-list",
            CustomMetricType::StringList => "string-list",
            CustomMetricType::IpAddressList => "ip-address-list",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_indexes_match() {
        for (i, m) in CLOUD_METRICS.into_iter().enumerate() {
            assert_eq!(CloudMetric::parse(m.name()), Some(m));
            assert_eq!(m.index(), i);
        }
        assert_eq!(CloudMetric::parse("aws:all-bytes-out"), None);
        assert!(is_device_side("aws:all-bytes-out"));
    }
}
