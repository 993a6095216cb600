"""The Wasm filter host for the emulated Envoy (`envoyext.emulated.stream.FilterHost`).

`WasmFilterHost` loads the plugin as Envoy does (compile, start the VM, root context,
on_vm_start, on_configure; a failure there is Envoy rejecting the filter) - once per Envoy
thread, since each thread's VM ticks - then gives each
stream a `filter.StreamFlow`. While a stream is paused it runs the event loop: deferred
wake-ups (on_queue_ready) and HTTP callouts, answered by the scenario's clusters through
`env.call_cluster` (a test may instead answer them by hand, see `envoyext.wasm.api`).

After a VM failure Envoy 1.40 keeps the failed VM: with fail_open the filter is skipped,
otherwise every request is answered 503. `failure_policy="reload"` (Envoy's FAIL_RELOAD)
starts a fresh VM for the next stream instead.
"""

from __future__ import annotations

import logging
from typing import Any

from envoyext.artifact import Artifact, FailurePolicy
from envoyext.emulated.router import CONNECT_FAILURE_BODY, TIMEOUT_BODY
from envoyext.emulated.stream import Envoy, FilterDidNotReturn, LocalReply, StreamStuck
from envoyext.envoy.facts import disabled_by_route
from envoyext.envoy.filter_entry import plugin_configuration_text
from envoyext.errors import EnvoyRejected
from envoyext.scenario import LogLine
from envoyext.wasm.abi import LOG_LEVEL_NAMES
from envoyext.wasm.context import HttpCall, HttpCallResponse, Plugin, Services, Wasm
from envoyext.wasm.filter import WAIT, StreamFlow
from envoyext.wasm.host import DEFAULT_DEADLINE_MS, LoadError, compile_module
from envoyext.wasm.imports import make_imports
from envoyext.wasm.metrics import MetricStore
from envoyext.wasm.properties import PropertySource
from envoyext.wasm.shared import SharedState

log = logging.getLogger(__name__)

# How long (virtual time) a paused stream may wait for a tick to resume it before the emulator
# calls it stalled (Envoy's default stream_idle_timeout is 5 minutes).
MAX_PAUSE_MS = 300_000


class StreamStalled(StreamStuck):
    """The filter paused the stream and nothing that could resume it is pending."""


