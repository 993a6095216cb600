"""Test a proxy-wasm module in-process, with Envoy's lifecycle and no Envoy.

    from envoyext.wasm.api import WasmPlugin

    plugin = WasmPlugin.load("auth.wasm", config={"cluster": "auth"},
                             clusters={"auth": {"status": 200}}, auto_answer=False)
    ex = plugin.request({":path": "/private", "authorization": "Bearer x"})
    assert ex.paused                                   # waiting on its callout
    call = plugin.http_calls[0]                        # what it asked for
    plugin.answer(call, status=200, body=b"ok")        # on_http_call_response; the stream resumes
    assert ex.request_headers_get("x-auth") == "ok"
    ex.respond(200, {"content-type": "text/plain"}, b"hello")   # the response path
    ex.finish()                                        # on_log, on_done, on_delete
    plugin.advance(1000)                               # virtual clock: ticks fire
    plugin.logs("info"), plugin.metrics, plugin.shared_data(), plugin.queue("q")

`request()` pushes headers (and optional body/trailers) through on_request_*; `ex.local_response`
is the filter's local reply, if any; `ex.request_headers`/`ex.request_body` are what would go
upstream. `respond()` pushes a response through on_response_*; `call()` does request, response
and finish in one go. With `auto_answer=True` (the default) callouts are answered at once by the
`clusters` you declare (the scenario upstream format: echo, status/headers/body, rules, down).
A whole scenario file runs through the emulated Envoy with `envoyext.runners.emulated.run_scenario`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from envoyext.artifact import Artifact, FailurePolicy
from envoyext.emulated.connection_manager import EmulatedEnvoy, send_local_reply
from envoyext.emulated.stream import LocalReply, Stream
from envoyext.scenario import LogLine, Scenario, default_routes, header_list
from envoyext.upstreams import UpstreamSpec
from envoyext.wasm import headers as H
from envoyext.wasm.context import HttpCall, HttpCallResponse
from envoyext.wasm.emulator import WasmFilterHost
from envoyext.wasm.filter import StreamFlow

__all__ = ["WasmPlugin", "Exchange"]


# Pseudo-headers a request gets when it lacks them (in this order, ahead of its own).
_REQUEST_DEFAULTS = ((":authority", "example.com"), (":path", "/"), (":method", "GET"), (":scheme", "http"))


def _headers(h) -> list[tuple[str, str]]:
    if h is None:
        return []
    if isinstance(h, dict):
        return header_list(h)
    return [(str(k).lower(), str(v)) for k, v in h]


class Exchange:
    """One stream through the plugin. Its header lists are live: they show the filter's edits."""

    def __init__(self, plugin: "WasmPlugin", stream: Stream, flow: StreamFlow, seq: int):
        self.plugin = plugin
        self.stream = stream
        self.flow = flow
        self.seq = seq           # creation order: paused exchanges resume in this order
        self._gen = None
        self._local_encoded = False
        self.finished = False

    # request side
    @property
    def request_headers(self) -> list[tuple[str, str]]:
        return self.stream.request_headers

    def request_headers_get(self, name: str) -> str | None:
        return H.get(self.stream.request_headers, name)

    @property
    def request_body(self) -> bytes:
        return self.stream.request_body

    @property
    def local_response(self) -> LocalReply | None:
        """The filter's local reply (from any callback), or the fail-closed 503."""
        return self.flow.encode_reply or self.flow.reply

    @property
    def paused(self) -> bool:
        """The filter stopped the stream and waits (for a callout answer, a queue, a tick)."""
        return self._gen is not None

    # response side
    @property
    def response_headers(self) -> list[tuple[str, str]]:
        return self.stream.response_headers

    @property
    def response_body(self) -> bytes:
        return self.stream.response_body

    def _run(self, gen) -> None:
        self._gen = self.plugin.host.drive(gen, stall_ok=True)
        r = self.flow.reply
        if self._gen is None and r is not None and not self._local_encoded:
            # Envoy encodes a local reply at once, through this filter's encoder callbacks too.
            self._local_encoded = True
            send_local_reply(self.stream, r)
            self._gen = self.plugin.host.drive(self.flow.encode(), stall_ok=True)
        # Only a paused exchange has anything to resume; the plugin forgets finished ones (a test
        # running many cycles would otherwise keep every stream alive and slow the GC down).
        if self._gen is None:
            self.plugin._paused.pop(self.seq, None)
        else:
            self.plugin._paused[self.seq] = self

    def resume(self) -> None:
        if self._gen is not None:
            self._run(self._gen)

    def respond(self, status: int = 200, headers=None, body: bytes = b"", trailers=None) -> "Exchange":
        """Push a response through on_response_headers/body/trailers (the upstream's, not local)."""
        if self._gen is not None:
            raise RuntimeError("the request is still paused; answer its callouts first")
        s = self.stream
        s.response_headers = [(":status", str(status))] + _headers(headers)
        s.response_body = body
        s.response_trailers = _headers(trailers)
        self._run(self.flow.encode())
        return self

    def finish(self) -> "Exchange":
        """End the stream: on_log, on_done, on_delete."""
        if not self.finished:
            self.finished = True
            self.flow.complete()
            while self.plugin.host.pump():
                pass
        return self


