"""A fuzzing guest for the Wasm host: a module that imports every host function the emulator
registers and, from each proxy-wasm callback, runs a program of host calls the test wrote into its
linear memory.

The import list comes from the host's own registration table (`envoyext.wasm.imports.make_imports`,
WASI included), never from a hand-written copy, so a host function added later is fuzzed too.

Memory layout (the module starts with `PAGES` pages):

    PROG  .. + SLOTS * SLOT   one program per callback: u32 count, u32 pad, then records of
                              RECORD bytes: u64 function index, 12 u64 arguments, u64 result
                              (the guest writes the call's result there; i32 results zero-extended)
    SCRATCH                   data the test lays out (keys, values, serialized maps, paths)
    OUT                       where out-pointers usually point
    HEAP ..                   the bump allocator behind `malloc` (reset at each callback; grows
                              memory as needed; refuses requests over MALLOC_MAX with 0)

Each callback runs its program and returns Continue (0), `true` for on_vm_start / on_configure and
on_done, so the stream is never paused by the guest itself.
"""

from __future__ import annotations

import inspect
import struct
import types
from dataclasses import dataclass
from functools import cache

import wasmtime

from envoyext.wasm.abi import ABI_CALLBACKS, MODULE_CALLBACKS, AbiVersion
from envoyext.wasm.host import HostFunction
from envoyext.wasm.imports import make_imports

PAGES = 4
MEMORY0 = PAGES * 65536
PROG = 0x10000
SLOT = 0x1000
RECORD = 8 + 12 * 8 + 8
MAX_RECORDS = (SLOT - 8) // RECORD
SCRATCH = 0x20000
SCRATCH_END = 0x2F000
OUT = 0x2F000
HEAP = 0x30000
MALLOC_MAX = 16 << 20

# The callbacks that run a program, each with its slot (its index here).
CALLBACKS = ("proxy_on_context_create", "proxy_on_request_headers", "proxy_on_request_body",
             "proxy_on_request_trailers", "proxy_on_response_headers", "proxy_on_response_body",
             "proxy_on_response_trailers", "proxy_on_log", "proxy_on_done", "proxy_on_delete", "proxy_on_tick",
             "proxy_on_http_call_response", "proxy_on_queue_ready", "proxy_on_vm_start", "proxy_on_configure")
SLOTS = {name: i for i, name in enumerate(CALLBACKS)}
assert len(CALLBACKS) * SLOT <= SCRATCH - PROG

# Imports never fuzzed: proc_exit traps by design (a guest that exits cannot go on).
EXCLUDED = {("wasi_snapshot_preview1", "proc_exit"), ("wasi_unstable", "proc_exit")}


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    params: str            # 'i' i32, 'I' i64 (HostFunction's notation)
    results: str
    arg_names: tuple[str, ...]   # the Python implementation's parameter names ('' when it takes *args)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"


