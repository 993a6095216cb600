;; proxy-wasm-go-sdk's postpone_requests example, reduced: a request is paused and the next
;; on_tick resumes it through proxy_set_effective_context + proxy_continue_stream. Nothing but
;; the timer can resume it, so the emulator must let (virtual) time run to the tick.
(module
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (;helpers;)
  (data (i32.const 1024) "resumed on tick") ;; 15
  (global $paused (mut i32) (i32.const 0))
  (func (export "malloc") (param i32) (result i32) (call $alloc (local.get 0)))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $set_tick (i32.const 200)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $id i32) (param i32 i32) (result i32)
    (global.set $paused (local.get $id))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (if (global.get $paused) (then
      (drop (call $set_effective (global.get $paused)))
      (drop (call $continue (i32.const 0)))
      (drop (call $proxy_log (i32.const 2) (i32.const 1024) (i32.const 15)))
      (global.set $paused (i32.const 0)))))
)
