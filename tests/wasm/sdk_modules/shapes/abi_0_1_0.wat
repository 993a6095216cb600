;; An ABI 0.1.0 module (old Rust/C++ SDK releases): proxy_get_configuration, two-argument
;; header callbacks, and a missing header read as an empty value with Ok.
(module
  (import "env" "proxy_get_configuration" (func $get_config (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (;helpers;)
  (data (i32.const 1024) "x-config")        ;; 8
  (data (i32.const 1040) "x-absent")        ;; 8
  (data (i32.const 1056) "x-absent-status") ;; 15
  (data (i32.const 1072) "x-absent-len")    ;; 12
  (data (i32.const 1088) "x-old-response")  ;; 14
  (global $cfg (mut i32) (i32.const 0))
  (global $cfg_len (mut i32) (i32.const 0))
  (func (export "malloc") (param i32) (result i32) (call $alloc (local.get 0)))
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $get_config (i32.const 4000) (i32.const 4004)))
    (global.set $cfg (i32.load (i32.const 4000)))
    (global.set $cfg_len (i32.load (i32.const 4004)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
    (local $status i32)
    (drop (call $add (i32.const 0) (i32.const 1024) (i32.const 8) (global.get $cfg) (global.get $cfg_len)))
    (i32.store (i32.const 4008) (i32.const 99))
    (local.set $status (call $get (i32.const 0) (i32.const 1040) (i32.const 8) (i32.const 4004) (i32.const 4008)))
    (drop (call $add (i32.const 0) (i32.const 1056) (i32.const 15) (i32.const 3000)
                     (call $itoa (local.get $status) (i32.const 3000))))
    (drop (call $add (i32.const 0) (i32.const 1072) (i32.const 12) (i32.const 3000)
                     (call $itoa (i32.load (i32.const 4008)) (i32.const 3000))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 1088) (i32.const 14) (i32.const 3000)
                     (call $itoa (local.get 1) (i32.const 3000))))
    (i32.const 0))
)
