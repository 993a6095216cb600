;; A callback every ABI version has, with an i64 where cpp-host passes an i32.
(module
  (memory (export "memory") 2)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_tick") (param i64)))
