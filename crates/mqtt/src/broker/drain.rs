//! Draining a node of a cluster: the broker stops accepting connections and sends each
//! connected client to another node — DISCONNECT 0x9C (Use another server) with a Server
//! Reference for MQTT 5 clients, a plain close for 3.1.1 — after sending the acknowledgements
//! it holds (see [`Redirect`] and `Connection::settle_held_acks`).

use std::sync::Arc;

use fleetcore_core::auth::TransportKind;
use tokio::sync::watch;

use super::router::Router;
use crate::protocol::Utf8;

/// Where a draining node's clients are sent: the other nodes' addresses, by the transport the
/// client came in on (a client on the TLS listener is sent to another node's TLS listener).
#[derive(Debug, Clone, Default)]
pub struct Redirect {
    targets: Vec<(TransportKind, Utf8)>,
}

impl Redirect {
    /// Adds `address` (`host:port`) as a place for clients of `transport`; false when it
    /// cannot be a Server Reference (longer than an MQTT string, or with a NUL).
    pub fn add(&mut self, transport: TransportKind, address: &str) -> bool {
        match Utf8::new(address.to_owned()) {
            Some(text) => {
                self.targets.push((transport, text));
                true
            }
            None => false,
        }
    }

    /// True when no address was added.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Every address, once each.
    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .targets
            .iter()
            .map(|(_, a)| a.as_str().to_owned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The address for the `n`-th client of `transport`: the client's spread over the
    /// addresses of its transport in turn.
    pub fn pick(&self, transport: TransportKind, n: u64) -> Option<Utf8> {
        let fitting: Vec<&Utf8> = self
            .targets
            .iter()
            .filter(|(t, _)| *t == transport)
            .map(|(_, a)| a)
            .collect();
        if fitting.is_empty() {
            return None;
        }
        let i = usize::try_from(n % fitting.len() as u64).unwrap_or(0);
        Some(fitting[i].clone())
    }
}

/// A handle that drains the broker, kept by whoever may ask for it (an admin endpoint).
#[derive(Clone)]
pub struct Drainer {
    pub(super) router: Arc<Router>,
    pub(super) stop_accepting: watch::Sender<bool>,
}

impl Drainer {
    /// Stops accepting connections and sends every connected client away to `redirect`'s
    /// addresses. Returns how many sessions were online and told to go; `None` (nothing done)
    /// when the broker is already shutting down or draining.
    pub fn drain(&self, redirect: Redirect) -> Option<usize> {
        let _ = self.stop_accepting.send(true);
        self.router.begin_drain(redirect)
    }

    /// True once a drain or shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.router.is_shutting_down()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_spread_over_the_addresses_of_their_transport() {
        let mut r = Redirect::default();
        assert!(r.is_empty());
        assert!(r.add(TransportKind::Tcp, "b:1883"));
        assert!(r.add(TransportKind::Tcp, "c:1883"));
        assert!(r.add(TransportKind::Tls, "b:8883"));
        assert!(!r.add(TransportKind::Tls, "nul\0inside"));
        let tcp: Vec<String> = (0..4)
            .filter_map(|n| r.pick(TransportKind::Tcp, n))
            .map(|a| a.as_str().to_owned())
            .collect();
        assert_eq!(tcp, ["b:1883", "c:1883", "b:1883", "c:1883"]);
        assert_eq!(
            r.pick(TransportKind::Tls, 7).map(|a| a.as_str().to_owned()),
            Some("b:8883".into())
        );
        assert_eq!(r.pick(TransportKind::WebSocket, 0), None);
    }
}
