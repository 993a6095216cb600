"""The env.proxy_* host functions, following cpp-host's exports.cc and Envoy's Context.

Each function takes the raw i32/i64 arguments and returns a WasmResult, exactly in cpp-host's
order of checks (argument ranges, then memory, then the context's answer), so a guest sees the
same status for the same mistake. Which functions exist depends on the module's ABI version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envoyext.wasm import headers as H
from envoyext.wasm import wasi
from envoyext.wasm.abi import (
    AbiVersion,
    BufferType,
    LogLevel,
    MapType,
    StreamType,
    WasmResult,
    deserialize_pairs,
    serialize_pairs,
)
from envoyext.wasm.host import HostFunction

if TYPE_CHECKING:
    from envoyext.wasm.context import Wasm

OK = WasmResult.Ok
IMA = WasmResult.InvalidMemoryAccess
BAD = WasmResult.BadArgument
NOT_FOUND = WasmResult.NotFound
# Upper bounds of the type arguments, bound once: an enum attribute costs ~70 ns to look up (EnumType's
# metaclass), and the header and buffer functions check one on every call.
MAP_MAX = MapType.MAX
BUFFER_MAX = BufferType.MAX
STREAM_MAX = StreamType.MAX


def _pairs(data: bytes):
    return [(H.header_text(k), H.header_text(v)) for k, v in deserialize_pairs(data)]


def make_imports(w: "Wasm") -> dict:

    def mem(ptr, size):   # w.vm is created from this table, so it is looked up per call
        return w.vm.get_memory(ptr, size)

    ctx = w.effective     # the context a host call acts on

    # -- logging, time, timers -----------------------------------------------------------------
    def proxy_log(level, ptr, size):
        if level > LogLevel.critical:
            return BAD
        msg = mem(ptr, size)
        if msg is None:
            return IMA
        if level >= w.services.log_level:
            w.services.log(level, H.text(msg))
        return OK

    def proxy_get_log_level(ptr):
        return OK if w.vm.set_word(ptr, w.services.log_level) else IMA

    def proxy_get_current_time_nanoseconds(ptr):
        return OK if w.vm.set_u64(ptr, w.services.now_ns()) else IMA

    def proxy_set_tick_period_milliseconds(period):
        w.set_tick_period(period)
        return OK

    # -- configuration, status, properties --------------------------------------------------------
    def proxy_get_configuration(ptr_ptr, size_ptr):
        data = w.plugin.configuration if w.in_configure else w.plugin.vm_configuration
        return OK if w.vm.copy_to_pointer_size(data, ptr_ptr, size_ptr) else IMA

    def proxy_get_status(code_ptr, ptr_ptr, size_ptr):
        code, message = ctx().root.status
        if not w.vm.set_word(code_ptr, code):
            return IMA
        return OK if w.vm.copy_to_pointer_size(message, ptr_ptr, size_ptr) else IMA

    def proxy_get_property(path_ptr, path_size, ptr_ptr, size_ptr):
        path = mem(path_ptr, path_size)
        if path is None:
            return IMA
        result, value = ctx().properties().get(path)
        if result != OK:
            return result
        return OK if w.vm.copy_to_pointer_size(value, ptr_ptr, size_ptr) else IMA

    def proxy_set_property(key_ptr, key_size, value_ptr, value_size):
        key, value = mem(key_ptr, key_size), mem(value_ptr, value_size)
        if key is None or value is None:
            return IMA
        return ctx().properties().set(key, value)

    # -- stream control ----------------------------------------------------------------------------
    def proxy_continue_request():
        return ctx().continue_stream(StreamType.Request)

    def proxy_continue_response():
        return ctx().continue_stream(StreamType.Response)

    def proxy_continue_stream(t):
        return BAD if t > STREAM_MAX else ctx().continue_stream(t)

    def proxy_close_stream(t):
        return BAD if t > STREAM_MAX else ctx().close_stream(t)

    def proxy_send_local_response(code, details_ptr, details_size, body_ptr, body_size,
                                  pairs_ptr, pairs_size, grpc_status):
        details, body, pairs = mem(details_ptr, details_size), mem(body_ptr, body_size), mem(pairs_ptr, pairs_size)
        if details is None or body is None or pairs is None:
            return IMA
        ctx().send_local_response(code, body, _pairs(pairs), grpc_status, H.text(details))
        return OK

    def proxy_clear_route_cache():
        ctx().clear_route_cache()
        return OK

    def proxy_set_effective_context(cid):
        if cid not in w.contexts:
            return BAD
        w.effective_id = cid
        return OK

    def proxy_done():
        # Only a root context that on_done kept alive is pending, and Envoy keeps none alive.
        return NOT_FOUND

    def proxy_call_foreign_function(name_ptr, name_size, args_ptr, args_size, results_ptr, results_size_ptr):
        if mem(name_ptr, name_size) is None or mem(args_ptr, args_size) is None:
            return IMA
        return WasmResult.NotFound   # the emulator registers no foreign functions

    # -- shared data and queues ------------------------------------------------------------------
    def proxy_get_shared_data(key_ptr, key_size, ptr_ptr, size_ptr, cas_ptr):
        key = mem(key_ptr, key_size)
        if key is None:
            return IMA
        result, value, cas = w.services.shared.get(w.plugin.vm_id, key)
        if result != OK:
            return result
        if not w.vm.copy_to_pointer_size(value, ptr_ptr, size_ptr):
            return IMA
        return OK if w.vm.set_word(cas_ptr, cas) else IMA

    def proxy_set_shared_data(key_ptr, key_size, value_ptr, value_size, cas):
        key, value = mem(key_ptr, key_size), mem(value_ptr, value_size)
        if key is None or value is None:
            return IMA
        return w.services.shared.set(w.plugin.vm_id, key, value, cas)

    def proxy_register_shared_queue(name_ptr, name_size, token_ptr):
        name = mem(name_ptr, name_size)
        if name is None:
            return IMA
        root_id = ctx().root.id
        token = w.services.shared.register_queue(w.plugin.vm_id, name,
                                                 lambda tok: w.queue_ready(root_id, tok))
        return OK if w.vm.set_word(token_ptr, token) else IMA

    def proxy_resolve_shared_queue(vm_ptr, vm_size, name_ptr, name_size, token_ptr):
        vm_id, name = mem(vm_ptr, vm_size), mem(name_ptr, name_size)
        if vm_id is None or name is None:
            return IMA
        token = w.services.shared.resolve_queue(H.text(vm_id) or w.plugin.vm_id, name)
        if token == 0 or w.failed:
            return WasmResult.NotFound
        return OK if w.vm.set_word(token_ptr, token) else IMA

    def proxy_enqueue_shared_queue(token, value_ptr, value_size):
        value = mem(value_ptr, value_size)
        if value is None:
            return IMA
        return w.services.shared.enqueue(token, value)

    def proxy_dequeue_shared_queue(token, ptr_ptr, size_ptr):
        result, value = w.services.shared.dequeue(token)
        if result != OK:
            return result
        return OK if w.vm.copy_to_pointer_size(value, ptr_ptr, size_ptr) else IMA

    # -- header maps -------------------------------------------------------------------------------
    abi010 = w.abi == AbiVersion.V0_1_0

    def proxy_get_header_map_value(t, key_ptr, key_size, ptr_ptr, size_ptr):
        if t > MAP_MAX:
            return BAD
        key = mem(key_ptr, key_size)
        if key is None:
            return IMA
        c = ctx()
        m = c.const_map(t)
        if m is None and not c.access_log_phase:
            return BAD
        # A map gone by the access-log phase reads as a missing header; 0.1.0 answers Ok and "".
        value = None if m is None else H.get(m, H.header_text(key))
        if value is None:
            if not abi010:
                return NOT_FOUND
            value = ""
        return OK if w.vm.copy_to_pointer_size(H.header_bytes(value), ptr_ptr, size_ptr) else IMA

    def proxy_get_header_map_pairs(t, ptr_ptr, size_ptr):
        if t > MAP_MAX:
            return BAD
        m = ctx().const_map(t) or []
        data = serialize_pairs([(H.header_bytes(k), H.header_bytes(v)) for k, v in m])
        return OK if w.vm.copy_to_pointer_size(data, ptr_ptr, size_ptr) else IMA

    def proxy_set_header_map_pairs(t, ptr, size):
        if t > MAP_MAX:
            return BAD
        data = mem(ptr, size)
        if data is None:
            return IMA
        m = ctx().mutable_map(t)
        if m is None:
            return BAD
        H.set_all(m, _pairs(data), H.INLINE_BY_MAP[t])
        return OK

    def _mutate(t, key_ptr, key_size, value_ptr, value_size, op):
        if t > MAP_MAX:
            return BAD
        key = mem(key_ptr, key_size)
        value = mem(value_ptr, value_size) if value_ptr is not None else b""
        if key is None or value is None:
            return IMA
        m = ctx().mutable_map(t)
        if m is None:
            return BAD
        op(m, H.header_text(key), H.header_text(value), H.INLINE_BY_MAP[t])
        return OK

    def proxy_add_header_map_value(t, kp, ks, vp, vs):
        return _mutate(t, kp, ks, vp, vs, H.add)

    def proxy_replace_header_map_value(t, kp, ks, vp, vs):
        return _mutate(t, kp, ks, vp, vs, H.replace)

    def proxy_remove_header_map_value(t, kp, ks):
        return _mutate(t, kp, ks, None, 0, lambda m, k, v, inline: H.remove(m, k))

    def proxy_get_header_map_size(t, result_ptr):
        if t > MAP_MAX:
            return BAD
        m = ctx().mutable_map(t)
        if m is None:
            return BAD
        return OK if w.vm.set_word(result_ptr, H.byte_size(m)) else IMA

    # -- buffers ---------------------------------------------------------------------------------
    def proxy_get_buffer_bytes(t, start, length, ptr_ptr, size_ptr):
        if t > BUFFER_MAX:
            return BAD
        buf = ctx().buffer(t)
        if buf is None:
            return NOT_FOUND
        if start + length > 0xFFFFFFFF:   # start > start + length in cpp-host's 32-bit Word
            return BAD
        size = buf.size()
        if start > size:
            length = 0
        elif start + length > size:
            length = size - start
        if length == 0:
            return OK if (w.vm.set_word(ptr_ptr, 0) and w.vm.set_word(size_ptr, 0)) else IMA
        return OK if w.vm.copy_to_pointer_size(buf.data[start:start + length], ptr_ptr, size_ptr) else IMA

    def proxy_get_buffer_status(t, length_ptr, flags_ptr):
        if t > BUFFER_MAX:
            return BAD
        buf = ctx().buffer(t)
        if buf is None:
            return NOT_FOUND
        if not w.vm.set_word(length_ptr, buf.size()):
            return IMA
        return OK if w.vm.set_word(flags_ptr, 0) else IMA

    def proxy_set_buffer_bytes(t, start, length, ptr, size):
        if t > BUFFER_MAX:
            return BAD
        buf = ctx().buffer(t)
        if buf is None:
            return NOT_FOUND
        data = mem(ptr, size)
        if data is None:
            return IMA
        return buf.set(start, length, data)

    # -- HTTP and gRPC callouts ------------------------------------------------------------------
    def proxy_http_call(uri_ptr, uri_size, hp, hs, body_ptr, body_size, tp, ts, timeout, token_ptr):
        uri, body, hdrs, trls = mem(uri_ptr, uri_size), mem(body_ptr, body_size), mem(hp, hs), mem(tp, ts)
        if uri is None or body is None or hdrs is None or trls is None:
            return IMA
        if not w.vm.set_word(token_ptr, 0):   # verify the token memory before starting anything
            return IMA
        timeout = timeout - (1 << 32) if timeout & 0x80000000 else timeout
        result, token = w.http_call(H.text(uri), _pairs(hdrs), body, _pairs(trls), timeout)
        w.vm.set_word(token_ptr, token)
        return result

    def _grpc_open(service_ptr, service_size, name_ptr, name_size, method_ptr, method_size, md_ptr, md_size,
                   extra=()):
        parts = [mem(service_ptr, service_size), mem(name_ptr, name_size), mem(method_ptr, method_size),
                 mem(md_ptr, md_size), *extra]
        if any(p is None for p in parts):
            return IMA
        # Envoy parses `service` as a GrpcService proto, else takes it as a cluster name; with no
        # such cluster the call fails with ParseFailure. The emulator runs no gRPC upstreams.
        cluster = H.text(parts[0])
        if not w.services.has_cluster(cluster):
            return WasmResult.ParseFailure
        return WasmResult.InternalFailure

    def proxy_grpc_call(sp, ss, np_, ns, mp, ms, mdp, mds, rp, rs, timeout, token_ptr):
        req = mem(rp, rs)
        return _grpc_open(sp, ss, np_, ns, mp, ms, mdp, mds, extra=(req,))

    def proxy_grpc_stream(sp, ss, np_, ns, mp, ms, mdp, mds, token_ptr):
        return _grpc_open(sp, ss, np_, ns, mp, ms, mdp, mds)

    def _grpc_token(token):
        # No call or stream ever opens, so every token is unknown: BadArgument for an http-call id.
        return BAD if token & 3 == 0 or token & 3 == 3 else WasmResult.NotFound

    def proxy_grpc_send(token, ptr, size, end_stream):
        if mem(ptr, size) is None:
            return IMA
        return BAD if token & 3 != 2 else WasmResult.NotFound

    def proxy_grpc_cancel(token):
        return _grpc_token(token)

    def proxy_grpc_close(token):
        return _grpc_token(token)

    # -- metrics -------------------------------------------------------------------------------------
    def proxy_define_metric(metric_type, name_ptr, name_size, id_ptr):
        name = mem(name_ptr, name_size)
        if name is None:
            return IMA
        result, mid = w.metrics.define(metric_type, H.text(name))
        if result != OK:
            return result
        return OK if w.vm.set_word(id_ptr, mid) else IMA

    def proxy_increment_metric(mid, offset):
        return w.metrics.increment(mid, offset - (1 << 64) if offset >> 63 else offset)

    def proxy_record_metric(mid, value):
        return w.metrics.record(mid, value)

    def proxy_get_metric(mid, ptr):
        result, value = w.metrics.get(mid)
        if result != OK:
            return result
        return OK if w.vm.set_u64(ptr, value) else IMA

    # -- emscripten and pthread leftovers ----------------------------------------------------------
    def emscripten_notify_memory_growth(index):
        return None

    def pthread_equal(a, b):
        return 1 if a == b else 0

    i = "i"
    table = {
        "proxy_log": ("iii", i, proxy_log),
        "proxy_get_current_time_nanoseconds": ("i", i, proxy_get_current_time_nanoseconds),
        "proxy_set_tick_period_milliseconds": ("i", i, proxy_set_tick_period_milliseconds),
        "proxy_get_status": ("iii", i, proxy_get_status),
        "proxy_get_property": ("iiii", i, proxy_get_property),
        "proxy_set_property": ("iiii", i, proxy_set_property),
        "proxy_send_local_response": ("iiiiiiii", i, proxy_send_local_response),
        "proxy_set_effective_context": ("i", i, proxy_set_effective_context),
        "proxy_done": ("", i, proxy_done),
        "proxy_call_foreign_function": ("iiiiii", i, proxy_call_foreign_function),
        "proxy_get_shared_data": ("iiiii", i, proxy_get_shared_data),
        "proxy_set_shared_data": ("iiiii", i, proxy_set_shared_data),
        "proxy_register_shared_queue": ("iii", i, proxy_register_shared_queue),
        "proxy_resolve_shared_queue": ("iiiii", i, proxy_resolve_shared_queue),
        "proxy_enqueue_shared_queue": ("iii", i, proxy_enqueue_shared_queue),
        "proxy_dequeue_shared_queue": ("iii", i, proxy_dequeue_shared_queue),
        "proxy_get_header_map_value": ("iiiii", i, proxy_get_header_map_value),
        "proxy_add_header_map_value": ("iiiii", i, proxy_add_header_map_value),
        "proxy_replace_header_map_value": ("iiiii", i, proxy_replace_header_map_value),
        "proxy_remove_header_map_value": ("iii", i, proxy_remove_header_map_value),
        "proxy_get_header_map_pairs": ("iii", i, proxy_get_header_map_pairs),
        "proxy_set_header_map_pairs": ("iii", i, proxy_set_header_map_pairs),
        "proxy_get_header_map_size": ("ii", i, proxy_get_header_map_size),
        "proxy_get_buffer_status": ("iii", i, proxy_get_buffer_status),
        "proxy_get_buffer_bytes": ("iiiii", i, proxy_get_buffer_bytes),
        "proxy_set_buffer_bytes": ("iiiii", i, proxy_set_buffer_bytes),
        "proxy_http_call": ("iiiiiiiiii", i, proxy_http_call),
        "proxy_grpc_call": ("iiiiiiiiiiii", i, proxy_grpc_call),
        "proxy_grpc_stream": ("iiiiiiiii", i, proxy_grpc_stream),
        "proxy_grpc_close": ("i", i, proxy_grpc_close),
        "proxy_grpc_cancel": ("i", i, proxy_grpc_cancel),
        "proxy_grpc_send": ("iiii", i, proxy_grpc_send),
        "proxy_define_metric": ("iiii", i, proxy_define_metric),
        "proxy_increment_metric": ("iI", i, proxy_increment_metric),
        "proxy_record_metric": ("iI", i, proxy_record_metric),
        "proxy_get_metric": ("ii", i, proxy_get_metric),
        "emscripten_notify_memory_growth": ("i", "", emscripten_notify_memory_growth),
        "pthread_equal": ("ii", i, pthread_equal),
    }
    # ABI-specific functions, registered exactly as cpp-host's registerCallbacks does.
    if w.abi == AbiVersion.V0_1_0:
        table["proxy_get_configuration"] = ("ii", i, proxy_get_configuration)
        table["proxy_continue_request"] = ("", i, proxy_continue_request)
        table["proxy_continue_response"] = ("", i, proxy_continue_response)
        table["proxy_clear_route_cache"] = ("", i, proxy_clear_route_cache)
    else:
        table["proxy_continue_stream"] = ("i", i, proxy_continue_stream)
        table["proxy_close_stream"] = ("i", i, proxy_close_stream)
        if w.abi == AbiVersion.V0_2_1:
            table["proxy_get_log_level"] = ("i", i, proxy_get_log_level)

    out = {("env", name): HostFunction(params, results, impl) for name, (params, results, impl) in table.items()}
    for name, fn in wasi.make_wasi(w).items():
        for module in ("wasi_snapshot_preview1", "wasi_unstable"):
            out[(module, name)] = fn
    return out
