;; What an allocator may call while the host copies data into the module (cpp-host's
;; allocMemory): proxy_log, fd_write, clock_time_get and poll_oneoff - Go's runtime may log,
;; read the clock or sleep while it allocates. Anything else traps "restricted_callback".
(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (;helpers;)
  (data (i32.const 1024) "x-mode")        ;; 6
  (data (i32.const 1032) "x-second")      ;; 8
  (data (i32.const 1048) "allocating")    ;; 10
  (data (i32.const 1064) "x-clock")       ;; 7
  (global $mode (mut i32) (i32.const 0))
  (global $clock (mut i32) (i32.const 0))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (drop (call $proxy_log (i32.const 2) (i32.const 1048) (i32.const 10)))
    (global.set $clock (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 4100)))
    (if (global.get $mode) (then (drop (call $random_get (i32.const 4100) (i32.const 4)))))
    (call $alloc (local.get 0)))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $r i32)
    (global.set $mode (i32.const 0))
    (drop (call $get (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 4000) (i32.const 4004)))
    (drop (call $add (i32.const 0) (i32.const 1064) (i32.const 7) (i32.const 3000)
                     (call $itoa (global.get $clock) (i32.const 3000))))
    (if (i32.eq (i32.load8_u (i32.load (i32.const 4000))) (i32.const 114))   ;; 'r'
      (then (global.set $mode (i32.const 1))))
    (local.set $r (call $get (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 4000) (i32.const 4004)))
    (global.set $mode (i32.const 0))
    (drop (call $add (i32.const 0) (i32.const 1032) (i32.const 8) (i32.const 3000)
                     (call $itoa (local.get $r) (i32.const 3000))))
    (i32.const 0))
)
