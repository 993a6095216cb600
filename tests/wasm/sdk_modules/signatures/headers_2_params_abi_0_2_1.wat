;; ABI 0.2.1 wants proxy_on_request_headers(context_id, num_headers, end_of_stream); this one is ABI 0.1.0's.
(module
  (memory (export "memory") 2)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32) (i32.const 0)))
