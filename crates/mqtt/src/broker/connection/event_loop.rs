//! The connection's busy loop: drains the mailbox into the write buffer, flushes, decodes and
//! handles packets, and waits on the socket, the mailbox, the session's kicks and one timer for
//! all deadlines. After a quiet second it gives its buffers back and hands over to `park`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::Connection;
use super::exit::{Exit, violation};
use super::held_acks::watermark_moved;
use crate::broker::session::SessionHandle;
use crate::protocol::{self, DecodeError, reason};

/// Largest read buffer of a busy connection.
const READ_CHUNK: usize = 8 * 1024;
/// Read buffer of a quiet connection: a PINGREQ, an acknowledgement, a small PUBLISH.
pub(super) const MIN_READ: usize = 256;
/// A connection quiet for this long gives its buffers back.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// The connection's deadlines, served by one timer (which keeps the connection's future
/// small).
#[derive(Debug, Default, Clone, Copy)]
struct Deadlines {
    /// No packet from the client for 1.5 times its keep alive.
    keep_alive: Option<Instant>,
    /// A fan-out waiting for full receivers looks at them again, or gives up on them.
    pending: Option<Instant>,
    /// The connection gives its buffers back.
    idle: Option<Instant>,
    /// An incomplete packet must be finished.
    partial: Option<Instant>,
}

impl Deadlines {
    /// The earliest deadline, if any.
    fn next(&self) -> Option<Instant> {
        [self.keep_alive, self.pending, self.idle, self.partial]
            .into_iter()
            .flatten()
            .min()
    }
}

/// How a stretch of serving ended.
#[derive(Debug)]
pub(super) enum Served {
    /// The connection must end.
    Exit(Exit),
    /// Nothing to do for a while: park.
    Idle,
}

/// Ready once `space` is notified; never without one.
async fn room(space: Option<&Notify>) {
    match space {
        Some(space) => space.notified().await,
        None => std::future::pending().await,
    }
}

