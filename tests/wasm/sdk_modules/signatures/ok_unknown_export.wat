;; Accepted: an export cpp-host does not look up may have any signature.
(module
  (memory (export "memory") 2)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_something_else") (param i64) (result f64) (f64.const 0)))
