//! The fleet meter: the broker's device-meter seam implemented for Device Defender. It hands
//! each client id one set of counters (the connection bumps them without a lock) and once per
//! period turns them into one datapoint per device. At each admitted connection (connect path
//! only) it also notes what the audit checks look back on ([`Sighting`]): a live connection
//! taken over by another with the same client id, and a certificate used by several client ids
//! connected at once. Sightings are kept in the store ([`SIGHTINGS_TABLE`]): each period's new
//! ones are written with the period's violations in one batch ([`FleetMeter::sightings_to_save`]),
//! and [`FleetMeter::restore_sightings`] reads them back at start, so a restart (even a SIGKILL
//! after the period's commit) keeps what the audits look back on.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcore_core::{KvStore, WriteBatch};
use fleetcore_mqtt::broker::{DeviceCounters, DeviceMeter};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

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

/// Most sightings kept (the oldest go first).
const MAX_SIGHTINGS: usize = 10_000;

/// How far back sightings are kept: AWS's on-demand audits look back 31 days.
pub const SIGHTINGS_KEPT_SECONDS: f64 = 31.0 * 24.0 * 3600.0;

/// The store table of the sightings, by sequence number (big-endian `u64`).
pub const SIGHTINGS_TABLE: &str = "defender_sightings";

/// Most client ids remembered per certificate.
const MAX_CLIENTS_PER_CERTIFICATE: usize = 16;

/// Something the connection audit checks look back on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Sighting {
    /// A connection took over a live connection with the same client id.
    ConflictingClientId {
        /// The client id.
        client_id: String,
        /// The new connection's principal (certificate id or `anonymous`).
        principal: String,
        /// The new connection's address.
        peer: IpAddr,
        /// Epoch seconds.
        time: f64,
    },
    /// A connection authenticated with a certificate that other client ids' live connections
    /// use too.
    SharedCertificate {
        /// The certificate id.
        certificate_id: String,
        /// The new connection's client id and those of the live ones.
        client_ids: Vec<String>,
        /// Epoch seconds.
        time: f64,
    },
}

impl Sighting {
    /// When it was seen (epoch seconds).
    pub fn time(&self) -> f64 {
        match self {
            Sighting::ConflictingClientId { time, .. }
            | Sighting::SharedCertificate { time, .. } => *time,
        }
    }
}

/// A certificate id: 64 lowercase hex digits (the principal of a certificate-authenticated
/// connection; the others are not certificates).
fn is_certificate_id(principal: &str) -> bool {
    principal.len() == 64
        && principal
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

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
    /// The client ids each certificate authenticated (locked after `devices`).
    by_certificate: Mutex<HashMap<Arc<str>, Vec<Arc<str>>>>,
    sightings: Mutex<SightingLog>,
}

/// The sightings kept, with what the store has not seen yet.
#[derive(Default)]
struct SightingLog {
    /// By sequence number, oldest first.
    kept: VecDeque<(u64, Sighting)>,
    /// The next sequence number.
    next: u64,
    /// Sequence numbers from here on are not in the store yet.
    saved_up_to: u64,
    /// Sequence numbers dropped since the last save.
    evicted: Vec<u64>,
}

impl DeviceMeter for FleetMeter {
    fn connecting(&self, client_id: &Arc<str>, peer: IpAddr) -> Arc<DeviceCounters> {
        let mut devices = self.devices.lock();
        if devices.len() >= MAX_DEVICES && !devices.contains_key(&**client_id) {
            metrics::counter!("fleetcore_defender_devices_unmetered_total").increment(1);
            return Arc::default();
        }
        let device = match devices.get_mut(&**client_id) {
            Some(d) => d,
            // The key shares the connection's client id string: no copy per device.
            None => devices
                .entry(Arc::clone(client_id))
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
            // Most devices connect from one address a period: room for one, not Vec's four.
            device.addresses.reserve_exact(1);
            device.addresses.push(peer);
        }
        Arc::clone(&device.counters)
    }

