"""Contexts and their lifecycle, as cpp-host's WasmBase/ContextBase and Envoy's Context drive them.

`Wasm` is one VM with its root context for one plugin (cpp-host's WasmBase + Envoy's Wasm):
it starts the VM (_initialize/main or _start), creates the root context, runs on_vm_start and
on_configure, fires ticks, queues deferred work (callout answers, queue wake-ups) and records a
VM failure. `HttpContext` is one stream's context (Envoy's Context as an HTTP filter): it turns
each filter callback into the guest call, converts the result as Envoy does, and exposes the
stream's header maps and buffers to the host functions only while Envoy would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from envoyext.emulated.stream import LocalReply
from envoyext.wasm import abi
from envoyext.wasm import headers as H
from envoyext.wasm.abi import (
    AbiVersion,
    BufferType,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    MapType,
    StreamType,
    WasmResult,
)
from envoyext.wasm.host import DEFAULT_DEADLINE_MS, GuestTrap, LoadError, WasmVm
from envoyext.wasm.metrics import MetricStore, VmMetrics
from envoyext.wasm.shared import SharedState

Headers = list  # list[tuple[str, str]], mutated in place


class Properties(Protocol):
    """The attributes one context can see: `envoyext.wasm.properties.PropertySource`, which reads
    contexts (so this module names only what it asks of it)."""

    def get(self, path: bytes) -> tuple[WasmResult, bytes]: ...
    def set(self, path: bytes, value: bytes) -> WasmResult: ...


@dataclass
class Plugin:
    """What Envoy's PluginConfig says about one plugin."""
    name: str
    root_id: str = ""
    vm_id: str = ""
    configuration: bytes = b""
    vm_configuration: bytes = b""
    allow_on_headers_stop_iteration: bool = False
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class Services:
    """What the surrounding Envoy provides a VM: time, logging, shared state, stats, clusters."""
    now_ns: Callable[[], int]
    monotonic_ns: Callable[[], int]
    log: Callable[[int, str], None]                 # (proxy_log_level, message)
    shared: SharedState = field(default_factory=SharedState)
    metrics: MetricStore = field(default_factory=MetricStore)
    log_level: int = 0                              # Envoy's wasm logger level (trace)
    has_cluster: Callable[[str], bool] = lambda name: False
    memory_limit: int = abi.MAX_MEMORY_BYTES
    deadline_ms: int = DEFAULT_DEADLINE_MS


@dataclass
class HttpCall:
    """One proxy_http_call in flight."""
    token: int
    cluster: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]
    timeout_ms: int
    context_id: int


@dataclass
class HttpCallResponse:
    headers: list[tuple[str, str]]     # with :status
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)


class Buffer:
    """A byte buffer the guest may read and (if mutable) rewrite, with Envoy's copyFrom rules."""
    __slots__ = ("data", "mutable")

    def __init__(self, data: bytes = b"", mutable: bool = False):
        self.data = data
        self.mutable = mutable

    def size(self) -> int:
        return len(self.data)

    def set(self, start: int, length: int, value: bytes) -> WasmResult:
        if not self.mutable:
            return WasmResult.BadArgument
        if start == 0:
            self.data = value + self.data[length:]
        elif start >= len(self.data):
            self.data = self.data + value
        else:
            return WasmResult.BadArgument
        return WasmResult.Ok


