//! The metrics a behaviour can watch: the broker's cloud-side metrics (`aws:num-messages-sent`,
//! ...), the device-side metrics of the devices' reports (`aws:all-bytes-out`, ...) and custom
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

/// A device-side metric, taken from the devices' metrics reports
/// (`$aws/things/{thing}/defender/metrics/json|cbor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceMetric {
    /// `network_stats.bytes_out` (summed over the window).
    BytesOut,
    /// `network_stats.bytes_in` (summed over the window).
    BytesIn,
    /// `network_stats.packets_out` (summed over the window).
    PacketsOut,
    /// `network_stats.packets_in` (summed over the window).
    PacketsIn,
    /// How many TCP ports listen (the latest report's).
    NumListeningTcpPorts,
    /// How many UDP ports listen (the latest report's).
    NumListeningUdpPorts,
    /// How many TCP connections are established (the latest report's).
    NumEstablishedTcpConnections,
    /// The TCP ports that listen (the latest report's set).
    ListeningTcpPorts,
    /// The UDP ports that listen (the latest report's set).
    ListeningUdpPorts,
    /// The remote addresses of the established TCP connections (the latest report's set).
    DestinationIpAddresses,
}

/// Every device-side metric, in the order of [`DeviceMetric::index`] for the counts first.
pub const DEVICE_METRICS: [DeviceMetric; 10] = [
    DeviceMetric::BytesOut,
    DeviceMetric::BytesIn,
    DeviceMetric::PacketsOut,
    DeviceMetric::PacketsIn,
    DeviceMetric::NumListeningTcpPorts,
    DeviceMetric::NumListeningUdpPorts,
    DeviceMetric::NumEstablishedTcpConnections,
    DeviceMetric::ListeningTcpPorts,
    DeviceMetric::ListeningUdpPorts,
    DeviceMetric::DestinationIpAddresses,
];

/// How many device-side metrics are counts (the first of [`DEVICE_METRICS`]).
pub const DEVICE_COUNTS: usize = 7;

impl DeviceMetric {
    /// The metric's AWS name (`aws:all-bytes-out`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DeviceMetric::BytesOut => "aws:all-bytes-out",
            DeviceMetric::BytesIn => "aws:all-bytes-in",
            DeviceMetric::PacketsOut => "aws:all-packets-out",
            DeviceMetric::PacketsIn => "aws:all-packets-in",
            DeviceMetric::NumListeningTcpPorts => "aws:num-listening-tcp-ports",
            DeviceMetric::NumListeningUdpPorts => "aws:num-listening-udp-ports",
            DeviceMetric::NumEstablishedTcpConnections => "aws:num-established-tcp-connections",
            DeviceMetric::ListeningTcpPorts => "aws:listening-tcp-ports",
            DeviceMetric::ListeningUdpPorts => "aws:listening-udp-ports",
            DeviceMetric::DestinationIpAddresses => "aws:destination-ip-addresses",
        }
    }

    /// The metric named `name`, if it is a device-side metric.
    pub fn parse(name: &str) -> Option<DeviceMetric> {
        DEVICE_METRICS.into_iter().find(|m| m.name() == name)
    }

    /// Position in [`DEVICE_METRICS`] (and, for counts, in a report's counts).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the metric is a count (compared with `count`).
    pub fn is_count(self) -> bool {
        self.index() < DEVICE_COUNTS
    }

    /// Whether the metric is summed over `durationSeconds` (and so needs it); the others are
    /// the latest report's.
    pub fn is_windowed(self) -> bool {
        matches!(
            self,
            DeviceMetric::BytesOut
                | DeviceMetric::BytesIn
                | DeviceMetric::PacketsOut
                | DeviceMetric::PacketsIn
        )
    }
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
        for (i, m) in DEVICE_METRICS.into_iter().enumerate() {
            assert_eq!(DeviceMetric::parse(m.name()), Some(m));
            assert_eq!(m.index(), i);
            assert_eq!(m.is_count(), i < DEVICE_COUNTS);
        }
    }
}