    fn admitted(&self, client_id: &str, principal: &str, peer: IpAddr) {
        let devices = self.devices.lock();
        let online = |id: &str| devices.get(id).is_some_and(|d| d.counters.is_online());
        let time = crate::store::now();
        if online(client_id) {
            self.sight(Sighting::ConflictingClientId {
                client_id: client_id.to_string(),
                principal: principal.to_string(),
                peer,
                time,
            });
        }
        if !is_certificate_id(principal) || !devices.contains_key(client_id) {
            return;
        }
        let mut by_certificate = self.by_certificate.lock();
        if by_certificate.len() >= MAX_DEVICES && !by_certificate.contains_key(principal) {
            return;
        }
        let clients = by_certificate.entry(Arc::from(principal)).or_default();
        let others: Vec<String> = clients
            .iter()
            .filter(|id| &***id != client_id && online(id))
            .map(|id| id.to_string())
            .collect();
        if !clients.iter().any(|id| &**id == client_id)
            && clients.len() < MAX_CLIENTS_PER_CERTIFICATE
        {
            clients.push(Arc::from(client_id));
        }
        if !others.is_empty() {
            let mut client_ids = vec![client_id.to_string()];
            client_ids.extend(others);
            self.sight(Sighting::SharedCertificate {
                certificate_id: principal.to_string(),
                client_ids,
                time,
            });
        }
    }
}

impl FleetMeter {
    fn sight(&self, sighting: Sighting) {
        let mut log = self.sightings.lock();
        let oldest = sighting.time() - SIGHTINGS_KEPT_SECONDS;
        while let Some((seq, front)) = log.kept.front() {
            if front.time() >= oldest && log.kept.len() < MAX_SIGHTINGS {
                break;
            }
            let seq = *seq;
            log.kept.pop_front();
            log.evicted.push(seq);
        }
        let seq = log.next;
        log.next += 1;
        log.kept.push_back((seq, sighting));
    }

