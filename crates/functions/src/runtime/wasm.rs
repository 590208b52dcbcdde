//! WebAssembly functions, run in process with the wasmi interpreter.
//!
//! # The ABI
//!
//! A module (binary `.wasm`, or text `.wat`) named by the function's handler must export:
//!
//! - `memory`: its linear memory;
//! - `alloc(len: i32) -> i32`: room for `len` bytes, where the host writes the event;
//! - `handle(ptr: i32, len: i32) -> i64`: runs the function on the event (UTF-8 JSON at
//!   `ptr..ptr+len`) and returns where its result is: `(result_ptr << 32) | result_len`;
//! - optionally `dealloc(ptr: i32, len: i32)`: gives back room `alloc` handed out. After a
//!   successful invocation the host calls it for the result, then for the event (the reverse of
//!   their allocation, so a bump allocator can free by moving its pointer back).
//!
//! It may import, from module `env`:
//!
//! - `log(ptr: i32, len: i32)`: writes bytes to the invocation's log (stdout of other runtimes);
//! - `fail(ptr: i32, len: i32)`: marks the invocation failed; the bytes are the error document
//!   (a JSON object such as `{"errorType":"Invalid","errorMessage":"..."}`; other text becomes the
//!   `errorMessage`). The value `handle` returns is then ignored.
//! - `put_record(stream_ptr, stream_len, key_ptr, key_len, data_ptr, data_len: i32) -> i32`:
//!   puts a record (the data bytes, with a partition key of 1 to 256 characters) on the Kinesis
//!   stream named (its name or ARN); what `boto3.client("kinesis").put_record` is to a Python
//!   handler. Returns 0, or 1 when the record is refused (then a line in the log says why):
//!   data over 1 MiB, more than [`MAX_RECORDS`] records or [`MAX_RECORDS_BYTES`] bytes in one
//!   invocation, a name or key that is not UTF-8 text. The records are written by the host
//!   **after `handle` returned, and only if the invocation succeeded**, all the records of a
//!   batch of invocations to a stream in one append; the invocation's result is given to its
//!   caller only once they are durable, and if they cannot be written the invocation fails
//!   (`Runtime.PutRecordFailed`), so a caller that retries (a rule action, an event source
//!   mapping) writes them again: at least once, as with an SDK call and a retried Lambda.
//!
//! # Instances are reused, as Lambda reuses an execution environment
//!
//! Each function version keeps a pool of instantiated modules (at most its concurrency: the
//! reserved concurrency, or the service default). An invocation takes an idle instance or
//! instantiates one (a cold start, reported as `Init Duration`), and gives it back after a
//! successful invocation. So, as on AWS Lambda, where a warm execution environment keeps its
//! globals and `/tmp` between invocations, a module's globals and linear memory persist from
//! one invocation of the same function version to the next: a cache built on the first call is
//! there on the next. Isolation is per function version, never finer: an instance serves only
//! its own version and nothing the host keeps (log, error, fuel) crosses from one invocation to
//! the next; data a module leaves in its memory can be seen by its own later invocations, as
//! on Lambda, so a module must not keep one caller's data where another call would read it.
//! An instance is dropped, and the next call instantiates afresh, when:
//! - the invocation failed, trapped or timed out (its state may be half-written);
//! - the module exports no `dealloc` (it cannot give the event's room back, so reusing it would
//!   leak): such a module is instantiated per invocation, as before the pool existed;
//! - its memory grew past half of `MemorySize` (a module that leaks is recycled before it hits
//!   the limit and fails a call);
//! - it was idle for longer than the service's idle time-to-live ([`WasmFunction::reap`]).
//!
//! Limits: linear memory at most `MemorySize` MB (a `memory.grow` past it fails, an initial
//! memory past it fails the invocation); time: `handle` runs on fuel slices of [`FUEL_SLICE`]
//! units (wasmi counts instructions), and between slices the wall clock is checked against
//! `Timeout`: past it, the call is abandoned and reported as Lambda reports a timeout (so the
//! limit holds on a slow or busy machine too). The start function, `alloc` and `dealloc` get
//! one slice each. A trap (unreachable, out-of-bounds access, ...) fails the invocation with
//! the trap's message.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::json;
use wasmi::{
    Caller, Config, Engine, Extern, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    TypedFunc, TypedResumableCall, TypedResumableCallOutOfFuel,
};

