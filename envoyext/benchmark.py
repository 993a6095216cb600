"""Data-path cost of a filter: requests/s and p50/p99 latency through live Envoy, measured with wrk
side by side with no filter and (when the scenario names one) the native Envoy filter.

Shared by `envoyext bench PROJECT` and `make bench` (bench/datapath.py). The method:

- Envoy runs at production log levels (`-l warning`, every component at warning), not at the
  tests' `wasm:trace,lua:trace`; one worker thread.
- Every subject (none, native, the filter(s)) gets its own Envoy, all started before the first
  measurement; the runs are interleaved A, B, C, A, B, C ... so that a noisy neighbour slows every
  subject alike rather than one of them; each figure is the median of the runs with the spread.
- On a machine with two or more cores, the Envoys under test are pinned to core 0, wrk and the
  upstream to core 1, so the proxy has a core of its own.
- Two routes: `direct` (the route answers with a direct response: Envoy and the filter alone) and
  `upstream` (a real upstream). The upstream is a second Envoy answering from direct-response
  listeners, one per cluster of the scenario (an authorization service's first reply, say): it
  serves tens of thousands of requests a second on part of a core, where the suite's Python test
  upstream manages a few thousand and would be what is measured.
- Besides requests/s, the CPU time the Envoy under test spent per request (from /proc), which a
  busy neighbour disturbs far less than throughput.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap, xds
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.envoy.process import EnvoyProcess
from envoyext.errors import UserError
from envoyext.messages import Request
from envoyext.scenario import Oracle
from envoyext.scenario.model import Route, Scenario
from envoyext.upstreams import UpstreamSpec, free_port

MODES = ("direct", "upstream")
PRODUCTION_LOG_LEVEL = "warning"
NO_FILTER = Oracle([], {}, [])
WRK_THREADS = 1
WRK_CONNECTIONS = 16


# ---------------------------------------------------------------- pure parts (unit-tested)

@dataclass(frozen=True)
class Spread:
    """The median of a set of runs and its range."""
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def ratio(self, other: Spread) -> Spread:
        """self / other: the ratio of the medians, and the widest range the runs allow."""
        return Spread(self.median / other.median, self.low / other.high, self.high / other.low, min(self.n, other.n))


def interleaved(labels: Sequence[str], runs: int) -> list[tuple[int, str]]:
    """(run, label) in the order A, B, C, A, B, C ...; each round starts one place later (B, C, A
    ...) so that no subject always runs first after a pause."""
    order = []
    n = len(labels)
    for r in range(runs):
        order += [(r, labels[(r + i) % n]) for i in range(n)]
    return order


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """requests/s, p50/p99 (ms, from --latency), requests, non-2xx/3xx responses and socket errors."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        raise ValueError("wrk printed no Requests/sec: " + " ".join(out.split())[:200])
    p = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(rps.group(1)), "requests": float(total.group(1)),
            "p50_ms": _ms(p["50"]) if "50" in p else float("nan"),
            "p99_ms": _ms(p["99"]) if "99" in p else float("nan"),
            "non_2xx": float(bad.group(1)) if bad else 0.0,
            "socket_errors": float(sum(int(g) for g in sock.groups())) if sock else 0.0}


def _lua_string(s: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\{ord(c):03d}"
                         for c in s) + '"'


def wrk_command(url: str, request: Request, *, duration: float, script: Path,
                connections: int = WRK_CONNECTIONS, threads: int = WRK_THREADS) -> tuple[list[str], str]:
    """wrk's argv and its Lua script (method and body) for one scenario request."""
    # "Host" spelled so: wrk adds its own Host header (the URL's) unless one is named exactly so.
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
            "-H", f"Host: {request.authority}"]
    for k, v in request.headers:
        if k.lower() not in ("host", "content-length"):
            args += ["-H", f"{k}: {v}"]
    args += ["-s", str(script), url]
    lua = f"wrk.method = {_lua_string(request.method)}\n"
    if request.body:
        lua += f"wrk.body = {_lua_string(request.body.decode('latin-1'))}\n"
    return args, lua


# ---------------------------------------------------------------- processes

def bench_identity(level: str = PRODUCTION_LOG_LEVEL) -> ProxyIdentity:
    """The test proxy at one log level for Envoy and for every component (the tests' default keeps
    wasm and lua at trace, which is what the scenarios' log expectations read)."""
    return TEST_PROXY.at_log_level(level)


