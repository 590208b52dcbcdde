//! The reference architecture's enrichment processor as a WebAssembly function for fleetcore,
//! the twin of `../python-enrich` and `../node-enrich` as far as the wasm ABI reaches.
//!
//! A topic rule (`SELECT *, topic(2) AS thing FROM 'devices/+/telemetry'`) invokes it with each
//! message. It adds a Fahrenheit temperature and puts the record on the Kinesis stream named at
//! build time by `STREAM` (default `telemetry`) through the host's `env.put_record`, then answers
//! the same document. The ABI has no registry import, so it cannot add the thing's attributes;
//! it has no environment import either, hence the stream named at build time (README.md).
//!
//! The ABI (`crates/functions/src/runtime/wasm.rs` in fleetcore): the host writes the event
//! into room `alloc` gave, calls `handle`, reads the result where `handle` says, then gives
//! both back through `dealloc`, so a warm instance is reused from one invocation to the next.

use std::alloc::{Layout, alloc as allocate, dealloc as deallocate};

use serde_json::{Map, Value};

/// The stream the records go to: `STREAM` when the module was built, else `telemetry`.
const STREAM: &str = match option_env!("STREAM") {
    Some(stream) => stream,
    None => "telemetry",
};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Writes bytes to the invocation's log.
    fn log(ptr: *const u8, len: usize);
    /// Marks the invocation failed with an error document.
    fn fail(ptr: *const u8, len: usize);
    /// Puts a record on a stream once the invocation succeeded; 0, or 1 when refused.
    fn put_record(
        stream_ptr: *const u8,
        stream_len: usize,
        key_ptr: *const u8,
        key_len: usize,
        data_ptr: *const u8,
        data_len: usize,
    ) -> i32;
}

/// Room for `len` bytes, where the host writes the event.
#[unsafe(no_mangle)]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    match Layout::from_size_align(len, 1) {
        // SAFETY: the layout has a non-zero size, as `alloc` requires.
        Ok(layout) if len > 0 => unsafe { allocate(layout) },
        // Zero bytes need no room: any non-null, aligned pointer will do (`dealloc` ignores it).
        _ => std::ptr::NonNull::dangling().as_ptr(),
    }
}

/// Gives back room `alloc` handed out, or a result `handle` returned.
///
/// # Safety
/// `ptr` and `len` must be those of one `alloc` call or one result of `handle`, given back once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dealloc(ptr: *mut u8, len: usize) {
    if let Ok(layout) = Layout::from_size_align(len, 1)
        && len > 0
    {
        // SAFETY: the caller promises `ptr` came from an allocation of this layout (results are
        // boxed slices of `len` bytes, allocated with the same size and alignment 1).
        unsafe { deallocate(ptr, layout) }
    }
}

/// Runs the function on the event (UTF-8 JSON at `ptr..ptr+len`) and returns where its result
/// is: `(result_ptr << 32) | result_len`.
///
/// # Safety
/// `ptr..ptr+len` must be room `alloc` gave, which the host filled with the event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn handle(ptr: *const u8, len: usize) -> u64 {
    let event = if len == 0 {
        &[][..]
    } else {
        // SAFETY: the host wrote `len` bytes at `ptr`, in room `alloc` gave.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    };
    let result = match enrich(event) {
        Ok(record) => forward(record),
        Err(message) => Err(("InvalidEvent", message)),
    };
    let out = match result {
        Ok(out) => out,
        Err((error_type, message)) => {
            let document = serde_json::json!({"errorType": error_type, "errorMessage": message});
            let document = document.to_string();
            // SAFETY: the host reads `document` during the call; it outlives it.
            unsafe { fail(document.as_ptr(), document.len()) };
            b"null".to_vec()
        }
    };
    let out = Box::leak(out.into_boxed_slice());
    ((out.as_ptr() as u64) << 32) | out.len() as u64
}

/// The enriched document: the event with `fahrenheit` beside a numeric `temperature`.
fn enrich(event: &[u8]) -> Result<Map<String, Value>, String> {
    let mut record = match serde_json::from_slice(event) {
        Ok(Value::Object(record)) => record,
        Ok(_) => return Err("the event is not a JSON object".into()),
        Err(e) => return Err(format!("the event is not JSON: {e}")),
    };
    match record.get("temperature").and_then(Value::as_f64) {
        Some(celsius) => {
            let fahrenheit = ((celsius * 9.0 / 5.0 + 32.0) * 100.0).round() / 100.0;
            record.insert("fahrenheit".into(), fahrenheit.into());
        }
        None => {
            let line = format!(
                "no numeric temperature from {}: forwarded as is\n",
                thing(&record)
            );
            // SAFETY: the host reads `line` during the call; it outlives it.
            unsafe { log(line.as_ptr(), line.len()) };
        }
    }
    Ok(record)
}

/// The thing the rule named (`topic(2) AS thing`), or `unknown`.
fn thing(record: &Map<String, Value>) -> &str {
    match record.get("thing").and_then(Value::as_str) {
        Some(thing) if !thing.is_empty() => thing,
        _ => "unknown",
    }
}

/// Puts the record on [`STREAM`], keyed by its thing, and returns its bytes as the result.
fn forward(record: Map<String, Value>) -> Result<Vec<u8>, (&'static str, String)> {
    let key = thing(&record).to_string();
    let bytes = Value::Object(record).to_string().into_bytes();
    // SAFETY: the host reads the three ranges during the call; they outlive it.
    let refused = unsafe {
        put_record(
            STREAM.as_ptr(),
            STREAM.len(),
            key.as_ptr(),
            key.len(),
            bytes.as_ptr(),
            bytes.len(),
        )
    };
    if refused != 0 {
        // The host logged why; failing lets the caller (a rule action) retry the message.
        return Err((
            "PutRecordRefused",
            format!("{STREAM} refused the record (see the log)"),
        ));
    }
    Ok(bytes)
}
