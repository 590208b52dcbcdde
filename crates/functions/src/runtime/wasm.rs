//! WebAssembly functions, run in process with the wasmi interpreter.
//!
//! # The ABI
//!
//! A module (binary `.wasm`, or text `.wat`) named by the function's handler must export:
//!
//! - `memory`: its linear memory;
//! - `alloc(len: i32) -> i32`: room for `len` bytes, where the host writes the event;
//! - `handle(ptr: i32, len: i32) -> i64`: runs the function on the event (UTF-8 JSON at
//!   `ptr..ptr+len`) and returns where its result is: `(result_ptr << 32) | result_len`.
//!
//! It may import, from module `env`:
//!
//! - `log(ptr: i32, len: i32)`: writes bytes to the invocation's log (stdout of other runtimes);
//! - `fail(ptr: i32, len: i32)`: marks the invocation failed; the bytes are the error document
//!   (a JSON object such as `{"errorType":"Invalid","errorMessage":"..."}`; other text becomes the
//!   `errorMessage`). The value `handle` returns is then ignored.
//!
//! Every invocation gets a fresh instance (no state survives between invocations, as if each
//! were a cold start of a tiny sandbox; instantiating costs microseconds). Limits: linear memory
//! at most `MemorySize` MB (a `memory.grow` past it fails, an initial memory past it fails the
//! invocation); time: `handle` runs on fuel slices of [`FUEL_SLICE`] units (wasmi counts
//! instructions), and between slices the wall clock is checked against `Timeout`: past it, the
//! call is abandoned and reported as Lambda reports a timeout (so the limit holds on a slow or
//! busy machine too). The start function and `alloc` get one slice. A trap (unreachable,
//! out-of-bounds access, ...) fails the invocation with the trap's message.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use serde_json::json;
use wasmi::{
    Caller, Config, Engine, Extern, Linker, Module, Store, StoreLimits, StoreLimitsBuilder,
    TypedFunc, TypedResumableCall,
};

use super::{Invocation, Outcome};
use crate::logs::MAX_INVOCATION_OUTPUT;

/// Fuel units between two checks of the deadline (a few milliseconds of interpretation).
pub const FUEL_SLICE: u64 = 2_000_000;

/// How a run ended without a result.
enum RunError {
    /// The deadline passed.
    Timeout,
    /// A trap, a missing export, a bad pointer.
    Wasm(wasmi::Error),
}

impl From<wasmi::Error> for RunError {
    fn from(error: wasmi::Error) -> RunError {
        RunError::Wasm(error)
    }
}

/// Per-invocation host state.
struct HostState {
    limits: StoreLimits,
    log: Vec<u8>,
    logged: u64,
    failure: Option<Vec<u8>>,
}

/// A compiled module and its limits.
pub struct WasmFunction {
    engine: Engine,
    module: Module,
    linker: Linker<HostState>,
    memory_bytes: usize,
}

/// Reads `len` bytes at `ptr` of the caller's exported memory.
fn read_guest(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, wasmi::Error> {
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmi::Error::new("the module exports no `memory`"))?;
    let data = memory.data(caller);
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    data.get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmi::Error::new("log/fail: range outside the memory"))
}