def cores() -> tuple[set[int] | None, set[int] | None]:
    """(proxy cores, load cores): core 0 and core 1 of this process's allowed cores, or no pinning."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) < 2:
        return None, None
    return {allowed[0]}, {allowed[1]}


def pin(pid: int, cpus: set[int] | None) -> None:
    """Every thread of `pid` onto `cpus` (what `taskset -a -p` does)."""
    if cpus is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (every thread) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reply_of(spec: UpstreamSpec) -> tuple[int, list[tuple[str, str]], bytes]:
    """What the fast upstream answers for one cluster: its first rule's reply, else its canned
    reply, else 200 "ok" (the echo upstream's status)."""
    if spec.rules:
        r = spec.rules[0].reply
    elif spec.reply is not None and not spec.echo:
        r = spec.reply
    else:
        return 200, [("content-type", "text/plain")], b"ok"
    return r.status, list(r.headers), r.body


BUFFER = xds.http_filter("envoy.filters.http.buffer", {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1 << 20})


def buffered(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with a buffer filter before each router: a direct response then comes after the whole
    request. Without it Envoy answers a request with a body before reading the body, and closes the
    connection (`connection: close`), so every request would pay for a new connection."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                filters = f["typed_config"].get("http_filters")
                if filters is not None:
                    i = next(i for i, h in enumerate(filters) if h["name"] == xds.ROUTER_NAME)
                    filters.insert(i, dict(BUFFER))
    return config


def fast_upstream_config(clusters: dict[str, UpstreamSpec]) -> dict[str, Any]:
    listeners = []
    for name, spec in clusters.items():
        status, headers, body = _reply_of(spec)
        route = xds.route("reply", {"prefix": "/"}, direct_response=xds.direct_response(status, body.decode("latin-1")))
        if headers:
            route["response_headers_to_add"] = [{"header": {"key": k, "value": v},
                                                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for k, v in headers]
        routes = xds.route_config("r", [xds.virtual_host("any", ["*"], [route])])
        hcm = xds.http_connection_manager(f"up_{name}", routes, [xds.router_filter()], codec_type="AUTO")
        listeners.append(xds.http_listener(name, ("127.0.0.1", 0), hcm))
    return buffered(xds.bootstrap(node=xds.node("bench-upstream", "bench-upstream"), admin=("127.0.0.1", 0),
                                  listeners=listeners, clusters=[]))


@contextlib.contextmanager
def fast_upstream(scenario: Scenario, cpus: set[int] | None) -> Iterator[dict[str, tuple[str, int]]]:
    """An Envoy answering for every cluster of `scenario` (a `down` cluster: a port nobody holds)."""
    clusters = scenario.all_clusters()
    live = {n: s for n, s in clusters.items() if not s.down}
    first = next(iter(live))
    ident = dataclasses.replace(bench_identity(), name="bench-upstream", listener=first)
    with EnvoyProcess(fast_upstream_config(live), identity=ident, concurrency=1, check_config=False) as up:
        pin(up.proc.pid, cpus)
        addresses = {n: up.admin.listener_address(n) for n in live}
        addresses.update({n: ("127.0.0.1", free_port()) for n, s in clusters.items() if s.down})
        yield addresses


@dataclass
class Subject:
    """One Envoy configuration to measure: a filter, no filter or the native filter."""
    label: str
    artifact: Artifact | None
    oracle: Oracle | None = None     # NO_FILTER, the scenario's native filters, or None: the artifact


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float       # the Envoy under test's CPU time per request
    proxy_busy: float               # its CPU time / wall time (1.0: a whole core)
    errors: float                   # non-2xx/3xx answers and socket errors (expected ones included)


@dataclass
class Measured:
    mode: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def spread(self, label: str, key: str = "rps") -> Spread:
        return Spread.of([getattr(s, key) for s in self.samples[label]])


def scenario_for(scenario: Scenario, mode: str) -> Scenario:
    """`direct`: one route answering 200 "ok" itself; `upstream`: the scenario's own routes."""
    if mode == "direct":
        return dataclasses.replace(scenario, routes=[Route(name="bench", match={"prefix": "/"}, cluster=None,
                                                           direct_response={"status": 200, "body": "ok"})])
    return dataclasses.replace(scenario)


def _config(subject: Subject, scenario: Scenario, addresses: dict[str, tuple[str, int]],
            identity: ProxyIdentity, *, buffer: bool) -> dict[str, Any]:
    sc = dataclasses.replace(scenario, oracle=subject.oracle) if subject.oracle is not None else scenario
    config = bootstrap.build(subject.artifact, sc, addresses, identity=identity, oracle=subject.oracle is not None)
    return buffered(config) if buffer else config


def run_wrk(url: str, request: Request, *, duration: float, cpus: set[int] | None, workdir: Path) -> str:
    args, lua = wrk_command(url, request, duration=duration, script=workdir / "request.lua")
    (workdir / "request.lua").write_text(lua)
    if cpus is not None:
        args = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *args]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise UserError(f"wrk failed: {' '.join((proc.stderr or proc.stdout).split())[:200]}", file="wrk")
    return proc.stdout


def measure(subjects: Sequence[Subject], scenario: Scenario, request: Request, *, mode: str, runs: int,
            duration: float, warmup: float = 0.5, progress: Any = None) -> Measured:
    """Every subject's samples in one interleaved run through `mode` ("direct" or "upstream")."""
    if not shutil.which("wrk"):
        raise UserError("wrk is not installed", file="wrk", fix="apt-get install wrk (make bench installs it)")
    proxy_cpus, load_cpus = cores()
    identity = bench_identity()
    sc = scenario_for(scenario, mode)
    result = Measured(mode, {s.label: [] for s in subjects})
    with tempfile.TemporaryDirectory(prefix="envoyext-bench-") as tmp, fast_upstream(sc, load_cpus) as addresses, \
            contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        envoys = {}
        for s in subjects:
            # A request with a body, answered by a direct response: buffered, every subject alike.
            config = _config(s, sc, addresses, identity, buffer=mode == "direct" and bool(request.body))
            envoy = stack.enter_context(EnvoyProcess(config, identity=identity, concurrency=1, check_config=False))
            pin(envoy.proc.pid, proxy_cpus)
            envoys[s.label] = envoy
        path = request.path or "/"
        for envoy in envoys.values():     # JIT, connection pools, the VM's first requests
            pin(envoy.proc.pid, proxy_cpus)
            run_wrk(f"{envoy.url}{path}", request, duration=warmup, cpus=load_cpus, workdir=workdir)
        for run, label in interleaved([s.label for s in subjects], runs):
            envoy = envoys[label]
            pid = envoy.proc.pid
            c0, t0 = cpu_seconds(pid), time.monotonic()
            out = parse_wrk(run_wrk(f"{envoy.url}{path}", request, duration=duration, cpus=load_cpus,
                                    workdir=workdir))
            c1, t1 = cpu_seconds(pid), time.monotonic()
            sample = Sample(out["rps"], out["p50_ms"], out["p99_ms"],
                            (c1 - c0) / max(out["requests"], 1) * 1e6, (c1 - c0) / (t1 - t0),
                            out["non_2xx"] + out["socket_errors"])
            result.samples[label].append(sample)
            if progress:
                progress(mode, run, label, sample)
    return result


def to_json(m: Measured) -> dict[str, Any]:
    return {"mode": m.mode, "samples": {k: [dataclasses.asdict(s) for s in v] for k, v in m.samples.items()}}


def from_json(d: dict[str, Any]) -> Measured:
    return Measured(d["mode"], {k: [Sample(**s) for s in v] for k, v in d["samples"].items()})


def dumps(ms: Sequence[Measured]) -> str:
    return json.dumps([to_json(m) for m in ms], indent=1)


# ---------------------------------------------------------------- `envoyext bench PROJECT`

def pick_case(scenario: Scenario, name: str | None) -> Any:
    """The named case, else the first that sends a request to live Envoy."""
    cases = [c for c in scenario.cases if not c.startup and c.only != "emulated"]
    if name is not None:
        found = next((c for c in scenario.cases if c.name == name), None)
        if found is None:
            raise UserError(f"no case named '{name}'", file=scenario.path, field="--case",
                            fix="use one of: " + "; ".join(c.name for c in scenario.cases))
        return found
    if not cases:
        raise UserError("no case sends a request to live Envoy", file=scenario.path, fix="name another --scenario")
    return cases[0]


def project_subjects(artifact: Artifact, scenario: Scenario) -> list[Subject]:
    subjects = [Subject("none", artifact, NO_FILTER)]
    if scenario.oracle is not None and scenario.oracle.http_filters:
        subjects.append(Subject("native", artifact, scenario.oracle))
    subjects.append(Subject("filter", artifact))
    return subjects


def summary_rows(m: Measured) -> list[dict[str, Any]]:
    """Per subject: the medians and ranges, and the ratios to none and to native."""
    rps = {k: m.spread(k) for k in m.samples if m.samples[k]}
    rows = []
    for label, s in rps.items():
        row: dict[str, Any] = {"mode": m.mode, "subject": label, "rps": dataclasses.asdict(s),
                               "p50_ms": m.spread(label, "p50_ms").median, "p99_ms": m.spread(label, "p99_ms").median,
                               "cpu_us_per_request": m.spread(label, "cpu_us_per_request").median,
                               "proxy_busy": m.spread(label, "proxy_busy").median,
                               "errors": m.spread(label, "errors").median}
        if label != "none":
            row["vs_none"] = dataclasses.asdict(s.ratio(rps["none"]))
        if label == "filter" and "native" in rps:
            row["vs_native"] = dataclasses.asdict(s.ratio(rps["native"]))
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    def rng(d: dict[str, Any] | None, fmt: str) -> str:
        if d is None:
            return "-"
        return f"{fmt.format(d['median'])} ({fmt.format(d['low'])}-{fmt.format(d['high'])})"
    lines = [f"{'route':<9}{'subject':<8}{'requests/s (range)':>26}{'/ none':>20}{'/ native':>20}"
             f"{'p50 ms':>8}{'p99 ms':>8}{'CPU us/req':>11}{'errors':>9}"]
    for r in rows:
        lines.append(f"{r['mode']:<9}{r['subject']:<8}{rng(r['rps'], '{:,.0f}'):>26}"
                     f"{rng(r.get('vs_none'), '{:.2f}'):>20}{rng(r.get('vs_native'), '{:.2f}'):>20}"
                     f"{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['cpu_us_per_request']:>11.1f}{r['errors']:>9,.0f}")
    if any(r["errors"] for r in rows):
        lines.append("errors: answers other than 2xx/3xx (and socket errors) per run: that subject answers this "
                     "request otherwise (a refusal, a limit), so its figures are of that path (--case picks another)")
    return "\n".join(lines)