class WasmPlugin:
    """A proxy-wasm module loaded as Envoy would load it (VM per thread, root context, configure)."""

    def __init__(self, host: WasmFilterHost, env: EmulatedEnvoy):
        self.host = host
        self.env = env
        self._paused: dict[int, Exchange] = {}   # by creation order (Exchange.seq)
        self._next_seq = 0

    @classmethod
    def load(cls, path: str | Path, config: Any = None, *, name: str = "plugin", root_id: str = "",
             vm_id: str = "", fail_open: bool = False, clusters: dict | None = None,
             auto_answer: bool = True, **options) -> "WasmPlugin":
        """`config` is JSON-encoded (strings are passed as is). `options` go to WasmFilterHost:
        vm_configuration, environment, log_level, failure_policy ("fail_closed" | "fail_open" |
        "reload"), deadline_ms, memory_limit, shared (a SharedState to share with another plugin),
        allow_on_headers_stop_iteration, idle_vms."""
        scenario = Scenario(path=Path(str(path)), name="api", config=config, upstream=UpstreamSpec(),
                            clusters={k: UpstreamSpec.from_dict(v) for k, v in (clusters or {}).items()},
                            routes=default_routes(), cases=[])
        env = EmulatedEnvoy(scenario)
        policy = options.pop("failure_policy", None) or (FailurePolicy.FAIL_OPEN if fail_open else None)
        art = Artifact("wasm", Path(path), name, root_id=root_id, vm_id=vm_id)
        if policy:  # else the Artifact's default
            art = dataclasses.replace(art, failure_policy=FailurePolicy(policy))
        return cls(WasmFilterHost(art, config, env, auto_answer=auto_answer, **options), env)

    # -- streams ---------------------------------------------------------------------------------
    def request(self, headers=None, body: bytes = b"", trailers=None, *, body_chunks: list[bytes] | None = None,
                source: str = "127.0.0.1:50000") -> Exchange:
        """Push a request through on_request_headers/body/trailers. Missing pseudo-headers get
        defaults (GET / example.com http); nothing else is added."""
        pseudo, regular = [], []
        for h in _headers(headers):
            (pseudo if h[0].startswith(":") else regular).append(h)
        names = {k for k, _ in pseudo}
        hs = [d for d in _REQUEST_DEFAULTS if d[0] not in names] + pseudo + regular
        stream = Stream(hs, body, _headers(trailers), self.env, start_ns=self.env.clock.ns,
                                 downstream_address=source)
        stream.cluster_name = "upstream"
        filt = self.host.new_stream(stream)
        flow = filt.flow
        if body_chunks is not None:
            flow.request_chunks = list(body_chunks)
        self._next_seq += 1
        ex = Exchange(self, stream, flow, self._next_seq)
        ex._run(flow.decode())
        return ex

    def call(self, headers=None, body: bytes = b"", *, status: int = 200, response_headers=None,
             response_body: bytes = b"") -> Exchange:
        """A whole cycle: request, then (unless the filter replied locally) the response, then finish."""
        ex = self.request(headers, body)
        if ex.paused:
            return ex
        if ex.local_response is None:
            ex.respond(status, response_headers, response_body)
        return ex.finish()

    # -- callouts --------------------------------------------------------------------------------
    @property
    def http_calls(self) -> list[HttpCall]:
        """proxy_http_call requests not answered yet, oldest first."""
        return [c for _, c in sorted(self.host.wasm.http_calls.items())]

    def answer(self, call: HttpCall | int, status: int = 200, headers=None, body: bytes = b"",
               trailers=None) -> None:
        """Deliver a callout's response (on_http_call_response), then resume paused streams."""
        token = call.token if isinstance(call, HttpCall) else call
        response = HttpCallResponse([(":status", str(status))] + _headers(headers), body, _headers(trailers))
        self.host.wasm.deliver_http_response(token, response)
        self._resume_all()

    def fail(self, call: HttpCall | int) -> None:
        """The callout failed (reset): on_http_call_response with no headers."""
        token = call.token if isinstance(call, HttpCall) else call
        self.host.wasm.deliver_http_response(token, None)
        self._resume_all()

    def _resume_all(self) -> None:
        for seq in sorted(self._paused):
            ex = self._paused.get(seq)
            if ex is not None:
                ex.resume()

    # -- time ------------------------------------------------------------------------------------
    def advance(self, ms: float) -> None:
        """Move the virtual clock; ticks that fall due fire (in every thread's VM, as in Envoy)."""
        self.env.clock.advance_ms(ms)
        self.host.advance(self.env)
        self._resume_all()

    # -- what the plugin did -----------------------------------------------------------------------
    def logs(self, level: str | None = None) -> list[str]:
        """Messages logged so far (all, or of one level: trace debug info warn error critical)."""
        return [l.message for l in self.host.logs if level is None or l.level == level]

    def clear_logs(self) -> None:
        """Forget what was logged so far (e.g. the on_configure lines of every thread's VM)."""
        self.host.take_logs()

    @property
    def log_lines(self) -> list[LogLine]:
        return list(self.host.logs)

    @property
    def metrics(self) -> dict[str, int]:
        """Counters and gauges by the name the plugin defined."""
        store = self.host.services.metrics
        return {**store.counters(), **store.gauges()}

    def histogram(self, name: str) -> list[int]:
        return list(self.host.services.metrics.samples.get(name, []))

    @property
    def stats(self) -> dict[str, int]:
        """The same values under the names Envoy's admin /stats shows (wasmcustom.<name>)."""
        return self.host.stats()

    def shared_data(self, vm_id: str | None = None) -> dict[bytes, bytes]:
        return self.host.services.shared.snapshot(self.host.plugin.vm_id if vm_id is None else vm_id)

    def queue(self, name: str, vm_id: str | None = None) -> list[bytes]:
        return self.host.services.shared.queue_items(self.host.plugin.vm_id if vm_id is None else vm_id, name)

    @property
    def failures(self) -> list[str]:
        """VM failures (trap messages), oldest first."""
        return list(self.host.failures)

    def close(self) -> None:
        self.host.close()

    def __enter__(self) -> "WasmPlugin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
