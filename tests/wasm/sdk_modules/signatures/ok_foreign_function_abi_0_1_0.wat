;; Accepted: ABI 0.1.0 has no foreign functions, so cpp-host never looks this export up.
(module
  (memory (export "memory") 2)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_foreign_function") (param i32)))
