;; proxy_on_foreign_function is looked up (and checked) from ABI 0.2.0 on.
(module
  (memory (export "memory") 2)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_foreign_function") (param i32)))
