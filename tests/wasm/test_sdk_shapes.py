"""Modules shaped like other SDKs' output, through the emulator and Envoy 1.40, compared.

Each `sdk_modules/shapes/<name>.wat` mimics what one toolchain emits - the exports and imports
Envoy's cpp-host looks at, in the order and with the quirks that toolchain has:

* go_wasip1: Go 1.24+ wasip1 c-shared (proxy-wasm-go-sdk): `_initialize` calling WASI, two
  imports of fd_write, `proxy_on_memory_allocate` and no malloc, ABI 0.2.0;
* rust_sdk: proxy-wasm-rust-sdk on wasm32-unknown-unknown: no WASI, no start function, exported
  globals, ABI 0.2.1, `proxy_get_header_map_pairs`, `proxy_get_log_level`, `proxy_on_done`;
* emscripten: proxy-wasm-cpp-sdk under Emscripten: `_start` (a command), malloc, memory growth
  announced through `env.emscripten_notify_memory_growth`, an exported table;
* reactor_and_command: exports both `_initialize` and `_start` (only `_initialize` runs);
* abi_0_1_0: an ABI 0.1.0 module (`proxy_get_configuration`, two-argument header callbacks);
* malloc_restricted: what a module's allocator may call while the host copies data in.

`<name>.yaml` is the scenario; every case must meet its expectations under both runners and the
two observations must agree (tests/differential.py). `(;helpers;)` in a .wat is replaced by HELPERS (a bump allocator
and an integer formatter) so each file stays about its shape.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import wasmtime

from envoyext.artifact import Artifact
from tests.differential import Differential, scenario_cases

from .conftest import CACHE

SHAPES = Path(__file__).parent / "sdk_modules" / "shapes"

HELPERS = """
  (global $heap (mut i32) (i32.const 65536))
  (func $alloc (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get $n)) (i32.const 7))
                               (i32.const -8)))
    (block $ok (loop $grow
      (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.const 1)))
      (br $grow)))
    (local.get $p))
  (func $itoa (param $v i32) (param $out i32) (result i32)
    (local $t i32) (local $len i32) (local $i i32)
    (local.set $t (local.get $v))
    (local.set $len (i32.const 1))
    (block $done (loop $count
      (br_if $done (i32.lt_u (local.get $t) (i32.const 10)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (br $count)))
    (local.set $i (local.get $len))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $out) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $write (local.get $i)))
    (local.get $len))
"""


def build(name: str) -> Path:
    text = (SHAPES / f"{name}.wat").read_text().replace("(;helpers;)", HELPERS)
    out = CACHE / f"shape-{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.wasm"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        out.write_bytes(wasmtime.wat2wasm(text))
    return out


def artifact(path: Path) -> Artifact:
    return Artifact("wasm", build(path.stem), path.stem.replace("_", "-"), root_id="r", vm_id="v")


FILES = sorted(SHAPES.glob("*.yaml"))
DIFFERENTIAL = Differential(artifact)


@pytest.mark.parametrize("path,name", scenario_cases(FILES))
def test_shape_runs_in_emulator_as_in_envoy(path, name):
    DIFFERENTIAL.assert_agree(path, name)