use super::{Concurrency, Invocation, OutRecord, Outcome, WhenBusy};
use crate::logs::MAX_INVOCATION_OUTPUT;

/// Fuel units between two checks of the deadline (a few milliseconds of interpretation).
pub const FUEL_SLICE: u64 = 2_000_000;

/// Fuel an invocation may use on the async worker that started it (a few tens of
/// microseconds of interpretation) before it continues on a thread that may block.
pub const INLINE_FUEL: u64 = 50_000;

/// Most records one invocation may put (as one Kinesis PutRecords).
pub const MAX_RECORDS: usize = 500;
/// Most bytes of record data one invocation may put (as one Kinesis PutRecords).
pub const MAX_RECORDS_BYTES: usize = 5 << 20;

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

/// Host state of one instance; everything but the limits is reset for each invocation.
struct HostState {
    limits: StoreLimits,
    log: Vec<u8>,
    logged: u64,
    failure: Option<Vec<u8>>,
    /// Records put in this invocation (`env.put_record`), and their data's bytes.
    records: Vec<OutRecord>,
    record_bytes: usize,
}

impl HostState {
    /// Keeps a record `env.put_record` gave, or says why it is refused.
    fn put_record(&mut self, stream: &[u8], key: &[u8], data: &[u8]) -> Result<(), String> {
        let stream = std::str::from_utf8(stream)
            .ok()
            .map(|s| s.rsplit_once(":stream/").map_or(s, |(_, name)| name))
            .filter(|s| !s.is_empty())
            .ok_or("the stream name is not UTF-8 text")?;
        let key = std::str::from_utf8(key)
            .ok()
            .filter(|k| (1..=256).contains(&k.chars().count()))
            .ok_or("the partition key is not 1 to 256 characters of UTF-8 text")?;
        if data.len() > fleetcore_stream::MAX_RECORD_BYTES {
            return Err(format!(
                "the data is {} bytes; at most {}",
                data.len(),
                fleetcore_stream::MAX_RECORD_BYTES
            ));
        }
        if self.records.len() >= MAX_RECORDS || self.record_bytes + data.len() > MAX_RECORDS_BYTES {
            return Err(format!(
                "an invocation puts at most {MAX_RECORDS} records of {MAX_RECORDS_BYTES} bytes"
            ));
        }
        // Most modules write to one stream: its name is shared, not copied per record.
        let stream = match self.records.last() {
            Some(last) if &*last.stream == stream => Arc::clone(&last.stream),
            _ => Arc::from(stream),
        };
        self.record_bytes += data.len();
        self.records.push(OutRecord {
            stream,
            partition_key: key.to_string(),
            data: Bytes::copy_from_slice(data),
        });
        Ok(())
    }
}

/// One instantiated module in its own store: the execution environment of an invocation.
struct Sandbox {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i64>,
    dealloc: Option<TypedFunc<(i32, i32), ()>>,
}

/// A compiled module, its limits and its idle instances.
pub struct WasmFunction {
    engine: Engine,
    module: Module,
    linker: Linker<HostState>,
    memory_bytes: usize,
    /// Idle instances, each with the time it became idle (most recent last).
    idle: Mutex<Vec<(Sandbox, Instant)>>,
    /// How many idle instances are kept (the function's concurrency).
    idle_limit: usize,
    concurrency: Concurrency,
}

/// The caller's exported memory.
fn guest_memory(caller: &Caller<'_, HostState>) -> Result<Memory, wasmi::Error> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmi::Error::new("the module exports no `memory`"))
}

/// The `len` bytes at `ptr` of a guest memory's `data`.
fn guest_range(data: &[u8], ptr: i32, len: i32) -> Result<&[u8], wasmi::Error> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    data.get(start..start.saturating_add(len))
        .ok_or_else(|| wasmi::Error::new("a host call's range is outside the memory"))
}