class Context:
    """cpp-host's ContextBase: an id, a root, and what the host functions may touch right now."""
    access_log_phase = False   # an HttpContext's on_log: maps read from the finished stream

    def __init__(self, wasm: "Wasm", cid: int, root: "RootContext | None"):
        self.wasm = wasm
        self.id = cid
        self.root = root or self          # type: ignore[assignment]
        self.created_in_vm = False

    # Defaults: no stream, so no maps and no stream buffers.
    def mutable_map(self, t: int) -> Headers | None:
        return None

    def const_map(self, t: int) -> Headers | None:
        if t == MapType.HttpCallResponseHeaders and self.root.http_call_response is not None:
            return self.root.http_call_response.headers
        if t == MapType.HttpCallResponseTrailers and self.root.http_call_response is not None:
            return self.root.http_call_response.trailers
        return None

    def buffer(self, t: int) -> Buffer | None:
        w = self.wasm
        if t == BufferType.VmConfiguration:
            return Buffer(w.plugin.vm_configuration)
        if t == BufferType.PluginConfiguration:
            return Buffer(w.plugin.configuration) if w.in_configure else None
        if t == BufferType.HttpCallResponseBody:
            r = self.root.http_call_response
            return None if r is None else Buffer(r.body)
        if t == BufferType.CallData:
            return w.call_data
        if t in (BufferType.GrpcReceiveBuffer, BufferType.HttpRequestBody, BufferType.HttpResponseBody,
                 BufferType.DownstreamData, BufferType.UpstreamData):
            return Buffer()
        return None

    def continue_stream(self, t: int) -> WasmResult:
        return WasmResult.Unimplemented if t == StreamType.Upstream else WasmResult.Ok

    def close_stream(self, t: int) -> WasmResult:
        # Envoy resets the stream for Request/Response; the emulator does not model the reset.
        return WasmResult.Ok

    def send_local_response(self, status: int, body: bytes, headers, grpc_status: int, details: str) -> None:
        pass

    def clear_route_cache(self) -> None:
        pass

    def properties(self) -> Properties:
        return self.wasm.property_source(self)


class RootContext(Context):
    def __init__(self, wasm: "Wasm", cid: int):
        super().__init__(wasm, cid, None)
        self.http_call_response: HttpCallResponse | None = None
        self.status: tuple[int, bytes] = (0, b"")


# Built once: these are tested on every header or body access (enum attributes are slow to look up).
_HTTP_BODIES = frozenset((BufferType.HttpRequestBody, BufferType.HttpResponseBody))
_STREAM_MAPS = frozenset((MapType.RequestHeaders, MapType.RequestTrailers, MapType.ResponseHeaders,
                          MapType.ResponseTrailers))


class HttpContext(Context):
    """One HTTP stream (Envoy's Context as a StreamFilter). Maps are the stream's own lists."""

    def __init__(self, wasm: "Wasm", cid: int, root: RootContext, stream: Any):
        super().__init__(wasm, cid, root)
        self.stream = stream
        self.maps: dict[int, Headers | None] = {}     # what Envoy's *_headers_ pointers hold now
        self.body: dict[int, Buffer | None] = dict.fromkeys(_HTTP_BODIES)
        self.local_reply: LocalReply | None = None          # proxy_send_local_response's, once the call returned
        self.continued: set[int] = set()               # StreamTypes proxy_continue_stream resumed

    def mutable_map(self, t: int) -> Headers | None:
        # Envoy's getMap returns whatever the stream still holds, even while logging.
        return self.maps.get(t)

    def const_map(self, t: int) -> Headers | None:
        if self.access_log_phase:
            s = self.stream
            if t == MapType.RequestHeaders:
                return s.request_headers
            if t == MapType.ResponseHeaders:
                return s.response_headers
            if t == MapType.ResponseTrailers:
                return s.response_trailers
            if t == MapType.RequestTrailers:
                return None
        if t in _STREAM_MAPS:
            return self.maps.get(t)
        return super().const_map(t)

    def buffer(self, t: int) -> Buffer | None:
        if t in _HTTP_BODIES:
            return self.body[t] or Buffer()
        return super().buffer(t)

    def continue_stream(self, t: int) -> WasmResult:
        if t == StreamType.Request:
            # Envoy forgets the request-side maps and buffer once the stream continues.
            self.maps.pop(MapType.RequestHeaders, None)
            self.maps.pop(MapType.RequestTrailers, None)
            self.body[BufferType.HttpRequestBody] = None
            self.wasm.after_call(lambda: self.continued.add(StreamType.Request))
            return WasmResult.Ok
        if t == StreamType.Response:
            self.wasm.after_call(lambda: self.continued.add(StreamType.Response))
            return WasmResult.Ok
        if t == StreamType.Downstream:
            return WasmResult.Ok
        if t == StreamType.Upstream:
            return WasmResult.Unimplemented
        return WasmResult.BadArgument

    def send_local_response(self, status, body, headers, grpc_status, details) -> None:
        # Envoy defers the reply until the VM call returns; the first one wins. Its headers go
        # into the reply's header map with addCopy: lower-cased, inline names joined.
        reply_headers: Headers = []
        for k, v in headers:
            H.add(reply_headers, k, v, H.INLINE_BY_MAP[MapType.ResponseHeaders])
        reply = LocalReply(status, body, reply_headers, details.replace(" ", "_").replace("\t", "_"),
                      grpc_status if 0 <= grpc_status <= 16 else None)

        def send():
            if self.local_reply is None:
                self.local_reply = reply
        self.wasm.after_call(send)

    def clear_route_cache(self) -> None:
        clear = getattr(self.stream, "clear_route_cache", None)
        if clear is not None:
            clear()


