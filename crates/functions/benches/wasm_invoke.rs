//! The wasm runtime alone: warm invocations/s and latency of `WasmFunction::invoke` on the
//! tests' echo module, on one thread and on two, beside the same module without its `dealloc`
//! export (instantiated per invocation, as the runtime did before instances were pooled).
//!
//!     cargo bench -p fleetcore-functions --bench wasm_invoke
//!     N=500000 cargo bench -p fleetcore-functions --bench wasm_invoke

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetcore_functions::runtime::wasm::WasmFunction;
use fleetcore_functions::runtime::{Invocation, WhenBusy};

const EVENT: &str = r#"{"device":"d1","temperature":21.5}"#;

fn invocation() -> Invocation {
    Invocation {
        request_id: "bench".into(),
        payload: Bytes::from_static(EVENT.as_bytes()),
        invoked_arn: "arn:aws:lambda:us-east-1:000000000000:function:echo".into(),
        timeout: Duration::from_secs(3),
        client_context: None,
        when_busy: WhenBusy::Refuse,
    }
}

/// Calls `function` `n` times on this thread; the latency of each call, in nanoseconds.
fn run(function: &WasmFunction, n: usize) -> Vec<u64> {
    let invocation = invocation();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let outcome = function.invoke(&invocation);
        latencies.push(started.elapsed().as_nanos() as u64);
        assert!(outcome.function_error.is_none(), "{:?}", outcome.payload);
    }
    latencies
}

fn report(label: &str, threads: usize, n: usize, function: Arc<WasmFunction>) {
    run(&function, n / 10);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let function = Arc::clone(&function);
            thread::spawn(move || run(&function, n))
        })
        .collect();
    let mut latencies: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("bench thread"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{label}, {threads} thread(s): {:.0} invocations/s, p50 {:.1} us, p99 {:.1} us",
        (threads * n) as f64 / elapsed,
        at(0.50),
        at(0.99)
    );
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let wat =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleetcore/tests/system/functions/echo.wat");
    let dir = std::env::temp_dir().join(format!("fleetcore-wasm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let text = std::fs::read_to_string(&wat).expect("echo.wat");
    let fresh = dir.join("fresh.wat");
    std::fs::write(&fresh, text.replace(r#"(export "dealloc") "#, "")).expect("write");
    for threads in [1, 2] {
        let pooled = WasmFunction::load(&wat, 128, threads, false).expect("load");
        report("pooled instances", threads, n, Arc::new(pooled));
        let per_call = WasmFunction::load(&fresh, 128, threads, false).expect("load");
        report("instance per call", threads, n / 4, Arc::new(per_call));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
