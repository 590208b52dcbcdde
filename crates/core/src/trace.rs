//! The tracing seam: capabilities open `tracing` spans under [`TARGET`] where a trace is worth
//! having (an API request, a message through the broker, a rule action's delivery, a function
//! invocation); the observability capability exports them over OTLP when configured. Spans on
//! the message path are opened only for a sampled share of the messages ([`sample_message`]),
//! so a server with the exporter off (ratio 0) pays one relaxed atomic load per message.
//!
//! Span fields follow OpenTelemetry's names (`rpc.method`, `messaging.destination.name`, ...);
//! the fields `otel.kind` (`server`, `client`, `internal`), `otel.status_code` (`ok`, `error`)
//! and `otel.status_message` set the span's kind and status, and a `traceparent` field (W3C
//! Trace Context) makes the span a child of the caller's.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The `tracing` target of spans meant for export.
pub const TARGET: &str = "fleetcore_trace";

/// A message is sampled when a uniform random u64 falls below this (0: never).
static THRESHOLD: AtomicU64 = AtomicU64::new(0);

/// Sets the share of messages (0.0 to 1.0) whose path through the server is traced.
pub fn set_message_sampling(ratio: f64) {
    let threshold = if ratio.is_nan() || ratio <= 0.0 {
        0
    } else if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * u64::MAX as f64) as u64
    };
    THRESHOLD.store(threshold, Ordering::Relaxed);
}

/// Whether to trace the message at hand: true for the configured share of calls.
pub fn sample_message() -> bool {
    let threshold = THRESHOLD.load(Ordering::Relaxed);
    threshold != 0 && (threshold == u64::MAX || next_random() < threshold)
}

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// xorshift64*, one state per thread (seeded from the thread's stack address and the clock):
/// statistical sampling needs no cryptographic randomness and must not contend across cores.
fn next_random() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            let clock = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            x = (state as *const Cell<u64> as u64) ^ clock | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_sets_the_sampled_share() {
        set_message_sampling(0.0);
        assert!(!(0..10_000).any(|_| sample_message()));
        set_message_sampling(1.0);
        assert!((0..10_000).all(|_| sample_message()));
        set_message_sampling(0.1);
        let sampled = (0..100_000).filter(|_| sample_message()).count();
        assert!((8_000..12_000).contains(&sampled), "{sampled} of 100000");
        set_message_sampling(0.0);
    }
}