/// True once `deadline` is set and has passed.
fn passed(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

/// Read buffer size after a read of `n` bytes into `spare` free bytes: doubled (up to
/// `READ_CHUNK`) when the read filled the buffer.
fn grown_read_size(read_size: usize, n: usize, spare: usize) -> usize {
    if n == spare {
        (read_size * 2).min(READ_CHUNK)
    } else {
        read_size
    }
}

impl Connection {
    /// Serves packets and deliveries until the connection must end, or has been quiet long
    /// enough to park.
    pub(super) async fn serve_packets(&mut self) -> Served {
        // The waits on the session's kick and wake and the timer live across iterations: made
        // once and re-armed only when they fire (or, for the timer, when a deadline comes
        // sooner), not registered and dropped again for every packet.
        let session = Arc::clone(&self.session);
        let kicked = session.kicked().notified();
        let woken = session.wake().notified();
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(kicked, woken, timer);
        // When the timer is set to fire; `None` while it is not armed.
        let mut timer_at: Option<Instant> = None;
        loop {
            // Every complete packet already read is handled before anything is written: the
            // acknowledgements of a burst of PUBLISHes (and the deliveries their PUBACKs free
            // room for) leave in one write, not one write each.
            let more_to_handle = match self.handle_buffered() {
                Ok(more) => more,
                Err(exit) => {
                    // What was answered before the end still goes out, as if written at once.
                    if !self.wbuf.is_empty() {
                        let _ = self.flush(&session, kicked.as_mut()).await;
                    }
                    return Served::Exit(exit);
                }
            };
            let more_to_send = self.drain_mailbox();
            if !self.wbuf.is_empty()
                && let Err(exit) = self.flush(&session, kicked.as_mut()).await
            {
                return Served::Exit(exit);
            }
            let holds_buffers = self.rbuf.capacity() > 0 || self.wbuf.capacity() > 0;
            let deadlines = Deadlines {
                keep_alive: self.keep_alive.map(|k| self.last_packet + k),
                pending: self.pending.as_ref().map(|p| p.next_look()),
                idle: holds_buffers.then(|| self.last_activity + IDLE_RELEASE),
                // A packet started must be finished within the connect timeout, keep-alive or
                // not: a client trickling one byte at a time does not hold a buffer forever.
                partial: self
                    .partial_since
                    .map(|t| t + self.router.config().connect_timeout),
            };
            // A timer set for later than the next deadline is set sooner; one set sooner fires
            // early, and is set again. Deadlines that move later (keep alive, idle) cost nothing.
            let next_deadline = deadlines.next();
            if let Some(next) = next_deadline
                && timer_at.is_none_or(|at| next < at)
            {
                timer.as_mut().reset(next.into());
                timer_at = Some(next);
            }
            // Read buffers grow with the traffic: a quiet client reads into a few hundred bytes,
            // a busy one into READ_CHUNK (doubled each time a read fills the buffer).
            let spare = self.rbuf.capacity() - self.rbuf.len();
            if spare < self.read_size / 2 {
                self.rbuf.reserve(self.read_size);
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            let space = self.space.clone();
            let blocked = self.pending.is_some();
            let paused = self.reading_paused();
            let holding = self.held_acks.is_some();
            tokio::select! {
                biased;
                _ = &mut kicked => {
                    kicked.set(session.kicked().notified());
                    if let Some(exit) = self.dispossessed() {
                        return Served::Exit(exit);
                    }
                }
                read = self.io.read_buf(&mut self.rbuf), if !paused => match read {
                    Ok(0) | Err(_) => return Served::Exit(Exit::Closed),
                    Ok(n) => {
                        self.read_size = grown_read_size(self.read_size, n, spare);
                        self.last_activity = Instant::now();
                        self.router.metrics().bytes_received.increment(n as u64);
                    }
                },
                // More deliveries or read packets wait: poll the socket once (above), then go on.
                _ = std::future::ready(()), if more_to_send || more_to_handle => {}
                _ = room(space.as_deref()), if blocked => self.retry_pending(),
                _ = watermark_moved(&mut self.held_acks), if holding => self.release_acks(),
                _ = &mut woken => {
                    woken.set(session.wake().notified());
                    self.last_activity = Instant::now();
                }
                _ = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                    let now = Instant::now();
                    if passed(deadlines.partial, now) {
                        return Served::Exit(violation(
                            reason::MALFORMED_PACKET,
                            "packet not completed in time",
                        ));
                    }
                    if passed(deadlines.keep_alive, now) {
                        return Served::Exit(violation(
                            reason::KEEP_ALIVE_TIMEOUT,
                            "keep alive timeout",
                        ));
                    }
                    if passed(deadlines.pending, now) {
                        self.retry_pending();
                    }
                    if passed(deadlines.idle, now) {
                        self.release_idle_buffers();
                        if self.parkable() {
                            return Served::Idle;
                        }
                    }
                }
            }
        }
    }

    /// Decodes and handles the complete packets in the read buffer until none is left, reading
    /// pauses, or a write batch of answers is due. True when it stopped with packets possibly
    /// left to handle (the caller comes back without waiting on the socket).
    fn handle_buffered(&mut self) -> Result<bool, Exit> {
        let batch_bytes = self.router.config().write_buffer_bytes;
        let max_packet_size = self.router.config().max_packet_size;
        let mut now = None;
        loop {
            if self.reading_paused() {
                return Ok(false);
            }
            if self.wbuf.len() >= batch_bytes {
                return Ok(!self.rbuf.is_empty());
            }
            match protocol::decode(&mut self.rbuf, self.version, max_packet_size) {
                Ok(Some(packet)) => {
                    self.last_packet = *now.get_or_insert_with(Instant::now);
                    self.partial_since = None;
                    self.handle(packet)?;
                }
                Ok(None) => {
                    if self.rbuf.is_empty() {
                        self.partial_since = None;
                    } else {
                        self.partial_since.get_or_insert_with(Instant::now);
                    }
                    return Ok(false);
                }
                Err(e) => return Err(violation(e.reason_code(), decode_error_text(&e))),
            }
        }
    }

    /// True while the socket is not read: `fanout::MAX_WAITING` messages (or
    /// `max_queued_bytes`) wait for full receivers, or twice as many
    /// acknowledgements wait for the ingest log as the client may have messages in flight.
    /// A client within its Receive Maximum never gets there (reading on at the limit lets one
    /// that breaks it be told so with DISCONNECT 0x93); the pause bounds what acknowledgements
    /// of resent QoS 2 duplicates hold.
    fn reading_paused(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.full(self.router.config().max_queued_bytes))
            || self
                .held_acks
                .as_ref()
                .is_some_and(|h| h.len() >= 2 * usize::from(self.router.config().max_inflight))
    }

    /// Frees the read and write buffers of a connection that has been quiet for a while: an
    /// idle connection then costs its task and session, not 8+ KiB of buffers.
    fn release_idle_buffers(&mut self) {
        // Restart the idle clock so a buffer that cannot be released (it holds part of a
        // packet) is looked at again in a second, not in a busy loop.
        self.last_activity = Instant::now();
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        self.targets = Vec::new();
        self.popped = Vec::new();
        if self.pending.is_none() {
            self.space = None;
        }
        self.read_size = MIN_READ;
    }

    /// Why the connection must end after a kick: another connection claimed the session, the
    /// server is shutting down, or the client's identity may no longer be connected (its
    /// certificate was revoked, its policy detached).
    pub(super) fn dispossessed(&mut self) -> Option<Exit> {
        if self.session.is_owned_by(self.connection_id) {
            // Only a requested re-check re-resolves the grant: the kick may be the permit our
            // own claim left, or meant for a previous owner.
            let requested = self.session.revalidations();
            if requested == self.revalidations_seen {
                return None;
            }
            self.revalidations_seen = requested;
            match self.grant.revalidate() {
                Ok(()) => None,
                Err(why) => {
                    tracing::info!(client_id = %self.client_id, why, "connection no longer authorized");
                    Some(violation(reason::NOT_AUTHORIZED, "no longer authorized"))
                }
            }
        } else if self.router.is_shutting_down() {
            let moved_to = self
                .router
                .server_reference(self.transport, self.connection_id);
            Some(moved_to.map_or(Exit::Shutdown, Exit::Moved))
        } else {
            Some(Exit::TakenOver)
        }
    }

    /// Writes the whole write buffer, giving up only if the session is taken from this
    /// connection. Uses `write` (cancel-safe: bytes are either written and counted, or not
    /// written) so that a kick arriving mid-buffer never makes a byte go out twice.
    /// `kicked` is the connection's wait on `session`'s kick (a second waiter would miss the
    /// kick meant for the first).
    async fn flush<'s>(
        &mut self,
        session: &'s SessionHandle,
        mut kicked: Pin<&mut Notified<'s>>,
    ) -> Result<(), Exit> {
        let n = self.wbuf.len();
        // Cleared only once everything is written: a connection suspended in here is waiting
        // for a client that does not read (a failed write ends the connection anyway).
        session.set_awaiting_socket(true);
        while !self.wbuf.is_empty() {
            tokio::select! {
                biased;
                _ = &mut kicked => {
                    kicked.set(session.kicked().notified());
                    // A stale kick (a permit left by our own claim) changes nothing.
                    if let Some(exit) = self.dispossessed() {
                        return Err(exit);
                    }
                }
                written = self.io.write(&self.wbuf) => match written {
                    Ok(0) | Err(_) => return Err(Exit::Closed),
                    Ok(k) => {
                        self.wbuf.advance(k);
                        self.connack_unsent = self.connack_unsent.saturating_sub(k);
                        // A reader that reads is not stuck, however slowly it takes its queue.
                        session.made_progress();
                    }
                },
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = &mut kicked => {
                    kicked.set(session.kicked().notified());
                    if let Some(exit) = self.dispossessed() {
                        return Err(exit);
                    }
                }
                flushed = self.io.flush() => match flushed {
                    Ok(()) => break,
                    Err(_) => return Err(Exit::Closed),
                },
            }
        }
        session.set_awaiting_socket(false);
        self.wbuf.clear();
        self.last_activity = Instant::now();
        self.router.metrics().bytes_sent.increment(n as u64);
        Ok(())
    }
}