impl WasmFunction {
    /// Compiles the module at `path` (validated: an invalid module is refused here).
    pub fn load(path: &Path, memory_mb: u32) -> Result<WasmFunction, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the module {}: {e}", path.display()))?;
        let mut config = Config::default();
        config.consume_fuel(true);
        let engine = Engine::new(&config);
        let module = Module::new(&engine, &bytes).map_err(|e| {
            format!(
                "the module {} is not valid WebAssembly: {e}",
                path.display()
            )
        })?;
        let mut linker = Linker::<HostState>::new(&engine);
        linker
            .func_wrap(
                "env",
                "log",
                |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
                    let bytes = read_guest(&caller, ptr, len)?;
                    let state = caller.data_mut();
                    state.logged += bytes.len() as u64;
                    if state.log.len() < 2 * MAX_INVOCATION_OUTPUT {
                        state.log.extend_from_slice(&bytes);
                    }
                    Ok(())
                },
            )
            .map_err(|e| e.to_string())?;
        linker
            .func_wrap(
                "env",
                "fail",
                |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
                    let bytes = read_guest(&caller, ptr, len)?;
                    caller.data_mut().failure = Some(bytes);
                    Ok(())
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(WasmFunction {
            engine,
            module,
            linker,
            memory_bytes: (memory_mb as usize) << 20,
        })
    }

    /// Runs one invocation on a fresh instance.
    pub fn invoke(&self, invocation: &Invocation) -> Outcome {
        let started = Instant::now();
        let mut store = Store::new(
            &self.engine,
            HostState {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.memory_bytes)
                    .instances(1)
                    .build(),
                log: Vec::new(),
                logged: 0,
                failure: None,
            },
        );
        store.limiter(|state| &mut state.limits);
        let deadline = started + invocation.timeout;
        let result = self.run(&mut store, &invocation.payload, deadline);
        let duration = started.elapsed();
        let state = store.into_data();
        let mut outcome = match (result, state.failure) {
            (_, Some(failure)) => {
                let document = match serde_json::from_slice::<serde_json::Value>(&failure) {
                    Ok(v) if v.is_object() => Bytes::from(failure),
                    _ => Bytes::from(
                        json!({"errorType": "Function.Error", "errorMessage": String::from_utf8_lossy(&failure)})
                            .to_string(),
                    ),
                };
                Outcome {
                    function_error: Some("Unhandled"),
                    ..Outcome::result(document)
                }
            }
            (Ok(result), None) => Outcome::result(Bytes::from(result)),
            (Err(RunError::Timeout), None) => Outcome::failed(
                "Sandbox.Timedout",
                format!(
                    "RequestId: {} Error: Task timed out after {:.2} seconds",
                    invocation.request_id,
                    invocation.timeout.as_secs_f64()
                ),
            ),
            (Err(RunError::Wasm(error)), None) => Outcome::failed(
                "Runtime.WasmError",
                format!("RequestId: {} Error: {error}", invocation.request_id),
            ),
        };
        outcome.output = state.log;
        outcome.written = state.logged;
        outcome.duration = duration;
        if outcome.function_error.is_some() {
            metrics::counter!("fleetcore_functions_failures_total").increment(1);
        }
        outcome
    }

    fn run(
        &self,
        store: &mut Store<HostState>,
        event: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, RunError> {
        store.set_fuel(FUEL_SLICE)?;
        let instance = self
            .linker
            .instantiate_and_start(&mut *store, &self.module)?;
        let memory = instance
            .get_memory(&*store, "memory")
            .ok_or_else(|| wasmi::Error::new("the module exports no `memory`"))?;
        let alloc: TypedFunc<i32, i32> = instance.get_typed_func(&*store, "alloc")?;
        let handle: TypedFunc<(i32, i32), i64> = instance.get_typed_func(&*store, "handle")?;
        let len = i32::try_from(event.len()).map_err(|_| wasmi::Error::new("event too large"))?;
        store.set_fuel(FUEL_SLICE)?;
        let ptr = alloc.call(&mut *store, len)?;
        memory
            .write(&mut *store, ptr as u32 as usize, event)
            .map_err(|e| {
                wasmi::Error::new(format!("alloc returned room outside the memory: {e}"))
            })?;
        store.set_fuel(FUEL_SLICE)?;
        let mut call = handle.call_resumable(&mut *store, (ptr, len))?;
        let packed = loop {
            match call {
                TypedResumableCall::Finished(packed) => break packed as u64,
                TypedResumableCall::OutOfFuel(paused) => {
                    if Instant::now() >= deadline {
                        return Err(RunError::Timeout);
                    }
                    store.set_fuel(FUEL_SLICE)?;
                    call = paused.resume(&mut *store)?;
                }
                TypedResumableCall::HostTrap(trap) => {
                    return Err(RunError::Wasm(wasmi::Error::new(
                        trap.host_error().to_string(),
                    )));
                }
            }
        };
        let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        if out_len > super::MAX_RESPONSE_BYTES {
            return Err(RunError::Wasm(wasmi::Error::new(format!(
                "Response payload size exceeded maximum allowed payload size ({} bytes).",
                super::MAX_RESPONSE_BYTES
            ))));
        }
        memory
            .data(&*store)
            .get(out_ptr..out_ptr.saturating_add(out_len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                RunError::Wasm(wasmi::Error::new(
                    "handle returned a result outside the memory",
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Echoes the event, logs "hi"; `{"fail":...}` would need parsing, so a first byte of `!`
    /// calls `fail`, a first byte of `L` loops forever.
    const ECHO: &str = r#"
    (module
      (import "env" "log" (func $log (param i32 i32)))
      (import "env" "fail" (func $fail (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "hi{\"errorMessage\":\"bad\"}")
      (global $next (mut i32) (i32.const 1024))
      (func (export "alloc") (param $len i32) (result i32)
        (local $p i32)
        (local.set $p (global.get $next))
        (global.set $next (i32.add (global.get $next) (local.get $len)))
        (local.get $p))
      (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
        (call $log (i32.const 0) (i32.const 2))
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33))
          (then (call $fail (i32.const 2) (i32.const 22))))
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 76))
          (then (loop $forever (br $forever))))
        (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                (i64.extend_i32_u (local.get $len)))))
    "#;

    fn function() -> (tempfile::TempDir, WasmFunction) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("echo.wat");
        std::fs::write(&path, ECHO).expect("write");
        let f = WasmFunction::load(&path, 128).expect("load");
        (dir, f)
    }

    fn call(f: &WasmFunction, event: &str) -> Outcome {
        f.invoke(&Invocation {
            request_id: "r".into(),
            payload: Bytes::from(event.to_string()),
            invoked_arn: "arn".into(),
            timeout: Duration::from_millis(20),
            client_context: None,
        })
    }

    #[test]
    fn echoes_logs_fails_and_runs_out_of_fuel() {
        let (_dir, f) = function();
        let ok = call(&f, r#"{"a":1}"#);
        assert_eq!(ok.function_error, None);
        assert_eq!(&ok.payload[..], br#"{"a":1}"#);
        assert_eq!(ok.output, b"hi");
        let failed = call(&f, "!");
        assert_eq!(failed.function_error, Some("Unhandled"));
        assert_eq!(&failed.payload[..], br#"{"errorMessage":"bad"}"#);
        let looped = call(&f, "L");
        assert!(String::from_utf8_lossy(&looped.payload).contains("Task timed out"));
    }

    #[test]
    fn invalid_modules_are_refused_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.wasm");
        std::fs::write(&path, b"\0asm garbage").expect("write");
        assert!(WasmFunction::load(&path, 128).is_err());
    }
}
