"""The VM: one wasmtime instance, its imports, guest memory access and calls into the guest.

Speed matters here (every header read is a host call), so this module bypasses wasmtime-py's
generic call path, which costs tens of microseconds a call:

* host functions are defined with `wasmtime_linker_define_func_unchecked`; their trampolines are
  generated per arity and read the raw argument slots through one `c_uint64` pointer;
* guest exports are called with `wasmtime_func_call_unchecked` on a preallocated slot array;
* guest memory is read and written through a memoryview over linear memory (slices and
  `struct.pack_into` cost a third of `ctypes.string_at`/`memmove`). The engine reserves each
  memory's whole 4 GiB address range up front and never moves it (`memory_may_move = False`),
  and memory never shrinks, so a view stays valid: an access past its end re-reads the size
  (one FFI call) and widens the view if the guest has grown the memory meanwhile.

Robustness: every guest pointer is bounds-checked (a bad one answers InvalidMemoryAccess or the
WASI FAULT errno, as cpp-host does); a trap becomes `GuestTrap` with wasmtime's message; a guest
that does not return within `deadline_ms` is interrupted through the engine's epoch; memory
growth is capped by the store's limits.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import wasmtime
from wasmtime import _ffi as ffi

from envoyext.wasm.abi import MALLOC_ALLOWED, MAX_MEMORY_BYTES

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
EPOCH_TICK_S = 0.05          # the ticker's period; deadlines are counted in these ticks
DEFAULT_DEADLINE_MS = 2000   # longest a single guest call may run


class GuestTrap(Exception):
    """The guest trapped, ran out of time, or its VM could not be used. `message` is for users."""

    def __init__(self, function: str, message: str, *, interrupted: bool = False):
        self.function = function
        self.message = message
        self.interrupted = interrupted  # stopped at its deadline: live Envoy would still be running it
        super().__init__(f"Function: {function} failed: {message}")


class LoadError(Exception):
    """The module cannot become a VM (Envoy's 'Failed to load Wasm module ...' family)."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix    # what to change in the module, when the cause says it


# -- raw C entry points with address-typed arguments (fresh handles: wasmtime-py's own stay as they are)
_dll = ffi.dll


def _raw(name: str, restype, *argtypes):
    fn = _dll[name]
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_vp, _sz = ctypes.c_void_p, ctypes.c_size_t
_call_unchecked = _raw("wasmtime_func_call_unchecked", _vp, _vp, _vp, _vp, _sz, _vp)
_mem_data = _raw("wasmtime_memory_data", _vp, _vp, _vp)
_mem_size = _raw("wasmtime_memory_data_size", _sz, _vp, _vp)
_set_deadline = _raw("wasmtime_context_set_epoch_deadline", None, _vp, ctypes.c_uint64)
_caller_context = _raw("wasmtime_caller_context", _vp, _vp)
_trap_new = _raw("wasmtime_trap_new", _vp, ctypes.c_char_p, _sz)
_define_unchecked = _raw("wasmtime_linker_define_func_unchecked", _vp, _vp, ctypes.c_char_p, _sz,
                         ctypes.c_char_p, _sz, _vp, _vp, _vp, _vp)
_UNCHECKED_CB = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# -- one engine per process, with an epoch ticker so runaway guests can be interrupted -----------
_engine: wasmtime.Engine | None = None
epoch = 0   # the ticker's count, mirrored so re-arming a deadline costs no FFI call when fresh
_engine_lock = threading.Lock()
_modules: dict[tuple, wasmtime.Module] = {}


def engine() -> wasmtime.Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            cfg = wasmtime.Config()
            cfg.epoch_interruption = True
            # Linear memory stays where it is (see the module docstring): all of a wasm32 memory's
            # range is reserved at once, so growing never needs to move it.
            cfg.memory_reservation = 1 << 32
            cfg.memory_may_move = False
            _engine = wasmtime.Engine(cfg)
            eng = _engine

            def tick():
                global epoch
                while True:
                    time.sleep(EPOCH_TICK_S)
                    eng.increment_epoch()
                    epoch += 1
            threading.Thread(target=tick, name="envoyext-wasm-epoch", daemon=True).start()
        return _engine


def compile_module(path: Path | str | None = None, *, code: bytes | None = None) -> wasmtime.Module:
    """Compile once per file content; VMs (and reloads after a crash) reuse the compiled module."""
    if code is None:
        code = Path(path).read_bytes()
    key = (len(code), hash(code))
    mod = _modules.get(key)
    if mod is None:
        try:
            mod = wasmtime.Module(engine(), code)
        except wasmtime.WasmtimeError as e:
            raise LoadError(f"Failed to load Wasm code: {str(e).splitlines()[0]}") from None
        _modules[key] = mod
    return mod


@dataclass(frozen=True)
class HostFunction:
    """One import the host provides: its wasm signature and the Python implementation.

    `params` / `results` are strings of 'i' (i32) and 'I' (i64). The implementation receives i32s
    as unsigned ints and i64s as unsigned 64-bit ints, and returns an int (or None for no result)."""
    params: str
    results: str
    impl: Callable


_VALTYPE = {"i": wasmtime.ValType.i32, "I": wasmtime.ValType.i64}


def _functype(params: str, results: str) -> wasmtime.FuncType:
    return wasmtime.FuncType([_VALTYPE[c]() for c in params], [_VALTYPE[c]() for c in results])


class _Export:
    """A guest export prepared for the unchecked call path. The call's C arguments are kept as
    ctypes objects (addr, slots_addr, nslots, trap_addr): ctypes passes those without converting
    them, a fifth of the cost of a call that does nothing."""
    __slots__ = ("name", "func", "addr", "nparams", "nresults", "slots", "slots_addr", "nslots", "trap",
                 "trap_addr")

    def __init__(self, name: str, func: wasmtime.Func, ty: wasmtime.FuncType):
        self.name = name
        self.func = func     # owns the wasmtime_func_t that addr points into
        self.addr = ctypes.c_void_p(ctypes.addressof(func._func))
        self.nparams = len(ty.params)
        self.nresults = len(ty.results)
        nslots = max(self.nparams, self.nresults, 1)
        self.nslots = ctypes.c_size_t(nslots)
        self.slots = (ctypes.c_uint64 * (2 * nslots))()
        self.slots_addr = ctypes.c_void_p(ctypes.addressof(self.slots))
        self.trap = ctypes.c_void_p()
        self.trap_addr = ctypes.c_void_p(ctypes.addressof(self.trap))


class WasmVm:
    """One instantiated module. `imports` maps (module, name) to a HostFunction."""

    def __init__(self, module: wasmtime.Module, imports: dict[tuple[str, str], HostFunction], *,
                 memory_limit: int = MAX_MEMORY_BYTES, deadline_ms: int = DEFAULT_DEADLINE_MS):
        self.module = module
        self.set_deadline(deadline_ms)
        self.store = wasmtime.Store(engine())
        self.store.set_limits(memory_size=memory_limit)
        self.ctx = ctypes.cast(self.store._context(), ctypes.c_void_p)   # a ctypes object, as _Export's
        self.depth = 0              # guest calls in progress (host calls may re-enter: malloc)
        self.armed_at = -(1 << 60)  # ticker count when the epoch deadline was last set
        self.caller: int | None = None
        self.host_error: BaseException | None = None
        self.view = memoryview(bytearray())   # linear memory as of the last size check
        self.view_size = 0
        # While not None, only these imports ("module.name") may be called; others trap.
        self.allowed: frozenset[str] | None = None
        self._callbacks = []        # keep the ctypes trampolines alive
        linker = wasmtime.Linker(self.store.engine)
        linker_addr = ctypes.cast(linker.ptr(), ctypes.c_void_p).value
        defined = set()
        for imp in module.imports:
            key = (imp.module, imp.name)
            fn = imports.get(key)
            if fn is None or not isinstance(imp.type, wasmtime.FuncType):
                raise LoadError(f"Failed to load Wasm module due to a missing import: {imp.module}.{imp.name}")
            want = _functype(fn.params, fn.results)
            if [str(t) for t in imp.type.params] != [str(t) for t in want.params] or \
                    [str(t) for t in imp.type.results] != [str(t) for t in want.results]:
                raise LoadError("Failed to load Wasm module due to an import type mismatch: "
                                f"{imp.module}.{imp.name}, want: {want}, but host exports: {imp.type}")
            if key in defined:   # Go's wasip1 port imports fd_write twice; one definition serves both
                continue
            defined.add(key)
            cb = _UNCHECKED_CB(self._trampoline(fn, f"{imp.module}.{imp.name}"))
            self._callbacks.append(cb)
            m, n = imp.module.encode(), imp.name.encode()
            err = _define_unchecked(linker_addr, m, len(m), n, len(n),
                                    ctypes.cast(want.ptr(), ctypes.c_void_p).value,
                                    ctypes.cast(cb, ctypes.c_void_p).value, None, None)
            if err:
                raise LoadError(f"cannot define import {imp.module}.{imp.name}")
        # A start section (AssemblyScript's top-level code) runs during instantiation: give it
        # the same deadline as any call.
        self.store.set_epoch_deadline(self.deadline_ticks)
        self.armed_at = epoch
        try:
            self.instance = linker.instantiate(self.store, module)
        except wasmtime.Trap as e:
            raise LoadError(f"Failed to create new Wasm instance: {e.message}") from None
        except wasmtime.WasmtimeError as e:
            raise LoadError(f"Failed to create new Wasm instance: {str(e).splitlines()[0]}") from None
        self.linker = linker
        exports = self.instance.exports(self.store)
        self.export_names = [e.name for e in module.exports]
        self._exports: dict[str, _Export] = {}
        for e in module.exports:
            item = exports[e.name]
            if isinstance(item, wasmtime.Func):
                self._exports[e.name] = _Export(e.name, item, item.type(self.store))
        mem = exports.get("memory") if "memory" in self.export_names else None
        if not isinstance(mem, wasmtime.Memory):
            raise LoadError("Failed to load Wasm module: it exports no memory")
        self.memory = mem    # owns the wasmtime_memory_t that mem_addr points into
        self.mem_addr = ctypes.c_void_p(ctypes.addressof(mem._memory))
        self.malloc = self._exports.get("malloc") or self._exports.get("proxy_on_memory_allocate")

    def export_signatures(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Each exported function's (param types, result types), as "i32"-style names."""
        return {e.name: (tuple(str(t) for t in e.type.params), tuple(str(t) for t in e.type.results))
                for e in self.module.exports if isinstance(e.type, wasmtime.FuncType)}

    # -- host functions -------------------------------------------------------------------------
    def _trampoline(self, fn: HostFunction, key: str):
        """A C callback for `fn`, specialised to its arity so arguments cost one index each.
        It traps instead while the VM is restricted to other imports (`allowed`)."""
        args = ", ".join(f"a[{2 * i}]" + (" & 0xFFFFFFFF" if c == "i" else "")
                         for i, c in enumerate(fn.params))
        store = "a[0] = r & 0xFFFFFFFFFFFFFFFF" if fn.results else "pass"
        src = (f"def cb(env, caller, a, n):\n"
               f"    vm.caller = caller\n"
               f"    if vm.allowed is not None and key not in vm.allowed:\n"
               f"        return vm._trap_for(GuestAbort('restricted_callback'))\n"
               f"    try:\n"
               f"        r = impl({args})\n"
               f"        {store}\n"
               f"        return 0\n"
               f"    except BaseException as e:\n"
               f"        return vm._trap_for(e)\n")
        scope = {"vm": self, "impl": fn.impl, "key": key, "GuestAbort": GuestAbort}
        exec(src, scope)
        return scope["cb"]

    def _trap_for(self, e: BaseException) -> int:
        """A host function raised: trap the guest. GuestAbort/GuestTrap carry their own message;
        anything else is a host bug, kept to be re-raised once the guest call unwinds."""
        if isinstance(e, (GuestAbort, GuestTrap)):
            msg = e.message
        else:
            self.host_error = e
            msg = f"host error: {type(e).__name__}: {e}"
        b = msg.encode()
        return _trap_new(b, len(b)) or 0

    # -- memory -----------------------------------------------------------------------------
    # Each accessor checks its bounds inline (a method call per check costs as much as the access):
    # within the view is the common case; past it, the memory may have grown since the view was made.
    def _refresh_view(self) -> int:
        """Widen the view to the memory's current size (which only grows); return that size."""
        size = _mem_size(self.ctx, self.mem_addr)
        if size != self.view_size:
            base = _mem_data(self.ctx, self.mem_addr)
            # cast: ctypes exports format "<B", which slice assignment from bytes refuses
            self.view = memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B") if size \
                else memoryview(bytearray())
            self.view_size = size
        return size

    def get_memory(self, ptr: int, size: int) -> bytes | None:
        end = ptr + size
        if end > self.view_size and end > self._refresh_view():
            return None
        return self.view[ptr:end].tobytes()

    def set_memory(self, ptr: int, data: bytes) -> bool:
        end = ptr + len(data)
        if end > self.view_size and end > self._refresh_view():
            return False
        self.view[ptr:end] = data
        return True

    def set_word(self, ptr: int, value: int) -> bool:
        if ptr + 4 > self.view_size and ptr + 4 > self._refresh_view():
            return False
        _U32.pack_into(self.view, ptr, value & M32)
        return True

    def set_u64(self, ptr: int, value: int) -> bool:
        if ptr + 8 > self.view_size and ptr + 8 > self._refresh_view():
            return False
        _U64.pack_into(self.view, ptr, value & M64)
        return True

    def get_word(self, ptr: int) -> int | None:
        if ptr + 4 > self.view_size and ptr + 4 > self._refresh_view():
            return None
        return _U32.unpack_from(self.view, ptr)[0]

    def alloc(self, size: int) -> int | None:
        """Guest memory from the module's malloc (or proxy_on_memory_allocate); None on failure."""
        if self.malloc is None:
            return None
        self.allowed = MALLOC_ALLOWED   # cpp-host's allocMemory, which lifts all limits after
        try:
            ptr = self.call(self.malloc, size)
        finally:
            self.allowed = None
        if not ptr or (ptr + size > self.view_size and ptr + size > self._refresh_view()):
            return None
        return ptr

    def copy_to_pointer_size(self, data: bytes, ptr_ptr: int, size_ptr: int) -> bool:
        """cpp-host's copyToPointerSize: malloc in the guest, copy, write (pointer, size)."""
        ptr = 0
        if data:
            ptr = self.alloc(len(data))
            if ptr is None:
                return False
            self.set_memory(ptr, data)
        return self.set_word(ptr_ptr, ptr) and self.set_word(size_ptr, len(data))

    def set_deadline(self, deadline_ms: int) -> None:
        """How long one call into the guest may run (counted in ticker periods, at least one)."""
        self.deadline_ms = deadline_ms
        self.deadline_ticks = max(1, int(deadline_ms / 1000 / EPOCH_TICK_S))
        self.armed_at = -(1 << 60)  # re-arm at the next call

    # -- calls into the guest -----------------------------------------------------------------
    def export(self, name: str) -> _Export | None:
        return self._exports.get(name)

    def call(self, fn: _Export, *args: int) -> int | None:
        """Call a guest export with integer arguments; its one result (i32 as unsigned) or None."""
        slots = fn.slots
        i = 0
        for a in args:
            slots[i] = a     # a c_uint64 slot keeps the low 64 bits of any int
            i += 2
        if self.depth == 0:
            ctx = self.ctx
            # The deadline counts from when it is set; re-arm once a quarter of it has passed
            # (so a call always gets at least 3/4 of it) rather than paying an FFI call each time.
            if epoch - self.armed_at > self.deadline_ticks >> 2:
                _set_deadline(ctx, self.deadline_ticks)
                self.armed_at = epoch
        else:
            ctx = _caller_context(self.caller) if self.caller else self.ctx
        self.depth += 1
        try:
            err = _call_unchecked(ctx, fn.addr, fn.slots_addr, fn.nslots, fn.trap_addr)
        finally:
            self.depth -= 1
        if err or fn.trap.value:   # wasmtime writes the trap slot only on a trap; we clear it then
            trap, fn.trap.value = fn.trap.value, None
            self._raise_trap(fn.name, err, trap)
        return slots[0] & M32 if fn.nresults else None

    def _raise_trap(self, name: str, err: int | None, trap: int | None) -> None:
        if self.host_error is not None and self.depth == 0:
            e, self.host_error = self.host_error, None
            raise e
        if trap:
            t = wasmtime.Trap._from_ptr(ctypes.cast(trap, ctypes.POINTER(ffi.wasm_trap_t)))
            msg = t.message
            if t.trap_code == wasmtime.TrapCode.INTERRUPT:
                # Envoy has no such deadline: its worker would spin in the call for good.
                raise GuestTrap(name, f"the guest ran past its {self.deadline_ms} ms deadline (endless loop?): "
                                f"Envoy has none and would never answer\n{msg}", interrupted=True)
        else:
            msg = str(wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))))
        raise GuestTrap(name, msg)


class GuestAbort(Exception):
    """Raised by a host function to trap the guest with `message` (proc_exit, restricted calls)."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)
