;; The shape of a proxy-wasm-cpp-sdk module built with Emscripten (STANDALONE_WASM): a WASI
;; command whose `_start` runs constructors, malloc/free exports, an exported function table,
;; memory growth announced through env.emscripten_notify_memory_growth (also after start-up),
;; proc_exit imported, ABI 0.2.1.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "env" "emscripten_notify_memory_growth" (func $notify (param i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (table (export "__indirect_function_table") 1 funcref)
  (;helpers;)
  (data (i32.const 1024) "x-started")   ;; 9
  (data (i32.const 1040) "x-grew")      ;; 6
  (data (i32.const 1048) "x-echo")      ;; 6
  (data (i32.const 1056) "x-in")        ;; 4
  (data (i32.const 1064) "constructors ran\n") ;; 17
  (global $started (mut i32) (i32.const 0))
  (func (export "_start")
    (global.set $started (i32.add (global.get $started) (i32.const 1)))
    (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (call $notify (i32.const 0))))
    (i32.store (i32.const 4000) (i32.const 1064))
    (i32.store (i32.const 4004) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 4000) (i32.const 1) (i32.const 4008))))
  (func (export "malloc") (param i32) (result i32) (call $alloc (local.get 0)))
  (func (export "free") (param i32))
  (func (export "stackSave") (result i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $grew i32)
    (local.set $grew (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))
    (if (local.get $grew) (then (call $notify (i32.const 0))))
    (drop (call $add (i32.const 0) (i32.const 1024) (i32.const 9) (i32.const 3000)
                     (call $itoa (global.get $started) (i32.const 3000))))
    (drop (call $add (i32.const 0) (i32.const 1040) (i32.const 6) (i32.const 3000)
                     (call $itoa (local.get $grew) (i32.const 3000))))
    ;; a value copied in through malloc, after the growth
    (drop (call $get (i32.const 0) (i32.const 1056) (i32.const 4) (i32.const 4000) (i32.const 4004)))
    (drop (call $add (i32.const 0) (i32.const 1048) (i32.const 6) (i32.load (i32.const 4000)) (i32.load (i32.const 4004))))
    (i32.const 0))
)