def registered_imports(abi: AbiVersion = AbiVersion.V0_2_1) -> list[Import]:
    """Every host function the emulator registers for a module of `abi`, read off its table."""
    stub = types.SimpleNamespace(abi=abi, effective=None)   # the table reads only these when built
    table: dict[tuple[str, str], HostFunction] = make_imports(stub)  # type: ignore[arg-type]
    out = []
    for (module, name), fn in sorted(table.items()):
        if (module, name) in EXCLUDED:
            continue
        params = [p for p in inspect.signature(fn.impl).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = tuple(p.name for p in params) if len(params) == len(fn.params) else ("",) * len(fn.params)
        out.append(Import(module, name, fn.params, fn.results, names))
    return out


def _callback_signatures() -> dict[str, tuple[int, bool]]:
    sigs = {name: (n, r) for name, n, r in MODULE_CALLBACKS + ABI_CALLBACKS[AbiVersion.V0_2_1]}
    return {name: sigs[name] for name in CALLBACKS}


def wat(imports: list[Import]) -> str:
    ty = {"i": "i32", "I": "i64"}
    lines = ["(module"]
    for k, imp in enumerate(imports):
        params = " ".join(ty[c] for c in imp.params)
        result = f" (result {ty[imp.results]})" if imp.results else ""
        lines.append(f'  (import "{imp.module}" "{imp.name}" (func $f{k} (param {params}){result}))'
                     if params else f'  (import "{imp.module}" "{imp.name}" (func $f{k}{result}))')
    lines.append(f'  (memory (export "memory") {PAGES})')
    lines.append(f"  (global $heap (mut i32) (i32.const {HEAP}))")
    lines.append("  (type $thunk (func (param i32) (result i64)))")
    for k, imp in enumerate(imports):
        args = " ".join(f"(i32.wrap_i64 (i64.load offset={8 + 8 * j} (local.get $r)))" if c == "i"
                        else f"(i64.load offset={8 + 8 * j} (local.get $r))" for j, c in enumerate(imp.params))
        call = f"(call $f{k} {args})"
        if imp.results == "i":
            body = f"(i64.extend_i32_u {call})"
        elif imp.results == "I":
            body = call
        else:
            body = f"{call} (i64.const 0)"
        lines.append(f"  (func $t{k} (type $thunk) (param $r i32) (result i64) {body})")
    lines.append(f"  (table {len(imports)} funcref)")
    lines.append("  (elem (i32.const 0) " + " ".join(f"$t{k}" for k in range(len(imports))) + ")")
    lines.append(f"""
  (func $malloc (export "malloc") (param $n i32) (result i32) (local $p i32) (local $end i64) (local $have i64)
    (if (i32.gt_u (local.get $n) (i32.const {MALLOC_MAX})) (then (return (i32.const 0))))
    (local.set $p (global.get $heap))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $p)) (i64.extend_i32_u (local.get $n))))
    (local.set $have (i64.mul (i64.extend_i32_u (memory.size)) (i64.const 65536)))
    (if (i64.gt_u (local.get $end) (local.get $have))
      (then (if (i32.eq (memory.grow (i32.wrap_i64 (i64.div_u (i64.add (i64.sub (local.get $end) (local.get $have))
                                                                        (i64.const 65535)) (i64.const 65536))))
                        (i32.const -1))
              (then (return (i32.const 0))))))
    (global.set $heap (i32.and (i32.add (i32.wrap_i64 (local.get $end)) (i32.const 7)) (i32.const -8)))
    (local.get $p))
  (func $run (param $slot i32) (local $base i32) (local $n i32) (local $i i32) (local $rec i32) (local $idx i32)
    (global.set $heap (i32.const {HEAP}))
    (local.set $base (i32.add (i32.const {PROG}) (i32.mul (local.get $slot) (i32.const {SLOT}))))
    (local.set $n (i32.load (local.get $base)))
    (if (i32.gt_u (local.get $n) (i32.const {MAX_RECORDS})) (then (local.set $n (i32.const {MAX_RECORDS}))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $rec (i32.add (i32.add (local.get $base) (i32.const 8)) (i32.mul (local.get $i) (i32.const {RECORD}))))
      (local.set $idx (i32.load (local.get $rec)))
      (if (i32.lt_u (local.get $idx) (i32.const {len(imports)}))
        (then (i64.store offset={RECORD - 8} (local.get $rec)
                         (call_indirect (type $thunk) (local.get $rec) (local.get $idx)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  (func (export "proxy_abi_version_0_2_1"))""")
    for name, (nparams, returns) in _callback_signatures().items():
        params = " ".join(["i32"] * nparams)
        value = "1" if name in ("proxy_on_vm_start", "proxy_on_configure", "proxy_on_done") else "0"
        tail = f" (i32.const {value})" if returns else ""
        result = " (result i32)" if returns else ""
        lines.append(f'  (func (export "{name}") (param {params}){result} (call $run (i32.const {SLOTS[name]})){tail})')
    lines.append(")")
    return "\n".join(lines)


@cache
def module_bytes() -> bytes:
    return wasmtime.wat2wasm(wat(registered_imports()))


def program_bytes(calls: list[tuple[int, list[int]]]) -> bytes:
    """One slot's program: the count, then each (function index, arguments) record."""
    calls = calls[:MAX_RECORDS]
    out = [struct.pack("<II", len(calls), 0)]
    for idx, args in calls:
        words = [a & 0xFFFFFFFFFFFFFFFF for a in args] + [0] * (12 - len(args))
        out.append(struct.pack("<Q12QQ", idx, *words, 0))
    return b"".join(out)


def result_of(memory: bytes, slot: int, i: int) -> int:
    """What the guest recorded as the result of record `i` of slot `slot`."""
    at = PROG + slot * SLOT + 8 + i * RECORD + RECORD - 8
    return struct.unpack_from("<Q", memory, at)[0]
