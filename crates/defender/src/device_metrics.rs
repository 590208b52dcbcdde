//! Device-side measurements: what one thing's accepted metrics reports say over one period
//! ([`DeviceSample`]), and the inbox that holds them until the detector takes the period's
//! datapoints ([`ReportInbox`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::metric::{DEVICE_COUNTS, DeviceMetric};

/// Most things whose reports wait for the next period. Reports come from authorized
/// devices only, but one device may report for many thing names: past this many, a report of a
/// new thing is answered but not evaluated, and the drop is counted.
const MAX_THINGS: usize = 1_000_000;

/// A custom metric's reported value.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomValue {
    /// `number`.
    Number(f64),
    /// `number_list`.
    Numbers(Vec<f64>),
    /// `string_list`.
    Strings(Vec<String>),
    /// `ip_list`.
    Addresses(Vec<IpAddr>),
}

/// One thing's device-side measurements over one period: byte and packet counts summed over
/// the period's reports, the rest as the latest report says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSample {
    /// The counts by [`DeviceMetric::index`], when reported.
    pub counts: [Option<u64>; DEVICE_COUNTS],
    /// The listening TCP ports.
    pub tcp_ports: Option<Vec<u16>>,
    /// The listening UDP ports.
    pub udp_ports: Option<Vec<u16>>,
    /// The remote addresses of established TCP connections.
    pub destinations: Option<Vec<IpAddr>>,
    /// Custom metrics by name (without `cmet:`).
    pub custom: BTreeMap<String, CustomValue>,
}

impl DeviceSample {
    /// The count `metric`, if reported.
    pub fn count(&self, metric: DeviceMetric) -> Option<u64> {
        self.counts.get(metric.index()).copied().flatten()
    }

    /// Folds a later report of the same period into this one.
    pub fn merge(&mut self, later: DeviceSample) {
        for (i, v) in later.counts.into_iter().enumerate() {
            let Some(v) = v else { continue };
            let windowed = crate::metric::DEVICE_METRICS[i].is_windowed();
            self.counts[i] = Some(match self.counts[i] {
                Some(earlier) if windowed => earlier.saturating_add(v),
                _ => v,
            });
        }
        if later.tcp_ports.is_some() {
            self.tcp_ports = later.tcp_ports;
        }
        if later.udp_ports.is_some() {
            self.udp_ports = later.udp_ports;
        }
        if later.destinations.is_some() {
            self.destinations = later.destinations;
        }
        self.custom.extend(later.custom);
    }
}

/// The period's device-side samples by thing, filled by the reports tap and emptied by the
/// detector once per period.
#[derive(Default)]
pub struct ReportInbox {
    samples: Mutex<HashMap<Arc<str>, DeviceSample>>,
}

impl ReportInbox {
    /// Adds an accepted report of `thing`.
    pub fn add(&self, thing: &str, sample: DeviceSample) {
        let mut samples = self.samples.lock();
        if let Some(s) = samples.get_mut(thing) {
            s.merge(sample);
            return;
        }
        if samples.len() >= MAX_THINGS {
            metrics::counter!("fleetcore_defender_reports_unevaluated_total").increment(1);
            tracing::warn!(
                thing,
                "too many things reported this period; this report is not evaluated"
            );
            return;
        }
        samples.insert(Arc::from(thing), sample);
    }

    /// The period's samples, leaving the inbox empty.
    pub fn take(&self) -> HashMap<Arc<str>, DeviceSample> {
        std::mem::take(&mut *self.samples.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_sums_traffic_and_keeps_the_latest_of_the_rest() {
        let inbox = ReportInbox::default();
        let mut first = DeviceSample::default();
        first.counts[DeviceMetric::BytesOut.index()] = Some(100);
        first.counts[DeviceMetric::NumListeningTcpPorts.index()] = Some(3);
        first.tcp_ports = Some(vec![22, 80, 443]);
        let mut second = DeviceSample::default();
        second.counts[DeviceMetric::BytesOut.index()] = Some(50);
        second.counts[DeviceMetric::NumListeningTcpPorts.index()] = Some(1);
        second.tcp_ports = Some(vec![443]);
        inbox.add("t", first);
        inbox.add("t", second);
        let taken = inbox.take();
        let s = &taken["t"];
        assert_eq!(s.count(DeviceMetric::BytesOut), Some(150));
        assert_eq!(s.count(DeviceMetric::NumListeningTcpPorts), Some(1));
        assert_eq!(s.count(DeviceMetric::BytesIn), None);
        assert_eq!(s.tcp_ports.as_deref(), Some(&[443][..]));
        assert!(inbox.take().is_empty());
    }
}