class WasmFilterHost:
    def __init__(self, artifact: Artifact, config: Any, env: Envoy, *, shared: SharedState | None = None,
                 metrics: MetricStore | None = None, log_level: int = 0, deadline_ms: int = DEFAULT_DEADLINE_MS,
                 memory_limit: int | None = None, auto_answer: bool = True,
                 vm_configuration: bytes = b"", environment: dict[str, str] | None = None,
                 allow_on_headers_stop_iteration: bool = False, idle_vms: int = 1):
        self.artifact = artifact
        self.env = env
        self.plugin = Plugin(name=artifact.name, root_id=artifact.root_id, vm_id=artifact.vm_id,
                             configuration=(plugin_configuration_text(config) or "").encode(),
                             vm_configuration=vm_configuration,
                             environment=dict(environment or {}),
                             allow_on_headers_stop_iteration=allow_on_headers_stop_iteration)
        self.auto_answer = auto_answer
        self.no_response_on_deadline = False
        self.logs: list[LogLine] = []
        self.failures: list[str] = []          # VM failures (trap messages), oldest first
        self.connections = 0
        kw = {} if memory_limit is None else {"memory_limit": memory_limit}
        self.services = Services(now_ns=lambda: env.clock.ns, monotonic_ns=lambda: env.clock.ns,
                                 log=self._log, shared=shared or SharedState(), metrics=metrics or MetricStore(),
                                 log_level=log_level, has_cluster=lambda name: name in env.clusters,
                                 deadline_ms=deadline_ms, **kw)
        try:
            self.module = compile_module(artifact.path)
        except LoadError as e:
            raise EnvoyRejected(f"Unable to create Wasm HTTP filter {artifact.name}: {e}",
                                file=artifact.path, fix="give a valid proxy-wasm module; rebuild it") from None
        # Envoy runs one VM per thread: the main thread's and each worker's tick (and may be woken
        # by queues) though only one serves our streams. idle_vms: the main thread's and the other
        # workers' (the live runner's `workers`, 1 by default, so one idle VM).
        self.idle = [self._start_vm() for _ in range(idle_vms)]
        self.wasm = self._start_vm()

    # -- the VM ----------------------------------------------------------------------------------
    def _start_vm(self) -> Wasm:
        try:
            w = Wasm(self.module, self.plugin, self.services, make_imports,
                     lambda ctx: PropertySource(ctx, self.connections, self.env.identity))
            w.start()
            w.start_plugin()
        except LoadError as e:
            raise EnvoyRejected(f"Unable to create Wasm HTTP filter {self.artifact.name}: {e}",
                                file=self.artifact.path,
                                fix=e.fix or "see the plugin's log lines; Envoy refuses this filter too") from None
        return w

    def _log(self, level: int, message: str) -> None:
        if level < 0:
            self.failures.append(message)
            log.warning("%s: %s", self.artifact.name, message)
            return
        self.logs.append(LogLine(LOG_LEVEL_NAMES[level], message, self.env.identity.name))

    # -- the event loop while a stream is paused -----------------------------------------------------
    def pump(self) -> bool:
        """Deliver one round of pending work; False when there was none."""
        w = self.wasm
        ran = w.run_pending()
        for v in self.idle:
            ran += v.run_pending()
        if ran:
            return True
        if self.auto_answer and w.http_calls and not w.failed:
            token = min(w.http_calls)
            self.answer_from_cluster(w.http_calls[token])
            return True
        return False

    def answer_from_cluster(self, call: HttpCall) -> None:
        """Send the callout to the scenario's cluster and deliver what comes back."""
        # Envoy's async client marks callouts internal, and its router states the timeout.
        headers = list(call.headers) + [("x-envoy-internal", "true")]
        if call.timeout_ms:
            headers.append(("x-envoy-expected-rq-timeout-ms", str(call.timeout_ms)))
        result = self.env.call_cluster(call.cluster, headers, call.body, call.timeout_ms or None)
        if result.response is not None:
            r = result.response
            # The router adds its service-time header; the upstream's own server header stays.
            response = HttpCallResponse([(":status", str(r.status))] + list(r.headers)
                                        + [("x-envoy-upstream-service-time", "0")], r.body)
        elif result.failure == "timeout":
            response = _local_response(504, TIMEOUT_BODY)
        else:
            response = _local_response(503, CONNECT_FAILURE_BODY)
        self.wasm.deliver_http_response(call.token, response)

    def next_tick(self) -> bool:
        """Nothing else is pending: let virtual time run to the next timer (on_tick) of any of
        this plugin's VMs, as Envoy's event loop would while a stream waits. False if none."""
        due = [vm.next_tick_ns for vm in (*self.idle, self.wasm) if vm.next_tick_ns is not None and not vm.failed]
        if not due:
            return False
        self.env.clock.ns = max(self.env.clock.ns, min(due))
        self.advance()
        return True

    def set_response_timeout(self, timeout_ms: int) -> None:
        """The scenario runner's per-case timeout: a guest call running past it ends the case with
        no response, as live Envoy gives none (without it, as in the test API, the VM just fails)."""
        self.no_response_on_deadline = True
        self.services.deadline_ms = timeout_ms  # for a VM started later (failure_policy "reload")
        for vm in (*self.idle, self.wasm):
            vm.vm.set_deadline(timeout_ms)

    def drive(self, flow, *, stall_ok: bool = False):
        """Run a flow generator to its end, pumping the event loop while it waits; with nothing
        pending, virtual time runs on to the next tick (up to MAX_PAUSE_MS)."""
        for step in self._unless_interrupted(flow):
            if step is WAIT:
                paused_at = self.env.clock.ns
                while True:
                    if self.pump():
                        break
                    if stall_ok:
                        return flow        # the caller resumes it later
                    if self.env.clock.ns - paused_at < MAX_PAUSE_MS * 1_000_000 and self.next_tick():
                        break
                    raise StreamStalled(
                        f"{self.artifact.path}: the filter paused the stream and nothing pending can resume it "
                        "(fix: call proxy_continue_stream, e.g. from on_http_call_response, or send a local reply)")
        return None

    def _unless_interrupted(self, flow):
        """The flow's steps, until a guest call is stopped at its deadline: Envoy would still be in it."""
        for step in flow:
            self.raise_if_interrupted()
            yield step
        self.raise_if_interrupted()

    def raise_if_interrupted(self) -> None:
        failure = self.wasm.failure
        if self.no_response_on_deadline and failure is not None and failure.interrupted:
            raise FilterDidNotReturn(failure.message)

    # -- FilterHost ------------------------------------------------------------------------------
    def new_stream(self, stream) -> "WasmStreamFilter | SkippedFilter":
        route = stream.route
        if route is not None and disabled_by_route(route.per_filter_config):
            return SkippedFilter()
        policy = self.artifact.failure_policy
        if self.wasm.failed and policy is FailurePolicy.RELOAD:
            self.wasm = self._start_vm()
        self.connections += 1
        return WasmStreamFilter(self, StreamFlow(self.wasm, stream, fail_open=policy is FailurePolicy.FAIL_OPEN))

    def advance(self, env=None) -> None:
        """Virtual time moved: fire the ticks now due, then whatever they set in motion."""
        for vm in [*self.idle, self.wasm]:
            vm.fire_due_ticks(self.env.clock.ns)
        while self.pump():
            pass

    def take_logs(self) -> list[LogLine]:
        out, self.logs = self.logs, []
        return out

    def stats(self) -> dict[str, int]:
        return self.services.metrics.stats()

    def gauge_names(self) -> set[str]:
        return self.services.metrics.gauge_names()

    def histograms(self) -> dict[str, list[int]]:
        return self.services.metrics.histograms()

    def close(self) -> None:
        for vm in [self.wasm, *self.idle]:
            vm.shutdown()


def _local_response(status: int, body: bytes) -> HttpCallResponse:
    """What Envoy's async client hands back when its router answers locally."""
    return HttpCallResponse([(":status", str(status)), ("content-length", str(len(body))),
                             ("content-type", "text/plain")], body)


class SkippedFilter:
    """The filter as a route's FilterConfig {disabled: true} leaves it: not in the stream's chain."""

    def decode(self, stream) -> None:
        return None

    def encode(self, stream) -> None:
        return None

    def complete(self, stream) -> None:
        pass


class WasmStreamFilter:
    """envoyext.emulated.stream.StreamFilter for one stream."""

    def __init__(self, host: WasmFilterHost, flow: StreamFlow):
        self.host = host
        self.flow = flow

    def decode(self, stream) -> LocalReply | None:
        self.host.drive(self.flow.decode())
        return self.flow.reply

    def encode(self, stream) -> LocalReply | None:
        # Envoy runs the filter's encoder callbacks for its own local reply too.
        self.host.drive(self.flow.encode())
        return self.flow.encode_reply

    def complete(self, stream) -> None:
        self.flow.complete()
        while self.host.pump():
            pass
        self.host.raise_if_interrupted()
