;; Exports both `_initialize` and `_start`: cpp-host treats it as a reactor and never calls
;; `_start`; `main(0, 0)` runs after `_initialize`.
(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (;helpers;)
  (data (i32.const 1024) "x-entry")   ;; 7
  (global $trace (mut i32) (i32.const 0))
  (func (export "_initialize") (global.set $trace (i32.add (i32.mul (global.get $trace) (i32.const 10)) (i32.const 1))))
  (func (export "_start") (global.set $trace (i32.add (i32.mul (global.get $trace) (i32.const 10)) (i32.const 2))))
  (func (export "main") (param i32 i32) (result i32)
    (global.set $trace (i32.add (i32.mul (global.get $trace) (i32.const 10)) (i32.const 3)))
    (i32.const 0))
  (func (export "malloc") (param i32) (result i32) (call $alloc (local.get 0)))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 1024) (i32.const 7) (i32.const 3000)
                     (call $itoa (global.get $trace) (i32.const 3000))))
    (i32.const 0))
)