/// Reads `len` bytes at `ptr` of the caller's exported memory.
fn read_guest(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, wasmi::Error> {
    let memory = guest_memory(caller)?;
    guest_range(memory.data(caller), ptr, len).map(<[u8]>::to_vec)
}

impl WasmFunction {
    /// Compiles the module at `path` (validated: an invalid module is refused here); at most
    /// `concurrency` invocations run at once, and with `strict` one more is refused.
    pub fn load(
        path: &Path,
        memory_mb: u32,
        concurrency: usize,
        strict: bool,
    ) -> Result<WasmFunction, String> {
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
                    // Straight from the guest's memory into the log: no copy in between.
                    let memory = guest_memory(&caller)?;
                    let (data, state) = memory.data_and_store_mut(&mut caller);
                    let bytes = guest_range(data, ptr, len)?;
                    state.logged += bytes.len() as u64;
                    if state.log.len() < 2 * MAX_INVOCATION_OUTPUT {
                        state.log.extend_from_slice(bytes);
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
        linker
            .func_wrap(
                "env",
                "put_record",
                |mut caller: Caller<'_, HostState>,
                 stream_ptr: i32,
                 stream_len: i32,
                 key_ptr: i32,
                 key_len: i32,
                 data_ptr: i32,
                 data_len: i32| {
                    let memory = guest_memory(&caller)?;
                    let (memory, state) = memory.data_and_store_mut(&mut caller);
                    let stream = guest_range(memory, stream_ptr, stream_len)?;
                    let key = guest_range(memory, key_ptr, key_len)?;
                    let data = guest_range(memory, data_ptr, data_len)?;
                    Ok(match state.put_record(stream, key, data) {
                        Ok(()) => 0,
                        Err(why) => {
                            let line = format!("put_record refused: {why}\n");
                            state.logged += line.len() as u64;
                            state.log.extend_from_slice(line.as_bytes());
                            1
                        }
                    })
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(WasmFunction {
            engine,
            module,
            linker,
            memory_bytes: (memory_mb as usize) << 20,
            idle: Mutex::new(Vec::new()),
            idle_limit: concurrency.max(1),
            concurrency: Concurrency::new(concurrency, strict),
        })
    }

    /// How many invocations may run at once.
    pub fn concurrency(&self) -> &Concurrency {
        &self.concurrency
    }

    /// Drops the instances idle for longer than `ttl` (their memory goes back to the machine).
    pub fn reap(&self, ttl: Duration) {
        let stale: Vec<(Sandbox, Instant)> = {
            let mut idle = self.idle.lock();
            let keep = idle
                .iter()
                .position(|(_, since)| since.elapsed() < ttl)
                .unwrap_or(idle.len());
            idle.drain(..keep).collect()
        };
        drop(stale);
    }

    /// Runs one invocation to its end on an idle instance, or a new one (a cold start),
    /// on the calling thread (which it may occupy until the timeout).
    pub fn invoke(&self, invocation: &Invocation) -> Outcome {
        match self.start(invocation, FUEL_SLICE) {
            Started::Done(outcome) => outcome,
            Started::Paused(paused) => self.finish(paused),
            // Only a start with less than a slice of fuel ends here.
            Started::NotStarted => failure_outcome(
                invocation,
                RunError::Wasm(wasmi::Error::new("the event's allocation ran out of fuel")),
            ),
        }
    }

    /// Runs `invocation` for at most `fuel` units on the calling thread (an async worker:
    /// keep it small): most invocations end within it. One that needs more comes back
    /// [`Started::Paused`] (continue it with [`WasmFunction::finish`], on a thread that may
    /// block), or [`Started::NotStarted`] when even its event's allocation did not fit (run it
    /// with [`WasmFunction::invoke`] there).
    pub fn start(&self, invocation: &Invocation, fuel: u64) -> Started {
        let queued = Instant::now();
        let warm = self.idle.lock().pop();
        let (mut sandbox, init) = match warm {
            Some((sandbox, _)) => (sandbox, None),
            None => match self.instantiate() {
                Ok(sandbox) => (sandbox, Some(queued.elapsed())),
                Err(error) => {
                    let mut outcome = failure_outcome(invocation, RunError::Wasm(error));
                    outcome.duration = queued.elapsed();
                    return Started::Done(outcome);
                }
            },
        };
        let started = Instant::now();
        let deadline = started + invocation.timeout;
        match sandbox.begin(&invocation.payload, fuel) {
            // The instance may be half-way through `alloc`: it is dropped.
            Err(_) if fuel < FUEL_SLICE => Started::NotStarted,
            Err(error) => {
                Started::Done(self.conclude(sandbox, Err(error), invocation, init, started))
            }
            Ok(Begun::Finished(packed, event)) => {
                let result = sandbox.end(packed, event, fuel);
                Started::Done(self.conclude(sandbox, result, invocation, init, started))
            }
            Ok(Begun::OutOfFuel(call, event)) => Started::Paused(Box::new(Paused {
                sandbox,
                call,
                event,
                request_id: invocation.request_id.clone(),
                timeout: invocation.timeout,
                init,
                started,
                deadline,
            })),
        }
    }

    /// Runs a paused invocation to its end (result, error or timeout) on the calling thread.
    pub fn finish(&self, paused: Box<Paused>) -> Outcome {
        let Paused {
            mut sandbox,
            call,
            event,
            request_id,
            timeout,
            init,
            started,
            deadline,
        } = *paused;
        let result = sandbox
            .resume(call, deadline)
            .and_then(|packed| sandbox.end(packed, event, FUEL_SLICE));
        let invocation = Invocation {
            request_id,
            payload: Bytes::new(),
            invoked_arn: Arc::from(""),
            timeout,
            client_context: None,
            when_busy: WhenBusy::Refuse,
        };
        self.conclude(sandbox, result, &invocation, init, started)
    }

    /// The outcome of a run that ended; the instance goes back to the idle ones if it may
    /// serve another call.
    fn conclude(
        &self,
        mut sandbox: Sandbox,
        result: Result<(Vec<u8>, bool), RunError>,
        invocation: &Invocation,
        init: Option<Duration>,
        started: Instant,
    ) -> Outcome {
        let duration = started.elapsed();
        let state = sandbox.store.data_mut();
        let failure = state.failure.take();
        let output = std::mem::take(&mut state.log);
        let written = std::mem::replace(&mut state.logged, 0);
        let records = std::mem::take(&mut state.records);
        state.record_bytes = 0;
        let reusable = matches!(result, Ok((_, true)))
            && failure.is_none()
            && sandbox.memory.data_size(&sandbox.store) <= self.memory_bytes / 2;
        let mut outcome = match (result, failure) {
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
            (Ok((result, _)), None) => Outcome {
                records,
                ..Outcome::result(Bytes::from(result))
            },
            (Err(error), None) => failure_outcome(invocation, error),
        };
        if reusable {
            let mut idle = self.idle.lock();
            if idle.len() < self.idle_limit {
                idle.push((sandbox, Instant::now()));
            }
        }
        outcome.output = output;
        outcome.written = written;
        outcome.duration = duration;
        outcome.init = init;
        outcome
    }

    /// Instantiates the module in a new store and runs its start function.
    fn instantiate(&self) -> Result<Sandbox, wasmi::Error> {
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
                records: Vec::new(),
                record_bytes: 0,
            },
        );
        store.limiter(|state| &mut state.limits);
        store.set_fuel(FUEL_SLICE)?;
        let instance = self
            .linker
            .instantiate_and_start(&mut store, &self.module)?;
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or_else(|| wasmi::Error::new("the module exports no `memory`"))?;
        let alloc = instance.get_typed_func(&store, "alloc")?;
        let handle = instance.get_typed_func(&store, "handle")?;
        let dealloc = match instance.get_export(&store, "dealloc") {
            Some(_) => Some(instance.get_typed_func(&store, "dealloc")?),
            None => None,
        };
        Ok(Sandbox {
            store,
            memory,
            alloc,
            handle,
            dealloc,
        })
    }
}

/// The outcome of an invocation that ended without a result.
fn failure_outcome(invocation: &Invocation, error: RunError) -> Outcome {
    match error {
        RunError::Timeout => Outcome::failed(
            "Sandbox.Timedout",
            format!(
                "RequestId: {} Error: Task timed out after {:.2} seconds",
                invocation.request_id,
                invocation.timeout.as_secs_f64()
            ),
        ),
        RunError::Wasm(error) => Outcome::failed(
            "Runtime.WasmError",
            format!("RequestId: {} Error: {error}", invocation.request_id),
        ),
    }
}

impl Sandbox {
    /// Writes `event` into room from `alloc` and starts `handle` on it with `fuel` units; each
    /// step gets `fuel`.
    fn begin(&mut self, event: &[u8], fuel: u64) -> Result<Begun, RunError> {
        let store = &mut self.store;
        let len = i32::try_from(event.len()).map_err(|_| wasmi::Error::new("event too large"))?;
        store.set_fuel(fuel)?;
        let ptr = self.alloc.call(&mut *store, len)?;
        self.memory
            .write(&mut *store, ptr as u32 as usize, event)
            .map_err(|e| {
                wasmi::Error::new(format!("alloc returned room outside the memory: {e}"))
            })?;
        store.set_fuel(fuel)?;
        match self.handle.call_resumable(&mut *store, (ptr, len))? {
            TypedResumableCall::Finished(packed) => Ok(Begun::Finished(packed, (ptr, len))),
            TypedResumableCall::OutOfFuel(paused) => Ok(Begun::OutOfFuel(paused, (ptr, len))),
            TypedResumableCall::HostTrap(trap) => Err(RunError::Wasm(wasmi::Error::new(
                trap.host_error().to_string(),
            ))),
        }
    }

    /// Continues `handle` slice by slice until it returns or `deadline` passes.
    fn resume(
        &mut self,
        mut call: TypedResumableCallOutOfFuel<i64>,
        deadline: Instant,
    ) -> Result<i64, RunError> {
        let store = &mut self.store;
        loop {
            if Instant::now() >= deadline {
                return Err(RunError::Timeout);
            }
            store.set_fuel(FUEL_SLICE)?;
            match call.resume(&mut *store)? {
                TypedResumableCall::Finished(packed) => return Ok(packed),
                TypedResumableCall::OutOfFuel(paused) => call = paused,
                TypedResumableCall::HostTrap(trap) => {
                    return Err(RunError::Wasm(wasmi::Error::new(
                        trap.host_error().to_string(),
                    )));
                }
            }
        }
    }

    /// Reads the result `handle` returned (`packed`) and gives back its room and the event's
    /// (`dealloc`, with `fuel` units each); the result, and whether the instance may serve
    /// another call.
    fn end(
        &mut self,
        packed: i64,
        event: (i32, i32),
        fuel: u64,
    ) -> Result<(Vec<u8>, bool), RunError> {
        let store = &mut self.store;
        let packed = packed as u64;
        let (out_ptr, out_len) = ((packed >> 32) as u32, (packed & 0xffff_ffff) as u32);
        if out_len as usize > super::MAX_RESPONSE_BYTES {
            return Err(RunError::Wasm(wasmi::Error::new(format!(
                "Response payload size exceeded maximum allowed payload size ({} bytes).",
                super::MAX_RESPONSE_BYTES
            ))));
        }
        let result = self
            .memory
            .data(&*store)
            .get(out_ptr as usize..(out_ptr as usize).saturating_add(out_len as usize))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                RunError::Wasm(wasmi::Error::new(
                    "handle returned a result outside the memory",
                ))
            })?;
        // A dealloc that fails (or runs out of fuel) only costs the instance its reuse.
        let freed = match self.dealloc {
            Some(dealloc) => {
                store.set_fuel(fuel).is_ok()
                    && dealloc
                        .call(&mut *store, (out_ptr as i32, out_len as i32))
                        .is_ok()
                    && store.set_fuel(fuel).is_ok()
                    && dealloc.call(&mut *store, event).is_ok()
            }
            None => false,
        };
        Ok((result, freed))
    }
}