class Wasm:
    """One VM running one plugin: cpp-host's WasmBase with Envoy's Wasm around it."""

    def __init__(self, module, plugin: Plugin, services: Services, imports_factory,
                 property_factory: Callable[["Context"], Properties]):
        self.plugin = plugin
        self.services = services
        self.property_source = property_factory
        self.abi = abi.abi_version(e.name for e in module.exports)
        if self.abi == AbiVersion.Unknown:
            raise LoadError("Missing or unknown Proxy-Wasm ABI version")
        self.metrics = VmMetrics(services.metrics)
        self.contexts: dict[int, Context] = {}
        self.next_context_id = 1
        self.current: Context | None = None
        self.effective_id = 0
        self.in_configure = False
        self.call_data = Buffer()
        self.actions: deque[Callable[[], None]] = deque()
        self.pending: deque[Callable[[], None]] = deque()   # work for later turns of the event loop
        self.http_calls: dict[int, HttpCall] = {}
        self.next_http_call = 0
        self.tick_period_ms = 0
        self.next_tick_ns: int | None = None
        self.failure: GuestTrap | None = None
        self.failed = False   # failure is not None (a plain attribute: read after every callback)
        self.vm = WasmVm(module, imports_factory(self), memory_limit=services.memory_limit,
                         deadline_ms=services.deadline_ms)
        self._fn = {name: self.vm.export(name) for name in self.vm.export_names}
        failures = abi.export_failures(self.abi, self.vm.export_signatures())
        if failures:
            raise LoadError(failures[0], fix=f"export it with the signature proxy-wasm ABI {self.abi.value} wants")
        if self.vm.malloc is None:
            raise LoadError("Wasm module is missing malloc function.")
        self.vm_context = Context(self, 0, None)
        self.root: RootContext | None = None

    # -- calling the guest -----------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return self._fn.get(name) is not None

    def call(self, ctx: Context, name: str, *args: int) -> int | None:
        """One top-level call into the guest on behalf of `ctx` (cpp-host's DeferAfterCallActions
        scope: actions queued by host functions run when it returns). A trap fails the VM."""
        fn = self._fn.get(name)
        if fn is None or self.failure is not None:
            return None
        # As cpp-host's SaveRestoreContext: each call starts with no effective context, and the
        # caller's current/effective contexts come back when it returns.
        prev, prev_effective = self.current, self.effective_id
        self.current, self.effective_id = ctx, 0
        try:
            return self.vm.call(fn, *args)
        except GuestTrap as e:
            self.fail(e)
            return None
        finally:
            self.current, self.effective_id = prev, prev_effective
            if prev is None and self.actions:
                self.run_actions()

    def fail(self, e: GuestTrap) -> None:
        if self.failure is None:
            self.failure = e
            self.failed = True
            self.services.log(-1, f"Wasm VM failed {e}")

    def after_call(self, action: Callable[[], None]) -> None:
        self.actions.append(action)

    def run_actions(self) -> None:
        while self.actions:
            self.actions.popleft()()

    def effective(self) -> Context:
        """contextOrEffectiveContext(): proxy_set_effective_context's choice while it exists."""
        if self.effective_id:
            c = self.contexts.get(self.effective_id)
            if c is not None:
                return c
        return self.current or self.vm_context

    def alloc_context_id(self) -> int:
        cid = self.next_context_id
        self.next_context_id += 1
        return cid

    # -- VM start, plugin start and configure (cpp-host's initialize/startVm/start/configure) -------
    def start(self) -> None:
        """_initialize (+ main / __main_void) or _start, with only the WASI and logging calls allowed."""
        self.vm.allowed = abi.STARTUP_ALLOWED
        try:
            if self.has("_initialize"):
                self.call(self.vm_context, "_initialize")
                if self.has("main") and self.failure is None:
                    self.call(self.vm_context, "main", 0, 0)
                elif self.has("__main_void") and self.failure is None:
                    self.call(self.vm_context, "__main_void")
            elif self.has("_start"):
                self.call(self.vm_context, "_start")
        finally:
            self.vm.allowed = None
        if self.failure is not None:
            raise LoadError(f"Failed to initialize Wasm code: {self.failure}")

    def start_plugin(self) -> RootContext:
        """Root context: on_context_create(root, 0), on_vm_start, then on_configure."""
        root = RootContext(self, self.alloc_context_id())
        self.contexts[root.id] = root
        self.root = root
        self.call(root, "proxy_on_context_create", root.id, 0)
        root.created_in_vm = True
        ok = self.call(root, "proxy_on_vm_start", root.id, len(self.plugin.vm_configuration))
        if self.failure is not None:
            raise LoadError(f"Failed to start base Wasm: {self.failure}")
        if self.has("proxy_on_vm_start") and not ok:
            raise LoadError("Failed to start base Wasm (proxy_on_vm_start returned false)")
        self.in_configure = True
        try:
            ok = self.call(root, "proxy_on_configure", root.id, len(self.plugin.configuration))
        finally:
            self.in_configure = False
        if self.failure is not None:
            raise LoadError(f"Failed to configure base Wasm plugin: {self.failure}")
        if self.has("proxy_on_configure") and not ok:
            raise LoadError("Failed to configure base Wasm plugin (proxy_on_configure returned false)")
        return root

    # -- timers ----------------------------------------------------------------------------------
    def set_tick_period(self, period_ms: int) -> None:
        self.tick_period_ms = period_ms
        self.next_tick_ns = self.services.monotonic_ns() + period_ms * 1_000_000 if period_ms else None

    def fire_due_ticks(self, now_ns: int) -> None:
        """on_tick for every period that has elapsed up to now_ns (the timer re-arms after each)."""
        while self.next_tick_ns is not None and self.next_tick_ns <= now_ns and not self.failed:
            due = self.next_tick_ns
            self.call(self.root, "proxy_on_tick", self.root.id)
            if self.tick_period_ms and self.next_tick_ns == due:
                self.next_tick_ns = due + self.tick_period_ms * 1_000_000

    # -- HTTP callouts ---------------------------------------------------------------------------
    def http_call(self, cluster: str, headers, body: bytes, trailers, timeout_ms: int) -> tuple[WasmResult, int]:
        """Envoy's Context::httpCall on the root context: checks, then an async request."""
        if timeout_ms < 0 or timeout_ms > 0x7FFFFFFF:
            return WasmResult.BadArgument, 0
        if not self.services.has_cluster(cluster):
            return WasmResult.BadArgument, 0
        names = {k for k, _ in headers}
        if not {":path", ":method", ":authority"} <= names and not {":path", ":method", "host"} <= names:
            return WasmResult.BadArgument, 0
        headers = list(headers)
        if body:
            headers = [(k, v) for k, v in headers if k != "content-length"] + [("content-length", str(len(body)))]
        self.next_http_call += 4
        token = self.next_http_call
        call = HttpCall(token, cluster, headers, body, list(trailers), timeout_ms,
                        self.effective().id)
        self.http_calls[token] = call
        return WasmResult.Ok, token

    def deliver_http_response(self, token: int, response: HttpCallResponse | None) -> bool:
        """proxy_on_http_call_response on the root context; None means the call failed (reset)."""
        call = self.http_calls.pop(token, None)
        if call is None or self.failed:
            return False
        root = self.root
        if response is None:
            root.status = (WasmResult.BrokenConnection, b"reset")
            self.call(root, "proxy_on_http_call_response", root.id, token, 0, 0, 0)
            root.status = (0, b"")
            return True
        root.http_call_response = response
        try:
            self.call(root, "proxy_on_http_call_response", root.id, token, len(response.headers),
                      len(response.body), len(response.trailers))
        finally:
            root.http_call_response = None
        return True

    # -- queues ----------------------------------------------------------------------------------
    def queue_ready(self, context_id: int, token: int) -> None:
        """Posted to the dispatcher: runs after the current work, on the registering root."""
        def wake():
            c = self.contexts.get(context_id)
            if c is not None and not self.failed:
                self.call(c, "proxy_on_queue_ready", c.id, token)
        self.pending.append(wake)

    def run_pending(self) -> int:
        n = 0
        while self.pending:
            self.pending.popleft()()
            n += 1
        return n

    # -- one HTTP stream ---------------------------------------------------------------------------
    def new_http_context(self, stream: Any) -> HttpContext:
        ctx = HttpContext(self, self.alloc_context_id(), self.root, stream)
        self.contexts[ctx.id] = ctx
        return ctx

    def shutdown(self) -> None:
        """Envoy's shutdown of a plugin: on_done then on_delete on the root context."""
        if self.root is not None and not self.failed:
            if self.call(self.root, "proxy_on_done", self.root.id) != 0 or not self.has("proxy_on_done"):
                self.call(self.root, "proxy_on_delete", self.root.id)


