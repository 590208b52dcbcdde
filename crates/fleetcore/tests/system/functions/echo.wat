;; fleetcore's WebAssembly function ABI, by example: `handle` answers {"wasm": <the event>}
;; and writes a line to the log; an event starting with `[` spins forever (the fuel limit
;; stops it, reported as a timeout). `dealloc` frees the most recent allocation, so a warm
;; instance, which the host frees the result then the event of, never runs out of memory.
(module
  (import "env" "log" (func $log (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"wasm\":")
  (data (i32.const 32) "wasm says hi\n")
  (global $next (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "dealloc") (param $ptr i32) (param $len i32)
    (if (i32.eq (i32.add (local.get $ptr) (local.get $len)) (global.get $next))
      (then (global.set $next (local.get $ptr)))))
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $out i32)
    (local $i i32)
    (call $log (i32.const 32) (i32.const 13))
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 91))
      (then (loop $spin (br $spin))))
    (local.set $out (call $alloc (i32.add (local.get $len) (i32.const 9))))
    (i64.store (local.get $out) (i64.load (i32.const 16)))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8
          (i32.add (i32.add (local.get $out) (i32.const 8)) (local.get $i))
          (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (i32.store8 (i32.add (i32.add (local.get $out) (i32.const 8)) (local.get $len)) (i32.const 125))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.add (local.get $len) (i32.const 9))))))
