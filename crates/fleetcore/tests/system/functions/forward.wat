;; A WebAssembly function whose output goes on to a Kinesis stream: it wraps the event as
;; {"wasm":<the event>}, puts that on the stream named at offset 256 (NUL-terminated,
;; "wasm-out" here; replace it to write elsewhere) with partition key "k" through the host's
;; `put_record`, logs a line and answers the same document. The host writes the record once the
;; invocation succeeded, before its caller sees the result. A record the host refuses fails the
;; invocation (`fail`), so its caller retries it.
(module
  (import "env" "log" (func $log (param i32 i32)))
  (import "env" "fail" (func $fail (param i32 i32)))
  (import "env" "put_record" (func $put_record (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"wasm\":")
  (data (i32.const 32) "forwarded\n")
  (data (i32.const 48) "k")
  (data (i32.const 64) "{\"errorType\":\"PutRecordRefused\",\"errorMessage\":\"see the log\"}")
  (data (i32.const 256) "wasm-out\00")
  (global $next (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "dealloc") (param $ptr i32) (param $len i32)
    (if (i32.eq (i32.add (local.get $ptr) (local.get $len)) (global.get $next))
      (then (global.set $next (local.get $ptr)))))
  ;; The length of the NUL-terminated text at $p.
  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $end
      (loop $scan
        (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $scan)))
    (local.get $n))
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $out i32)
    (local $size i32)
    (local.set $size (i32.add (local.get $len) (i32.const 9)))
    (local.set $out (call $alloc (local.get $size)))
    (i64.store (local.get $out) (i64.load (i32.const 16)))
    (memory.copy (i32.add (local.get $out) (i32.const 8)) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.add (i32.add (local.get $out) (i32.const 8)) (local.get $len)) (i32.const 125))
    (if (call $put_record (i32.const 256) (call $strlen (i32.const 256)) (i32.const 48) (i32.const 1)
                          (local.get $out) (local.get $size))
      (then (call $fail (i32.const 64) (i32.const 61))))
    (call $log (i32.const 32) (i32.const 10))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (local.get $size)))))