fn decode_error_text(e: &DecodeError) -> &'static str {
    match e.reason_code() {
        reason::PACKET_TOO_LARGE => "packet too large",
        reason::PROTOCOL_ERROR => "protocol error",
        _ => "malformed packet",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_timer_serves_the_earliest_deadline() {
        let now = Instant::now();
        assert_eq!(Deadlines::default().next(), None);
        let d = Deadlines {
            keep_alive: Some(now + Duration::from_secs(90)),
            pending: None,
            idle: Some(now + Duration::from_secs(1)),
            partial: Some(now + Duration::from_secs(10)),
        };
        assert_eq!(d.next(), Some(now + Duration::from_secs(1)));
        assert!(passed(d.idle, now + Duration::from_secs(1)));
        assert!(!passed(d.partial, now + Duration::from_secs(1)));
        assert!(!passed(d.pending, now + Duration::from_secs(3600)));
    }

    #[test]
    fn read_buffers_double_while_reads_fill_them_up_to_a_chunk() {
        assert_eq!(grown_read_size(MIN_READ, MIN_READ, MIN_READ), 2 * MIN_READ);
        assert_eq!(grown_read_size(MIN_READ, 10, MIN_READ), MIN_READ);
        assert_eq!(
            grown_read_size(READ_CHUNK, READ_CHUNK, READ_CHUNK),
            READ_CHUNK
        );
    }

    #[test]
    fn decode_errors_are_named_in_the_disconnect() {
        let too_large = DecodeError::PacketTooLarge { size: 10, max: 5 };
        assert_eq!(too_large.reason_code(), reason::PACKET_TOO_LARGE);
        assert_eq!(decode_error_text(&too_large), "packet too large");
    }
}