    /// The sightings since `since` (epoch seconds), oldest first.
    pub fn sightings_since(&self, since: f64) -> Vec<Sighting> {
        self.sightings
            .lock()
            .kept
            .iter()
            .filter(|(_, s)| s.time() >= since)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// The writes that bring the store up to date with the sightings (new ones written,
    /// dropped ones deleted); from then on they count as saved.
    pub fn sightings_to_save(&self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        let mut log = self.sightings.lock();
        for seq in std::mem::take(&mut log.evicted) {
            if seq < log.saved_up_to {
                batch.delete(SIGHTINGS_TABLE, seq.to_be_bytes().to_vec());
            }
        }
        let from = log.saved_up_to;
        for (seq, s) in log.kept.iter().filter(|(seq, _)| *seq >= from) {
            // Serializing these plain records cannot fail.
            batch.put(
                SIGHTINGS_TABLE,
                seq.to_be_bytes().to_vec(),
                serde_json::to_vec(s).unwrap_or_default(),
            );
        }
        log.saved_up_to = log.next;
        batch
    }

    /// Reads the sightings kept in `store` (at start, before any connection); those past the
    /// look-back, and records that do not parse, are dropped (and deleted at the next save).
    pub fn restore_sightings(&self, store: &dyn KvStore) -> Result<(), fleetcore_core::StoreError> {
        let oldest = crate::store::now() - SIGHTINGS_KEPT_SECONDS;
        let mut log = self.sightings.lock();
        for (key, value) in store.scan_prefix(SIGHTINGS_TABLE, b"")? {
            let Ok(seq) = <[u8; 8]>::try_from(key.as_slice()).map(u64::from_be_bytes) else {
                continue;
            };
            log.next = log.next.max(seq + 1);
            match serde_json::from_slice::<Sighting>(&value) {
                Ok(s) if s.time() >= oldest => log.kept.push_back((seq, s)),
                _ => log.evicted.push(seq),
            }
        }
        while log.kept.len() > MAX_SIGHTINGS {
            if let Some((seq, _)) = log.kept.pop_front() {
                log.evicted.push(seq);
            }
        }
        log.saved_up_to = log.next;
        Ok(())
    }

    /// The client ids connected now that certificate `certificate_id` authenticated (up to
    /// 16 remembered per certificate).
    pub fn live_clients_of(&self, certificate_id: &str) -> Vec<String> {
        let devices = self.devices.lock();
        let by_certificate = self.by_certificate.lock();
        by_certificate
            .get(certificate_id)
            .map(|clients| {
                clients
                    .iter()
                    .filter(|id| devices.get(&***id).is_some_and(|d| d.counters.is_online()))
                    .map(|id| id.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many client ids are known.
    pub fn known_devices(&self) -> usize {
        self.devices.lock().len()
    }

    /// How many certificates authenticated a connection since their client ids became known.
    pub fn known_certificates(&self) -> usize {
        self.by_certificate.lock().len()
    }

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
        self.by_certificate.lock().retain(|_, clients| {
            clients.retain(|id| devices.contains_key(id));
            !clients.is_empty()
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeovers_and_certificates_shared_by_live_connections_are_sighted() {
        let meter = FleetMeter::default();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let cert = "ab".repeat(32);
        let a = meter.connecting(&Arc::from("a"), ip);
        meter.admitted("a", &cert, ip);
        a.connected();
        assert!(meter.sightings_since(0.0).is_empty());
        // the same certificate as another client id while `a` is live
        let b = meter.connecting(&Arc::from("b"), ip);
        meter.admitted("b", &cert, ip);
        b.connected();
        // the same client id while `a` is live; anonymous principals are no certificate
        let _a2 = meter.connecting(&Arc::from("a"), ip);
        meter.admitted("a", "anonymous", ip);
        let sightings = meter.sightings_since(0.0);
        assert_eq!(sightings.len(), 2, "{sightings:?}");
        assert!(
            matches!(&sightings[0], Sighting::SharedCertificate { certificate_id, client_ids, .. }
            if *certificate_id == cert && *client_ids == ["b", "a"])
        );
        assert!(
            matches!(&sightings[1], Sighting::ConflictingClientId { client_id, principal, .. }
            if client_id == "a" && principal == "anonymous")
        );
        assert_eq!(meter.known_certificates(), 1);
        // a certificate whose client ids are offline is not shared
        a.disconnected();
        b.disconnected();
        let c = meter.connecting(&Arc::from("c"), ip);
        meter.admitted("c", &cert, ip);
        c.connected();
        assert_eq!(meter.sightings_since(0.0).len(), 2);
    }

    #[test]
    fn sightings_are_saved_in_batches_and_restored() {
        let dir = tempfile::tempdir().expect("dir");
        let store = fleetcore_core::RedbStore::open(&dir.path().join("s.redb")).expect("store");
        let meter = FleetMeter::default();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let a = meter.connecting(&Arc::from("a"), ip);
        meter.admitted("a", "anonymous", ip);
        a.connected();
        meter.admitted("a", "anonymous", ip);
        meter.admitted("a", "anonymous", ip);
        let batch = meter.sightings_to_save();
        assert_eq!(batch.len(), 2);
        store.apply(batch).expect("apply");
        assert!(meter.sightings_to_save().is_empty(), "saved once");
        meter.admitted("a", "anonymous", ip);
        store.apply(meter.sightings_to_save()).expect("apply");

        let restarted = FleetMeter::default();
        restarted.restore_sightings(&store).expect("restore");
        assert_eq!(restarted.sightings_since(0.0), meter.sightings_since(0.0));
        assert_eq!(restarted.sightings_since(0.0).len(), 3);
        // new sightings after the restart take new sequence numbers
        let b = restarted.connecting(&Arc::from("b"), ip);
        restarted.admitted("b", "anonymous", ip);
        b.connected();
        restarted.admitted("b", "anonymous", ip);
        store.apply(restarted.sightings_to_save()).expect("apply");
        let again = FleetMeter::default();
        again.restore_sightings(&store).expect("restore");
        assert_eq!(again.sightings_since(0.0).len(), 4);
    }

    #[test]
    fn a_device_record_shares_the_connection_client_id() {
        let meter = FleetMeter::default();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let id: Arc<str> = Arc::from("dev-shared");
        let _counters = meter.connecting(&id, ip);
        // The meter's key is the connection's own string, not a copy of it.
        assert_eq!(Arc::strong_count(&id), 2);
        let devices = meter.devices.lock();
        let (key, device) = devices.get_key_value("dev-shared").expect("metered");
        assert!(Arc::ptr_eq(key, &id));
        assert_eq!(
            device.addresses.capacity(),
            1,
            "room for the one address seen"
        );
    }

    #[test]
    fn a_period_becomes_one_datapoint_per_device() {
        let meter = FleetMeter::default();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let c = meter.connecting(&Arc::from("dev1"), ip);
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
