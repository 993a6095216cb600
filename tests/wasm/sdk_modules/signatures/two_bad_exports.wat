;; Two bad exports: Envoy logs both, in its lookup order (proxy_on_log comes before the header callbacks).
(module
  (memory (export "memory") 2)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_response_headers") (param i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32 i32)))
