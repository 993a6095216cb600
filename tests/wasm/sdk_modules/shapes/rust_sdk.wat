;; The shape of a proxy-wasm-rust-sdk module built for wasm32-unknown-unknown: no WASI imports,
;; no _initialize or _start, exported __data_end/__heap_base globals, proxy_on_memory_allocate
;; (no malloc), ABI 0.2.1 with proxy_get_log_level. Like the SDK it reads whole header maps with
;; proxy_get_header_map_pairs, creates the root context when proxy_on_context_create names root 0,
;; and answers proxy_on_done per context (a root may say "not yet" and call proxy_done later).
;; It also rewrites the request body after removing content-length, as SDK examples do.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $get_log_level (param i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_done" (func $proxy_done (result i32)))
  (memory (export "memory") 17)
  (global (export "__data_end") i32 (i32.const 1100))
  (global (export "__heap_base") i32 (i32.const 65536))
  (;helpers;)
  (data (i32.const 1024) "x-pairs")        ;; 7
  (data (i32.const 1032) "x-pairs-bytes")  ;; 13
  (data (i32.const 1048) "x-log-level")    ;; 11
  (data (i32.const 1064) "x-root")         ;; 6
  (data (i32.const 1072) "x-done")         ;; 6
  (data (i32.const 1080) "content-length") ;; 14
  (data (i32.const 1096) "rust:")          ;; 5
  (data (i32.const 1104) "root on_done: pending") ;; 21
  (global $root (mut i32) (i32.const 0))
  (func $header (param $k i32) (param $kn i32) (param $v i32)
    (drop (call $add (i32.const 0) (local.get $k) (local.get $kn) (i32.const 3000)
                     (call $itoa (local.get $v) (i32.const 3000)))))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (call $alloc (local.get 0)))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param $id i32) (param $root i32)
    (if (i32.eqz (local.get $root)) (then (global.set $root (local.get $id)))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param $id i32) (param $n i32) (param $eos i32) (result i32)
    (local $ptr i32) (local $size i32)
    (drop (call $get_pairs (i32.const 0) (i32.const 4000) (i32.const 4004)))
    (local.set $ptr (i32.load (i32.const 4000)))
    (local.set $size (i32.load (i32.const 4004)))
    (call $header (i32.const 1024) (i32.const 7) (i32.load (local.get $ptr)))
    (call $header (i32.const 1032) (i32.const 13) (local.get $size))
    (drop (call $get_log_level (i32.const 4008)))
    (call $header (i32.const 1048) (i32.const 11) (i32.load (i32.const 4008)))
    (call $header (i32.const 1064) (i32.const 6) (global.get $root))
    ;; proxy_done from a stream: nothing of this context is pending (NotFound)
    (call $header (i32.const 1072) (i32.const 6) (call $proxy_done))
    (if (i32.eqz (local.get $eos))
      (then (drop (call $remove (i32.const 0) (i32.const 1080) (i32.const 14)))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $id i32) (param $n i32) (param $eos i32) (result i32)
    ;; buffer the body; at its end prefix it with "rust:"
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (drop (call $set_buffer (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1096) (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_done") (param $id i32) (result i32)
    (if (i32.eq (local.get $id) (global.get $root))
      (then (drop (call $proxy_log (i32.const 2) (i32.const 1104) (i32.const 21)))
            (return (i32.const 0))))
    (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
