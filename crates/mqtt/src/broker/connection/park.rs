//! A parked connection: one with nothing to do waits here holding no buffer, no timer and none
//! of the busy loop's state (that future is freed), only its compact `Connection`. It wakes
//! into the busy loop when the socket becomes readable, a delivery arrives in the mailbox, or
//! the session is kicked: by a takeover, a re-check of authorization, the server's shutdown, or
//! the shared keep-alive sweep once the client is late (`broker::keep_alive`).

use std::future::poll_fn;
use std::time::Instant;

use super::Connection;
use super::exit::Exit;

/// What woke a parked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    Kicked,
    Delivery,
    Readable,
}

impl Connection {
    /// True when the connection holds nothing in progress: no bytes to write or of a packet
    /// begun, no publish waiting for full receivers or for the ingest log, and a transport
    /// whose readiness tells the whole truth (TLS with decrypted bytes waiting does not).
    pub(super) fn parkable(&mut self) -> bool {
        self.wbuf.is_empty()
            && self.rbuf.is_empty()
            && self.pending.is_none()
            && self.held_acks.is_none()
            && self.io.parkable()
    }

    /// Waits until there is something to do. `Some(exit)` when a kick ends the connection;
    /// otherwise the busy loop takes over (and sees a passed keep-alive deadline itself).
    pub(super) async fn park(&mut self) -> Option<Exit> {
        let sweep = self.router.keep_alive_sweep();
        let filed = self
            .keep_alive
            .map(|k| sweep.file(self.last_packet + k, self.connection_id, &self.session));
        let parked = self.router.metrics().connections_parked.clone();
        parked.increment(1.0);
        let woke = {
            let session = &self.session;
            let io = &mut self.io;
            tokio::select! {
                biased;
                _ = session.kicked().notified() => Woke::Kicked,
                _ = session.wake().notified() => Woke::Delivery,
                _ = poll_fn(|cx| io.poll_readable(cx)) => Woke::Readable,
            }
        };
        parked.decrement(1.0);
        if let Some(filed) = filed {
            sweep.withdraw(filed);
        }
        match woke {
            Woke::Kicked => self.dispossessed(),
            Woke::Delivery => {
                self.last_activity = Instant::now();
                None
            }
            Woke::Readable => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::Connection;

    /// The size of the future `make` returns, without making one.
    fn future_size<A, F: Future>(_make: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_parked_connection_holds_a_small_future_and_a_compact_state() {
        // What a parked connection's task holds: the `run` future (parked inside it), and the
        // boxed `Connection`. The busy loop's future is boxed and freed while parked.
        let run = future_size(|c: Box<Connection>| c.run());
        let busy = future_size(|c: &'static mut Connection| c.serve_packets());
        let connection = std::mem::size_of::<Connection>();
        eprintln!("run future {run} B, busy loop future {busy} B, Connection {connection} B");
        assert!(
            run < busy,
            "the parked future ({run} B) is not smaller than the busy one ({busy} B)"
        );
        assert!(run <= 512, "the parked future grew to {run} B");
        assert!(connection <= 640, "Connection grew to {connection} B");
    }
}
