"""Helpers for the build-step and C SDK tests.

`MiniHost` is a deliberately small proxy-wasm host on wasmtime: enough of Envoy's behaviour
(cpp-host's exports.cc, Envoy's Context) to drive the SDK's dispatch and wrappers one callback
at a time and to see exactly what the module asked of the host. It is not the emulator.
"""

from __future__ import annotations

import struct
from pathlib import Path

import wasmtime

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SMOKE_C = REPO / "tests" / "wasm" / "modules" / "sdk_smoke.c"
PROBE_C = HERE / "sdk_probe.c"
STRICT = ["-Wall", "-Wextra", "-Werror"]

OK, NOT_FOUND, BAD_ARGUMENT, CAS_MISMATCH = 0, 1, 2, 8


def serialize_pairs(pairs) -> bytes:
    """The spec's map serialization, written independently of the SDK's."""
    if not pairs:
        return b""
    out = struct.pack("<I", len(pairs))
    for k, v in pairs:
        out += struct.pack("<II", len(k), len(v))
    for k, v in pairs:
        out += k + b"\0" + v + b"\0"
    return out


def parse_pairs(data: bytes):
    if len(data) in (0, 1) and data in (b"", b"\0"):
        return []
    (n,) = struct.unpack_from("<I", data)
    sizes = [struct.unpack_from("<II", data, 4 + 8 * i) for i in range(n)]
    pos, out = 4 + 8 * n, []
    for k, v in sizes:
        key = data[pos:pos + k]
        assert data[pos + k] == 0
        pos += k + 1
        val = data[pos:pos + v]
        assert data[pos + v] == 0
        pos += v + 1
        out.append((key, val))
    assert pos == len(data)
    return out