/// How [`Sandbox::begin`] left `handle`: returned, or out of fuel; with the event's room.
enum Begun {
    Finished(i64, (i32, i32)),
    OutOfFuel(TypedResumableCallOutOfFuel<i64>, (i32, i32)),
}

/// How [`WasmFunction::start`] left an invocation.
pub enum Started {
    /// It ended.
    Done(Outcome),
    /// `handle` used up its first fuel: continue it with [`WasmFunction::finish`].
    Paused(Box<Paused>),
    /// Its event's allocation used up the fuel: nothing ran that counts (the instance was
    /// dropped); run it with [`WasmFunction::invoke`].
    NotStarted,
}

/// An invocation whose `handle` is paused for lack of fuel, with its instance.
pub struct Paused {
    sandbox: Sandbox,
    call: TypedResumableCallOutOfFuel<i64>,
    event: (i32, i32),
    request_id: String,
    timeout: Duration,
    init: Option<Duration>,
    started: Instant,
    deadline: Instant,
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
        let f = WasmFunction::load(&path, 128, 2, false).expect("load");
        (dir, f)
    }

    fn call(f: &WasmFunction, event: &str) -> Outcome {
        f.invoke(&Invocation {
            request_id: "r".into(),
            payload: Bytes::from(event.to_string()),
            invoked_arn: "arn".into(),
            timeout: Duration::from_millis(20),
            client_context: None,
            when_busy: WhenBusy::Refuse,
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

    /// Puts the event on stream `out` (key `k`) and answers `ok`; an event starting with `!`
    /// then fails, one starting with `E` puts with an empty key (refused) and answers the code.
    const FORWARD: &str = r#"
    (module
      (import "env" "put_record" (func $put (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "env" "fail" (func $fail (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "outkok")
      (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
      (func (export "dealloc") (param i32 i32))
      (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 69))
          (then
            (i32.store (i32.const 16)
              (call $put (i32.const 0) (i32.const 3) (i32.const 3) (i32.const 0)
                         (local.get $ptr) (local.get $len)))
            (return (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 4)))))
        (drop (call $put (i32.const 0) (i32.const 3) (i32.const 3) (i32.const 1)
                         (local.get $ptr) (local.get $len)))
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33))
          (then (call $fail (i32.const 0) (i32.const 3))))
        (i64.or (i64.shl (i64.const 4) (i64.const 32)) (i64.const 2))))
    "#;

    #[test]
    fn put_records_come_with_a_successful_outcome_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("forward.wat");
        std::fs::write(&path, FORWARD).expect("write");
        let f = WasmFunction::load(&path, 128, 1, false).expect("load");
        let ok = call(&f, r#"{"t":1}"#);
        assert_eq!(ok.function_error, None);
        assert_eq!(&ok.payload[..], b"ok");
        assert_eq!(ok.records.len(), 1);
        assert_eq!(&*ok.records[0].stream, "out");
        assert_eq!(ok.records[0].partition_key, "k");
        assert_eq!(&ok.records[0].data[..], br#"{"t":1}"#);
        // The warm instance's next invocation has its own records only.
        let next = call(&f, "{}");
        assert_eq!(next.init, None);
        assert_eq!(next.records.len(), 1);
        assert_eq!(&next.records[0].data[..], b"{}");
        // A failed invocation's records are not written.
        let failed = call(&f, "!x");
        assert_eq!(failed.function_error, Some("Unhandled"));
        assert!(failed.records.is_empty());
        // A refused record: code 1, the reason in the log, nothing put.
        let refused = call(&f, "E");
        assert_eq!(refused.function_error, None);
        assert_eq!(&refused.payload[..], 1u32.to_le_bytes());
        assert!(refused.records.is_empty());
        assert!(
            String::from_utf8_lossy(&refused.output)
                .contains("put_record refused: the partition key"),
            "{:?}",
            String::from_utf8_lossy(&refused.output)
        );
    }

    #[test]
    fn invalid_modules_are_refused_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.wasm");
        std::fs::write(&path, b"\0asm garbage").expect("write");
        assert!(WasmFunction::load(&path, 128, 1, false).is_err());
    }

    /// Counts its calls in a global and answers the count (4 bytes, little-endian); an event
    /// starting with `T` traps, one starting with `G` grows the memory by 40 pages (2.5 MiB).
    const COUNTER: &str = r#"
    (module
      (memory (export "memory") 1)
      (global $next (mut i32) (i32.const 1024))
      (global $calls (mut i32) (i32.const 0))
      (func (export "alloc") (param $len i32) (result i32)
        (local $p i32)
        (local.set $p (global.get $next))
        (global.set $next (i32.add (global.get $next) (local.get $len)))
        (local.get $p))
      (func (export "dealloc") (param $ptr i32) (param $len i32)
        (if (i32.eq (i32.add (local.get $ptr) (local.get $len)) (global.get $next))
          (then (global.set $next (local.get $ptr)))))
      (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 84)) (then unreachable))
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 71))
          (then (drop (memory.grow (i32.const 40)))))
        (i32.store (i32.const 0) (global.get $calls))
        (i64.const 4)))
    "#;

    fn counter(wat: &str) -> (tempfile::TempDir, WasmFunction) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("counter.wat");
        std::fs::write(&path, wat).expect("write");
        let f = WasmFunction::load(&path, 4, 1, false).expect("load");
        (dir, f)
    }

    fn count(outcome: &Outcome) -> u32 {
        assert_eq!(outcome.function_error, None, "{:?}", outcome.payload);
        u32::from_le_bytes(outcome.payload[..].try_into().expect("4 bytes"))
    }

    #[test]
    fn an_instance_serves_many_invocations_and_gives_the_event_room_back() {
        let (_dir, f) = counter(COUNTER);
        // 2,000 events of 1,000 bytes: 30 times the 64 KiB memory, so without `dealloc`
        // giving the room back the reused instance would run out.
        let event = format!("{{\"pad\":\"{}\"}}", "x".repeat(990));
        let first = call(&f, &event);
        assert!(first.init.is_some(), "the first call is a cold start");
        assert_eq!(count(&first), 1);
        for n in 2..=2_000 {
            let outcome = call(&f, &event);
            assert_eq!(outcome.init, None);
            assert_eq!(count(&outcome), n, "globals persist in a warm instance");
        }
    }

    #[test]
    fn a_trap_or_a_grown_memory_retires_the_instance() {
        let (_dir, f) = counter(COUNTER);
        assert_eq!(count(&call(&f, "{}")), 1);
        assert_eq!(count(&call(&f, "{}")), 2);
        let trapped = call(&f, "T");
        assert_eq!(trapped.function_error, Some("Unhandled"));
        assert!(String::from_utf8_lossy(&trapped.payload).contains("Runtime.WasmError"));
        let fresh = call(&f, "{}");
        assert!(fresh.init.is_some());
        assert_eq!(count(&fresh), 1, "a trapped instance is not reused");
        // 41 pages is past half of the 4 MiB limit: the answer stands, the instance goes.
        assert_eq!(count(&call(&f, "G")), 2);
        assert_eq!(count(&call(&f, "{}")), 1);
    }

    #[test]
    fn a_module_without_dealloc_is_instantiated_per_invocation() {
        let (_dir, f) = counter(&COUNTER.replace(r#"(export "dealloc") "#, ""));
        for _ in 0..3 {
            let outcome = call(&f, "{}");
            assert!(outcome.init.is_some());
            assert_eq!(count(&outcome), 1);
        }
    }

    #[test]
    fn idle_instances_past_their_time_to_live_are_dropped() {
        let (_dir, f) = counter(COUNTER);
        assert_eq!(count(&call(&f, "{}")), 1);
        f.reap(Duration::from_secs(600));
        assert_eq!(count(&call(&f, "{}")), 2);
        f.reap(Duration::ZERO);
        assert_eq!(count(&call(&f, "{}")), 1);
    }

    fn invocation(event: &str) -> Invocation {
        Invocation {
            request_id: "r".into(),
            payload: Bytes::from(event.to_string()),
            invoked_arn: "arn".into(),
            timeout: Duration::from_secs(10),
            client_context: None,
            when_busy: WhenBusy::Refuse,
        }
    }

    /// Counts down from 200,000 before it answers the event (several times the inline fuel).
    const SLOW: &str = r#"
    (module
      (memory (export "memory") 1)
      (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
      (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
        (local $n i32)
        (local.set $n (i32.const 200000))
        (loop $spin
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br_if $spin (local.get $n)))
        (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                (i64.extend_i32_u (local.get $len)))))
    "#;

    #[test]
    fn a_call_that_outgrows_the_inline_fuel_continues_where_it_stopped() {
        let (_dir, echo) = function();
        let Started::Done(quick) = echo.start(&invocation(r#"{"a":1}"#), INLINE_FUEL) else {
            panic!("a short call ends inline");
        };
        assert_eq!(&quick.payload[..], br#"{"a":1}"#);
        assert_eq!(quick.output, b"hi");
        // The rest of a long call runs in `finish`, with the result of a call run in one go.
        let (_dir, slow) = counter(SLOW);
        let Started::Paused(paused) = slow.start(&invocation(r#"{"b":2}"#), INLINE_FUEL) else {
            panic!("200,000 iterations do not fit in the inline fuel");
        };
        let finished = slow.finish(paused);
        assert_eq!(finished.function_error, None);
        assert_eq!(&finished.payload[..], br#"{"b":2}"#);
        // A paused call still times out.
        let Started::Paused(mut looping) = echo.start(&invocation("L"), INLINE_FUEL) else {
            panic!("an endless loop pauses");
        };
        looping.deadline = Instant::now();
        let timed_out = echo.finish(looping);
        assert!(String::from_utf8_lossy(&timed_out.payload).contains("Task timed out"));
    }

    #[test]
    fn an_allocation_that_outgrows_the_inline_fuel_is_not_started() {
        let (_dir, f) = counter(COUNTER);
        assert!(matches!(f.start(&invocation("{}"), 1), Started::NotStarted));
        // Nothing counted: the instance that started `alloc` was dropped.
        assert_eq!(count(&f.invoke(&invocation("{}"))), 1);
    }
}
