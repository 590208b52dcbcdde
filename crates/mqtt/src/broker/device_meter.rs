//! The device meter seam: per-client counters for Device Defender's cloud-side metrics.
//!
//! A connection asks the meter for its client id's counters once, at CONNECT, and then bumps
//! them with relaxed atomic adds on a cache line no other connection writes (one client id is
//! served by one connection at a time), so the message path takes no lock, sends on no
//! channel and allocates nothing. The meter (Device Defender) reads and resets them once per
//! period. Without a meter installed, the connection holds `None` and does nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One client id's counts since the meter last took them.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    largest_message: AtomicU64,
    authorization_failures: AtomicU64,
    disconnects: AtomicU64,
    /// Admitted connections of this client id not yet ended (two for a moment during a
    /// takeover).
    online: AtomicU64,
}

/// What [`DeviceCounters::take`] read (and reset).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CountersTaken {
    /// PUBLISH packets the device sent to the broker.
    pub messages_sent: u64,
    /// PUBLISH packets the broker sent to the device.
    pub messages_received: u64,
    /// The largest payload the device published, in bytes.
    pub largest_message: u64,
    /// Connects, publishes, subscribes and receives the device's policy did not allow.
    pub authorization_failures: u64,
    /// Admitted connections that ended.
    pub disconnects: u64,
}

impl DeviceCounters {
    /// The device published a message with a `payload_len`-byte payload.
    #[inline]
    pub fn published(&self, payload_len: usize) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.largest_message
            .fetch_max(payload_len as u64, Ordering::Relaxed);
    }

    /// The broker sent the device a message.
    #[inline]
    pub fn delivered(&self) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
    }

    /// The device's policy refused one of its actions (or its connection).
    #[inline]
    pub fn denied(&self) {
        self.authorization_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of this client id was admitted.
    pub fn connected(&self) {
        self.online.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted connection of this client id ended.
    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
        self.online.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether a connection of this client id is live.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed) > 0
    }

    /// Reads the counts and resets them to zero.
    pub fn take(&self) -> CountersTaken {
        CountersTaken {
            messages_sent: self.messages_sent.swap(0, Ordering::Relaxed),
            messages_received: self.messages_received.swap(0, Ordering::Relaxed),
            largest_message: self.largest_message.swap(0, Ordering::Relaxed),
            authorization_failures: self.authorization_failures.swap(0, Ordering::Relaxed),
            disconnects: self.disconnects.swap(0, Ordering::Relaxed),
        }
    }
}

/// Hands out per-client counters (Device Defender). Called once per CONNECT, never per
/// message; must not block.
pub trait DeviceMeter: Send + Sync + 'static {
    /// A client sent CONNECT as `client_id` from `peer` (before authentication): the
    /// counters its connection keeps. `client_id` is the connection's own string: a meter
    /// that keeps it shares it rather than copying it.
    fn connecting(&self, client_id: &Arc<str>, peer: IpAddr) -> Arc<DeviceCounters>;

    /// The connection of `client_id` from `peer` was authenticated as `principal` and is
    /// about to be attached (taking over a live connection of the same client id, if any).
    /// Connect path only; the default does nothing.
    fn admitted(&self, _client_id: &str, _principal: &str, _peer: IpAddr) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_reads_and_resets() {
        let c = DeviceCounters::default();
        c.published(10);
        c.published(300);
        c.published(20);
        c.delivered();
        c.denied();
        c.denied();
        c.connected();
        assert!(c.is_online());
        c.connected();
        c.disconnected();
        assert!(c.is_online());
        assert_eq!(
            c.take(),
            CountersTaken {
                messages_sent: 3,
                messages_received: 1,
                largest_message: 300,
                authorization_failures: 2,
                disconnects: 1,
            }
        );
        assert_eq!(c.take(), CountersTaken::default());
    }
}
