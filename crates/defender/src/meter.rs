//! The fleet meter: the broker's device-meter seam implemented for Device Defender. It hands
//! each client id one set of counters (the connection bumps them without a lock) and once per
//! period turns them into one datapoint per device.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcore_mqtt::broker::{DeviceCounters, DeviceMeter};
use parking_lot::Mutex;

use crate::device_metrics::DeviceSample;
use crate::metric::{CLOUD_METRICS, CloudMetric};

/// Most distinct source addresses remembered per device per period (the rest are counted as
/// one more unknown address would be: the set is what is compared, and 16 already says a lot).
const MAX_ADDRESSES: usize = 16;

/// How long a device that is offline and quiet stays known (for `aws:disconnect-duration`).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Most client ids measured at once. The meter learns a client id at CONNECT, before
/// authentication, so a flood of made-up client ids must not grow it without bound: past this
/// many, a new client id gets counters nobody reads, and the refusal is counted.
const MAX_DEVICES: usize = 1_000_000;

/// One device's measurements over one period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Datapoint {
    /// Whether the broker measured the device this period (false for a thing known only
    /// from its metrics reports: its cloud-side behaviours are not evaluated).
    pub metered: bool,
    /// Numeric metrics by [`CloudMetric::index`] (the address slot stays 0).
    pub values: [u64; CLOUD_METRICS.len()],
    /// Source addresses of the period's CONNECTs.
    pub addresses: Vec<IpAddr>,
    /// What the device's metrics reports of the period said, if it sent any.
    pub report: Option<Box<DeviceSample>>,
}

impl Datapoint {
    /// The value of numeric `metric`.
    pub fn value(&self, metric: CloudMetric) -> u64 {
        self.values[metric.index()]
    }
}

struct Device {
    counters: Arc<DeviceCounters>,
    attempts: u64,
    addresses: Vec<IpAddr>,
    /// Since when the device is offline, once it was seen online.
    offline_since: Option<Instant>,
    ever_online: bool,
}

/// Per-device counters of the whole fleet (see the module doc).
#[derive(Default)]
pub struct FleetMeter {
    devices: Mutex<HashMap<Arc<str>, Device>>,
}

impl DeviceMeter for FleetMeter {
    fn connecting(&self, client_id: &str, peer: IpAddr) -> Arc<DeviceCounters> {
        let mut devices = self.devices.lock();
        if devices.len() >= MAX_DEVICES && !devices.contains_key(client_id) {
            metrics::counter!("fleetcore_defender_devices_unmetered_total").increment(1);
            return Arc::default();
        }
        let device = match devices.get_mut(client_id) {
            Some(d) => d,
            None => devices
                .entry(Arc::from(client_id))
                .or_insert_with(|| Device {
                    counters: Arc::default(),
                    attempts: 0,
                    addresses: Vec::new(),
                    offline_since: None,
                    ever_online: false,
                }),
        };
        device.attempts += 1;
        if device.addresses.len() < MAX_ADDRESSES && !device.addresses.contains(&peer) {
            device.addresses.push(peer);
        }
        Arc::clone(&device.counters)
    }
}

impl FleetMeter {
    /// Knows `client_id` as a device that was online and is offline since `now` (what a
    /// restart knows of the devices with alarms in force, until they connect again).
    pub fn remember_offline(&self, client_id: &str, now: Instant) {
        let mut devices = self.devices.lock();
        if devices.len() >= MAX_DEVICES || devices.contains_key(client_id) {
            return;
        }
        devices.insert(
            Arc::from(client_id),
            Device {
                counters: Arc::default(),
                attempts: 0,
                addresses: Vec::new(),
                offline_since: Some(now),
                ever_online: true,
            },
        );
    }

    /// Takes one datapoint per known device (resetting the counters) at `now`, and forgets
    /// devices offline and quiet for a day.
    pub fn collect(&self, now: Instant) -> Vec<(Arc<str>, Datapoint)> {
        let mut devices = self.devices.lock();
        let mut out = Vec::with_capacity(devices.len());
        devices.retain(|thing, d| {
            let taken = d.counters.take();
            let online = d.counters.is_online();
            if online || taken.disconnects > 0 {
                d.ever_online = true;
            }
            let offline_minutes = if online {
                d.offline_since = None;
                0
            } else if d.ever_online {
                let since = *d.offline_since.get_or_insert(now);
                now.saturating_duration_since(since).as_secs() / 60
            } else {
                0
            };
            let mut values = [0; CLOUD_METRICS.len()];
            values[CloudMetric::MessagesSent.index()] = taken.messages_sent;
            values[CloudMetric::MessagesReceived.index()] = taken.messages_received;
            values[CloudMetric::MessageByteSize.index()] = taken.largest_message;
            values[CloudMetric::AuthorizationFailures.index()] = taken.authorization_failures;
            values[CloudMetric::ConnectionAttempts.index()] = std::mem::take(&mut d.attempts);
            values[CloudMetric::Disconnects.index()] = taken.disconnects;
            values[CloudMetric::DisconnectDuration.index()] = offline_minutes;
            let addresses = std::mem::take(&mut d.addresses);
            let quiet = values
                .iter()
                .enumerate()
                .all(|(i, v)| *v == 0 || i == CloudMetric::DisconnectDuration.index())
                && addresses.is_empty();
            let forgotten = !online
                && quiet
                && d.offline_since
                    .is_none_or(|since| now.saturating_duration_since(since) > FORGET_AFTER)
                && Arc::strong_count(&d.counters) == 1;
            if !forgotten {
                out.push((
                    Arc::clone(thing),
                    Datapoint {
                        metered: true,
                        values,
                        addresses,
                        report: None,
                    },
                ));
            }
            !forgotten
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_becomes_one_datapoint_per_device() {
        let meter = FleetMeter::default();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let c = meter.connecting("dev1", ip);
        c.connected();
        c.published(100);
        c.published(7);
        c.denied();
        let now = Instant::now();
        let points = meter.collect(now);
        assert_eq!(points.len(), 1);
        let (thing, p) = &points[0];
        assert_eq!(&**thing, "dev1");
        assert_eq!(p.value(CloudMetric::MessagesSent), 2);
        assert_eq!(p.value(CloudMetric::MessageByteSize), 100);
        assert_eq!(p.value(CloudMetric::AuthorizationFailures), 1);
        assert_eq!(p.value(CloudMetric::ConnectionAttempts), 1);
        assert_eq!(p.addresses, vec![ip]);
        c.disconnected();
        let p = &meter.collect(now + Duration::from_secs(10))[0].1;
        assert_eq!(p.value(CloudMetric::Disconnects), 1);
        assert_eq!(p.value(CloudMetric::MessagesSent), 0);
        drop(c);
        let p = &meter.collect(now + Duration::from_secs(130))[0].1;
        assert_eq!(p.value(CloudMetric::DisconnectDuration), 2);
        assert!(
            meter
                .collect(now + FORGET_AFTER + Duration::from_secs(60))
                .is_empty()
        );
    }
}