class MiniHost:
    """One VM, driven callback by callback. Maps and buffers are per context id."""

    def __init__(self, wasm: Path, *, log_level: int = 0):
        self.engine = wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        self.module = wasmtime.Module.from_file(self.engine, str(wasm))
        self.log_level = log_level
        self.logs: list[tuple[int, str]] = []
        self.maps: dict[tuple[int, int], list[tuple[bytes, bytes]]] = {}
        self.buffers: dict[tuple[int, int], bytes] = {}
        self.properties: dict[bytes, bytes] = {}
        self.shared: dict[bytes, tuple[bytes, int]] = {}
        self.metrics: dict[int, tuple[int, bytes, int]] = {}
        self.local_responses: list[dict] = []
        self.http_calls: list[dict] = []
        self.continued: list[tuple[int, int]] = []
        self.effective_sets: list[int] = []
        self.tick_period = None
        self.contexts: set[int] = set()
        self.parents: dict[int, int] = {}  # stream context -> plugin context
        self.current = 0

        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        self.store.set_wasi(wasmtime.WasiConfig())
        for imp in self.module.imports:
            if imp.module == "env" and hasattr(self, imp.name):
                linker.define_func("env", imp.name, imp.type, self._unsigned(imp.type, getattr(self, imp.name)))
        linker.define_unknown_imports_as_traps(self.module)
        self.instance = linker.instantiate(self.store, self.module)
        self.exports = self.instance.exports(self.store)
        self.memory = self.exports["memory"]
        self.call("_initialize")

    @staticmethod
    def _unsigned(ty, fn):
        """wasmtime hands i32s over signed; the ABI's i32s are sizes, pointers and ids."""
        is_i32 = [str(p) == "i32" for p in ty.params]

        def call(*args):
            return fn(*(a & 0xFFFFFFFF if u else a for a, u in zip(args, is_i32)))
        return call

    # -- guest plumbing ---------------------------------------------------------------------
    def call(self, name, *args):
        return self.exports[name](self.store, *args)

    def on(self, name, context_id, *args):
        """Call proxy_on_<name> as the host does: the context becomes the current one."""
        self.current = context_id
        return self.call(f"proxy_on_{name}", context_id, *args)

    def read(self, ptr: int, size: int) -> bytes:
        return bytes(self.memory.read(self.store, ptr, ptr + size)) if size else b""

    def cstr(self, ptr: int) -> bytes:
        out = bytearray()
        while (b := self.read(ptr + len(out), 1)) != b"\0":
            out += b
        return bytes(out)

    def write(self, ptr: int, data: bytes):
        self.memory.write(self.store, data, ptr)

    def u32(self, ptr: int, v: int):
        self.write(ptr, struct.pack("<I", v))

    def alloc(self, data: bytes) -> int:
        """Copy into guest memory through its malloc export, as cpp-host's allocMemory does."""
        ptr = self.call("malloc", len(data))
        assert ptr, "guest malloc failed"
        self.write(ptr, data)
        return ptr

    def give(self, data: bytes, ptr_ptr: int, size_ptr: int) -> int:
        """cpp-host's copyToPointerSize: nothing allocated for empty data (pointer 0)."""
        self.u32(ptr_ptr, self.alloc(data) if data else 0)
        self.u32(size_ptr, len(data))
        return OK

    def guest_str(self, s: bytes) -> int:
        return self.alloc(s + b"\0")

    # -- lifecycle helpers ------------------------------------------------------------------
    def start_root(self, root_id: int, config: bytes = b"") -> bool:
        self.contexts.add(root_id)
        self.on("context_create", root_id, 0)
        self.buffers[(root_id, 7)] = config
        ok = self.on("configure", root_id, len(config))
        del self.buffers[(root_id, 7)]
        return bool(ok)

    def request(self, ctx_id: int, root_id: int, headers: list[tuple[bytes, bytes]], *, eos=True) -> int:
        self.contexts.add(ctx_id)
        self.parents[ctx_id] = root_id
        self.on("context_create", ctx_id, root_id)
        self.maps[(ctx_id, 0)] = list(headers)
        return self.on("request_headers", ctx_id, len(headers), int(eos))

    def finish(self, ctx_id: int):
        self.on("log", ctx_id)
        assert self.on("done", ctx_id) == 1
        self.on("delete", ctx_id)
        self.contexts.discard(ctx_id)

    def headers(self, ctx_id: int, map_type: int = 0) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.maps.get((ctx_id, map_type), [])}

    # -- env.proxy_* (the subset the probe uses), cpp-host semantics ------------------------
    def proxy_log(self, level, ptr, size):
        if level > 5:
            return BAD_ARGUMENT
        self.logs.append((level, self.read(ptr, size).decode("utf-8", "replace")))
        return OK

    def proxy_get_log_level(self, ptr):
        self.u32(ptr, self.log_level)
        return OK

    def proxy_set_effective_context(self, cid):
        if cid not in self.contexts:
            return BAD_ARGUMENT
        self.current = cid
        self.effective_sets.append(cid)
        return OK

    def proxy_set_tick_period_milliseconds(self, ms):
        self.tick_period = ms
        return OK

    def proxy_get_current_time_nanoseconds(self, ptr):
        self.write(ptr, struct.pack("<Q", 1_700_000_000_000_000_000))
        return OK

    # Call and gRPC responses live on the plugin context; Envoy's getMap/getBuffer read them
    # through rootContext(), so they stay readable after proxy_set_effective_context(stream).
    ROOT_BUFFERS, ROOT_MAPS = {4, 5}, {4, 5, 6, 7}

    def _owner(self, t, root_types):
        return self.parents.get(self.current, self.current) if t in root_types else self.current

    def _buffer(self, t):
        return self.buffers.get((self._owner(t, self.ROOT_BUFFERS), t))

    def proxy_get_buffer_status(self, t, size_ptr, flags_ptr):
        buf = self._buffer(t)
        if buf is None:
            return NOT_FOUND
        self.u32(size_ptr, len(buf))
        self.u32(flags_ptr, 0)
        return OK

    def proxy_get_buffer_bytes(self, t, start, length, ptr_ptr, size_ptr):
        buf = self._buffer(t)
        if buf is None:
            return NOT_FOUND
        if start > len(buf):
            length = 0
        length = min(length, len(buf) - start) if length else 0
        return self.give(buf[start:start + length], ptr_ptr, size_ptr)

    def proxy_set_buffer_bytes(self, t, start, size, ptr, length):
        buf = self._buffer(t)
        if buf is None:
            return NOT_FOUND
        data = self.read(ptr, length)
        if start == 0:  # Envoy: drain `size`, prepend
            self.buffers[(self._owner(t, self.ROOT_BUFFERS), t)] = data + buf[size:]
        elif start >= len(buf):  # append
            self.buffers[(self._owner(t, self.ROOT_BUFFERS), t)] = buf + data
        else:
            return BAD_ARGUMENT
        return OK

    def _map(self, t):
        return self.maps.setdefault((self._owner(t, self.ROOT_MAPS), t), [])

    def proxy_get_header_map_value(self, t, kp, ks, vpp, vsp):
        key = self.read(kp, ks).lower()
        for k, v in self._map(t):
            if k == key:
                return self.give(v, vpp, vsp)
        return NOT_FOUND

    def proxy_add_header_map_value(self, t, kp, ks, vp, vs):
        self._map(t).append((self.read(kp, ks).lower(), self.read(vp, vs)))
        return OK

    def proxy_replace_header_map_value(self, t, kp, ks, vp, vs):
        key, val = self.read(kp, ks).lower(), self.read(vp, vs)
        m = [(k, v) for k, v in self._map(t) if k != key]
        self.maps[(self._owner(t, self.ROOT_MAPS), t)] = m + [(key, val)]
        return OK

    def proxy_remove_header_map_value(self, t, kp, ks):
        key = self.read(kp, ks).lower()
        self.maps[(self._owner(t, self.ROOT_MAPS), t)] = [(k, v) for k, v in self._map(t) if k != key]
        return OK

    def proxy_get_header_map_pairs(self, t, pp, sp):
        return self.give(serialize_pairs(self._map(t)), pp, sp)

    def proxy_set_header_map_pairs(self, t, ptr, size):
        self.maps[(self._owner(t, self.ROOT_MAPS), t)] = parse_pairs(self.read(ptr, size))
        return OK

    def proxy_get_header_map_size(self, t, sp):
        self.u32(sp, sum(len(k) + len(v) for k, v in self._map(t)))  # Envoy: byteSize()
        return OK

    def proxy_send_local_response(self, code, dp, ds, bp, bs, hp, hs, grpc):
        self.local_responses.append(dict(context=self.current, code=code, details=self.read(dp, ds),
                                         body=self.read(bp, bs), headers=parse_pairs(self.read(hp, hs)),
                                         grpc=grpc))
        return OK

    def proxy_continue_stream(self, stream):
        self.continued.append((self.current, stream))
        return OK

    def proxy_http_call(self, up, us, hp, hs, bp, bs, tp, ts, timeout, token_ptr):
        token = len(self.http_calls) + 1
        self.http_calls.append(dict(context=self.current, upstream=self.read(up, us),
                                    headers=parse_pairs(self.read(hp, hs)), body=self.read(bp, bs),
                                    trailers=parse_pairs(self.read(tp, ts)), timeout=timeout, token=token))
        self.u32(token_ptr, token)
        return OK

    def proxy_get_property(self, pp, ps, vpp, vsp):
        path = self.read(pp, ps)
        if path not in self.properties:
            return NOT_FOUND
        return self.give(self.properties[path], vpp, vsp)

    def proxy_get_shared_data(self, kp, ks, vpp, vsp, cas_ptr):
        key = self.read(kp, ks)
        if key not in self.shared:
            return NOT_FOUND
        value, cas = self.shared[key]
        self.u32(cas_ptr, cas)
        return self.give(value, vpp, vsp)

    def proxy_set_shared_data(self, kp, ks, vp, vs, cas):
        key = self.read(kp, ks)
        old = self.shared.get(key)
        if cas and old and old[1] != cas:
            return CAS_MISMATCH
        self.shared[key] = (self.read(vp, vs), (old[1] + 1) if old else 1)
        return OK

    def proxy_define_metric(self, t, np_, ns, id_ptr):
        mid = len(self.metrics) + 1
        self.metrics[mid] = (t, self.read(np_, ns), 0)
        self.u32(id_ptr, mid)
        return OK

    def proxy_increment_metric(self, mid, delta):
        if mid not in self.metrics:
            return NOT_FOUND
        t, name, v = self.metrics[mid]
        self.metrics[mid] = (t, name, v + delta)
        return OK