def headers_status(wasm: Wasm, ctx: HttpContext, result: int | None) -> FilterHeadersStatus:
    """convertVmCallResultToFilterHeadersStatus: a local reply or an unknown value stops all;
    StopIteration is StopAll unless allow_on_headers_stop_iteration."""
    if result is None or (result == 0 and ctx.local_reply is None):
        return FilterHeadersStatus.Continue
    if ctx.local_reply is not None or result > FilterHeadersStatus.StopAllIterationAndWatermark:
        return FilterHeadersStatus.StopAllIterationAndWatermark
    if result == FilterHeadersStatus.StopIteration and not wasm.plugin.allow_on_headers_stop_iteration:
        return FilterHeadersStatus.StopAllIterationAndWatermark
    return FilterHeadersStatus(result)


def data_status(ctx: HttpContext, result: int | None) -> FilterDataStatus:
    if result is None or (result == 0 and ctx.local_reply is None):
        return FilterDataStatus.Continue
    if ctx.local_reply is not None or result > FilterDataStatus.StopIterationNoBuffer:
        return FilterDataStatus.StopIterationNoBuffer
    return FilterDataStatus(result)


def trailers_status(ctx: HttpContext, result: int | None) -> FilterTrailersStatus:
    if result is None or (result == 0 and ctx.local_reply is None):
        return FilterTrailersStatus.Continue
    if ctx.local_reply is not None or result > FilterTrailersStatus.StopIteration:
        return FilterTrailersStatus.StopIteration
    return FilterTrailersStatus(result)
