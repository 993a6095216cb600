"""Scenarios, observations and the one checker.

A scenario (YAML) says what to send through a filter and what should come out. Every runner, the
emulators and live Envoy alike, turns a scenario into one `Observation` per case; `check()` judges
an observation against the case's expectations and `compare()` judges two observations of the same
case against each other (emulated vs live, filter vs native oracle). Runners only produce
observations; nothing else decides pass or fail.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoyext import prometheus, schemas
from envoyext.errors import UserError
from envoyext.messages import (
    DEFAULT_RESPONSE_TIMEOUT_MS,
    Headers,
    Request,
    Response,
    header_list,
    header_text,
    is_no_response,
    unsendable,
    values,
)

# Re-exported: observations and expectations speak of these too.
from envoyext.messages import Received as Received
from envoyext.messages import first as first
from envoyext.upstreams import UpstreamSpec

# Cluster name of the default test upstream, in the bootstrap and in observations.
UPSTREAM = "upstream"
# The case a scenario's `startup:` block becomes: what the filter logged while it started.
STARTUP = "startup"
# Envoy's Lua filter reads route metadata under its own filter name, then under this one.
LUA_FILTER_NAMESPACE = "envoy.filters.http.lua"


# ---------------------------------------------------------------------------------------------
# The scenario


@dataclass
class Route:
    name: str
    match: dict
    cluster: str | None = UPSTREAM
    direct_response: dict | None = None
    metadata: dict | None = None
    per_filter_config: Any = None
    timeout_ms: int | None = None
    upgrade_configs: list[dict] | None = None

    def _connect_upgrade(self) -> dict | None:
        """The route's enabled CONNECT upgrade (RouteAction.upgrade_configs), if any."""
        return next((u for u in self.upgrade_configs or []
                     if u["upgrade_type"].upper() == "CONNECT" and u.get("enabled", True)), None)

    @property
    def allows_connect(self) -> bool:
        return self._connect_upgrade() is not None

    @property
    def terminates_connect(self) -> bool:
        """connect_config: Envoy answers the CONNECT itself and tunnels to the cluster over TCP."""
        return "connect_config" in (self._connect_upgrade() or {})

    def filter_metadata(self, filter_name: str) -> dict[str, dict]:
        """Envoy's `Metadata.filter_metadata` of this route: the full form as written, or the
        short form (bare keys) under the filter's own name."""
        md = self.metadata
        if not md:
            return {}
        if "filter_metadata" in md:
            return md["filter_metadata"]
        return {filter_name: md}

    def matches(self, path: str | None, headers: Headers) -> bool:
        """Envoy's route match for the subset of fields the scenario format allows. A CONNECT
        request (no :path) matches only a `connect_matcher` route, and only it matches one."""
        m = self.match
        if ("connect_matcher" in m) != (first(headers, ":method") == "CONNECT"):
            return False
        bare = (path or "").split("?", 1)[0]
        if "path" in m and bare != m["path"]:
            return False
        if "prefix" in m and not (path or "").startswith(m["prefix"]):
            return False
        for name, want in header_list(m.get("headers")):
            if want not in values(headers, name):
                return False
        return True


@dataclass
class Case:
    name: str
    request: Request
    expect: dict
    repeat: int = 1
    wait_ms: int = 0
    only: str | None = None  # "live" | "emulated" | None (both)
    startup: bool = False    # no request: the expectations are on the logs of the filter's start


@dataclass
class Oracle:
    http_filters: list[dict]
    typed_per_filter_config: dict
    compare: list[str]


@dataclass
class Scenario:
    path: Path
    name: str
    config: Any
    upstream: UpstreamSpec
    clusters: dict[str, UpstreamSpec]
    routes: list[Route]
    cases: list[Case]
    oracle: Oracle | None = None
    workers: int | None = None  # live Envoy's worker threads (None: filter.yaml's, or the CLI's)

    def route_for(self, path: str | None, headers: Headers) -> Route | None:
        return next((r for r in self.routes if r.matches(path, headers)), None)

    def all_clusters(self) -> dict[str, UpstreamSpec]:
        return {UPSTREAM: self.upstream, **self.clusters}


def default_routes() -> list[Route]:
    return [Route(name="default", match={"prefix": "/"}, cluster=UPSTREAM)]


def from_dict(data: dict, path: Path, default_config: Any = None) -> Scenario:
    """Build a Scenario from already-validated data."""
    clusters = {n: UpstreamSpec.from_dict(s) for n, s in (data.get("clusters") or {}).items()}
    if UPSTREAM in clusters:
        raise UserError(f"cluster name '{UPSTREAM}' is reserved for the default upstream",
                        file=path, field=f"clusters.{UPSTREAM}", fix="rename it, or configure it under 'upstream'")
    routes = []
    for i, r in enumerate(data.get("routes") or []):
        target = r.get("cluster", None if "direct_response" in r else UPSTREAM)
        if target is not None and target != UPSTREAM and target not in clusters:
            raise UserError(f"route points at unknown cluster '{target}'", file=path,
                            field=f"routes[{i}].cluster", fix="declare it under 'clusters'")
        _check_metadata(r.get("metadata"), path, f"routes[{i}].metadata")
        routes.append(Route(name=r.get("name", f"route{i}"), match=r["match"], cluster=target,
                            direct_response=r.get("direct_response"), metadata=r.get("metadata"),
                            per_filter_config=r.get("per_filter_config"), timeout_ms=r.get("timeout_ms"),
                            upgrade_configs=r.get("upgrade_configs")))
    cases = [_startup_case(data["startup"], data["cases"], path)] if "startup" in data else []
    first_index: dict[str, int] = {}
    for i, c in enumerate(data["cases"]):
        # Reports, JSON results and differential tools name cases: two of one name make a verdict ambiguous.
        if c["name"] in first_index:
            raise UserError(f"case name '{c['name']}' is already used by cases[{first_index[c['name']]}]",
                            file=path, field=f"cases[{i}].name", fix="give every case of a scenario its own name")
        first_index[c["name"]] = i
        for name in (c.get("expect") or {}).get("clusters") or {}:
            if name not in clusters:
                raise UserError(f"expectation on undeclared cluster '{name}'", file=path,
                                field=f"cases[{i}].expect.clusters.{name}", fix="declare it under 'clusters'")
        cases.append(Case(
            name=c["name"], request=_request(c.get("request") or {}, path, f"cases[{i}].request"),
            expect=c.get("expect") or {}, repeat=c.get("repeat", 1), wait_ms=c.get("wait_ms", 0),
            only=c.get("only")))
        _check_sendable(cases[-1].request, path, f"cases[{i}].request")
    o = data.get("oracle")
    oracle = Oracle(o.get("http_filters", []), o.get("typed_per_filter_config", {}),
                    o.get("compare", ["status", "headers", "body", "upstream"])) if o else None
    return Scenario(path=path, name=data.get("name", path.stem),
                    config=data["config"] if "config" in data else default_config,
                    upstream=UpstreamSpec.from_dict(data.get("upstream") or {}),
                    clusters=clusters, routes=routes or default_routes(), cases=cases, oracle=oracle,
                    workers=data.get("workers"))


def _request(rq: dict, path: Path, where: str) -> Request:
    """A case's request. CONNECT has no path: its target is the authority (`host:port`)."""
    method = rq.get("method", "GET")
    if method == "CONNECT" and "path" in rq:
        raise UserError("a CONNECT request has no path (its target is the authority)", file=path,
                        field=f"{where}.path", fix="remove it and give authority: host:port")
    return Request(method=method, path=None if method == "CONNECT" else rq.get("path", "/"),
                   authority=rq.get("authority", "example.com"), headers=header_list(rq.get("headers")),
                   body=rq.get("body", "").encode(), trailers=header_list(rq.get("trailers")),
                   timeout_ms=rq.get("timeout_ms", DEFAULT_RESPONSE_TIMEOUT_MS))


def _startup_case(expect: dict, cases: list[dict], path: Path) -> Case:
    """The `startup:` block as a case of its own, checked and compared like any other."""
    for i, c in enumerate(cases):
        if c["name"] == STARTUP:
            raise UserError(f"the case name '{STARTUP}' is taken by the startup block", file=path,
                            field=f"cases[{i}].name", fix="rename the case")
    return Case(name=STARTUP, request=Request(), expect=expect, startup=True)


def _check_metadata(md: dict | None, path: Path, where: str) -> None:
    """The full form (`filter_metadata: {namespace: {...}}`) stands alone; anything else is the
    short form, put under the filter's own name."""
    if md and "filter_metadata" in md and len(md) > 1:
        extra = sorted(k for k in md if k != "filter_metadata")[0]
        raise UserError("route metadata mixes the full form (filter_metadata) with bare keys", file=path,
                        field=f"{where}.{extra}", fix="move it under filter_metadata.<filter name>")


def startup_logs(lines: list[LogLine]) -> list[LogLine]:
    """What a filter logged while it started, each distinct line once: Envoy starts the plugin in a
    VM per worker and on the main thread (3 times with 1 worker, measured), the emulator in its own."""
    seen: set[tuple[str, str]] = set()
    out = []
    for line in lines:
        if (line.level, line.message) not in seen:
            seen.add((line.level, line.message))
            out.append(line)
    return out


def _check_sendable(rq: Request, path: Path, where: str) -> None:
    """A request the live client cannot put on the wire is the scenario's fault, not a runner's."""
    problem = unsendable(rq)
    if problem:
        field_, message, fix = problem
        raise UserError(message, file=path, field=f"{where}.{field_}", fix=fix)


def load(path: Path | str, default_config: Any = None) -> Scenario:
    path = Path(path)
    return from_dict(schemas.load(path, "scenario"), path, default_config)


# ---------------------------------------------------------------------------------------------
# Observations


@dataclass
class LogLine:
    level: str  # trace | debug | info | warn | error | critical (Envoy's, with spdlog's "warning" as "warn")
    message: str


@dataclass
class Observation:
    """What one runner saw for one case. Every runner produces exactly this."""
    case: str
    runner: str
    response: Response | None = None           # the last response (None: stream reset, no response)
    responses: list[Response] = field(default_factory=list)
    upstream: list[Received] = field(default_factory=list)
    clusters: dict[str, list[Received]] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)  # the filter's own log lines
    stats: dict[str, int] = field(default_factory=dict)  # deltas over the case
    # Series at /stats/prometheus that changed over the case, (sample, labels) -> delta; gathered
    # only for cases that expect some (None otherwise), see envoyext.prometheus.
    prometheus: dict | None = None
    error: str | None = None                    # the runner could not run the case
    faults: list[str] = field(default_factory=list)  # the filter's VM failed (a Wasm trap): the reasons

    def to_json(self) -> dict:
        def rx(r: Received):
            return {"method": r.method, "path": r.path, "headers": r.headers, "body": _show(r.body)}
        resp = self.response
        return {
            "case": self.case, "runner": self.runner, "error": self.error,
            "response": None if resp is None else
            {"status": resp.status, "headers": resp.headers, "body": _show(resp.body)},
            "upstream": [rx(r) for r in self.upstream],
            "clusters": {k: [rx(r) for r in v] for k, v in self.clusters.items()},
            "logs": [f"{l.level}: {l.message}" for l in self.logs],
            "faults": self.faults,
            "stats": self.stats,
            "prometheus": None if self.prometheus is None else [
                {"sample": name, "labels": dict(sorted(labels)), "delta": v}
                for (name, labels), v in sorted(self.prometheus.items(), key=lambda kv: kv[0][0])],
        }


def _show(b: bytes) -> str:
    return b.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# The checker


@dataclass
class Mismatch:
    where: str      # e.g. "status", "headers.x-hello", "upstream.headers.x-a"
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.where}: expected {self.expected!r}, got {self.actual!r}"


def _strings(v) -> list[str]:
    return [] if v is None else ([v] if isinstance(v, str) else list(v))


def _check_headers(where: str, want: dict | None, absent: list | None, got: Headers) -> list[Mismatch]:
    out = []
    for name, value in (want or {}).items():
        have = values(got, name)
        if isinstance(value, list):
            exp = [header_text(v) for v in value]
            if have != exp:
                out.append(Mismatch(f"{where}.{name}", exp, have or None))
        else:
            exp = header_text(value)
            if ",".join(have) != exp and exp not in have:
                out.append(Mismatch(f"{where}.{name}", exp, ",".join(have) if have else None))
    for name in absent or []:
        have = values(got, name)
        if have:
            out.append(Mismatch(f"{where}.{name}", "absent", ",".join(have)))
    return out


def _check_received(where: str, want: dict, got: list[Received]) -> list[Mismatch]:
    out = []
    if "called" in want and bool(got) != want["called"]:
        out.append(Mismatch(f"{where}.called", want["called"], bool(got)))
    if "count" in want and len(got) != want["count"]:
        out.append(Mismatch(f"{where}.count", want["count"], len(got)))
    detail = {k: v for k, v in want.items() if k not in ("called", "count")}
    if not detail:
        return out
    if not got:
        if want.get("called", True):
            out.append(Mismatch(f"{where}.called", True, False))
        return out
    last = got[-1]
    if "method" in want and last.method != want["method"]:
        out.append(Mismatch(f"{where}.method", want["method"], last.method))
    if "path" in want and last.path != want["path"]:
        out.append(Mismatch(f"{where}.path", want["path"], last.path))
    out += _check_headers(f"{where}.headers", want.get("headers"), want.get("headers_absent"), last.headers)
    body = _show(last.body)
    for s in _strings(want.get("body_contains")):
        if s not in body:
            out.append(Mismatch(f"{where}.body_contains", s, body[:200]))
    return out


def check(case: Case, obs: Observation) -> list[Mismatch]:
    """Everything in `case.expect` that `obs` does not satisfy; empty means the case passed."""
    if obs.error:
        return [Mismatch("run", "no error", obs.error)]
    e = case.expect
    out: list[Mismatch] = []
    resp = obs.response
    if resp is None and any(k in e for k in ("status", "headers", "headers_absent", "body", "body_contains")):
        return [Mismatch("response", "a response", "stream reset without a response")]
    if "status" in e and resp.status != e["status"]:
        out.append(Mismatch("status", e["status"], resp.status))
    if resp is not None:
        out += _check_headers("headers", e.get("headers"), e.get("headers_absent"), resp.headers)
        body = _show(resp.body)
        if "body" in e and body != e["body"]:
            out.append(Mismatch("body", e["body"], body[:500]))
        for s in _strings(e.get("body_contains")):
            if s not in body:
                out.append(Mismatch("body_contains", s, body[:500]))
    if "upstream" in e:
        out += _check_received("upstream", e["upstream"], obs.upstream)
    for name, want in (e.get("clusters") or {}).items():
        out += _check_received(f"clusters.{name}", want, obs.clusters.get(name, []))
    messages = [l.message for l in obs.logs]
    for s in _strings(e.get("logs_contain")):
        if not any(s in m for m in messages):
            out.append(Mismatch("logs_contain", s, messages[-10:]))
    for s in _strings(e.get("logs_absent")):
        hit = [m for m in messages if s in m]
        if hit:
            out.append(Mismatch("logs_absent", s, hit[:3]))
    for name, delta in (e.get("stats") or {}).items():
        got = obs.stats.get(name, 0)
        if got != delta:
            out.append(Mismatch(f"stats.{name}", delta, got))
    for sample, wanted in (e.get("prometheus") or {}).items():
        for want in wanted:
            got = prometheus.matching(obs.prometheus or {}, sample, want.get("labels") or {})
            if got != want["value"]:
                labels = ",".join(f'{k}="{v}"' for k, v in (want.get("labels") or {}).items())
                out.append(Mismatch(f"prometheus.{sample}{{{labels}}}", want["value"], got))
    return out


# Headers whose values legitimately differ between two runs of the same case.
# `connection: close` on an early local reply depends on how the request arrived in socket reads.
VOLATILE_HEADERS = frozenset({"date", "x-request-id", "x-envoy-upstream-service-time", "x-ratelimit-reset",
                              "retry-after", "connection"})

# Per-request values that differ between two runs of the same case wherever a filter copies them
# (log lines, bodies, header values), each with what it is shown as once masked.
_PER_REQUEST = [
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                r" \d{4} \d\d:\d\d:\d\d GMT"), "<date>"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<timestamp>"),
    (re.compile(r"(?<![\w.])(127\.0\.0\.1|\[::1\]|localhost):\d{1,5}\b"), r"\1:<port>"),
    (re.compile(r"(x-envoy-upstream-service-time[\"']?\s*[:=,]\s*[\"']?)\d+", re.I), r"\1<ms>"),
]


def mask(text: str) -> str:
    """`text` with its per-request values (request ids, dates, loopback ports, service times)
    replaced by placeholders, so two runs of one case compare equal where only those differ."""
    for pattern, placeholder in _PER_REQUEST:
        text = pattern.sub(placeholder, text)
    return text


def _stable(headers: Headers) -> list[tuple[str, str]]:
    return sorted((k, mask(v)) for k, v in headers if k not in VOLATILE_HEADERS)


def _stable_body(body: bytes) -> Any:
    """Echo bodies carry the upstream's request headers, which include volatile ones."""
    text = mask(_show(body))
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if isinstance(doc, dict) and isinstance(doc.get("headers"), dict):
        doc = dict(doc, headers={k: v for k, v in doc["headers"].items() if k not in VOLATILE_HEADERS})
    return doc


def _stable_logs(logs: list[LogLine]) -> list[tuple[str, str]]:
    return [(l.level, mask(l.message)) for l in logs]


# What counts as the filter's own error in a run that otherwise passed: a log line at these levels
# (Lua script errors are logged so, as are a Wasm module's own errors), a VM failure (trap), or a
# Lua filter's error counter moving without one.
ERROR_LEVELS = ("error", "critical")


def fault_line(fault: str) -> str:
    """A VM failure in one line: its first line, and its cause when a backtrace separates them."""
    lines = [l.strip() for l in fault.strip().splitlines() if l.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return text if text.startswith("Wasm VM failed") else f"Wasm VM failed: {text}"


def filter_errors(obs: Observation) -> list[str]:
    """The filter's own errors during a case, one line each (empty: none)."""
    out = [f"{l.level}: {l.message}" for l in obs.logs if l.level in ERROR_LEVELS]
    out += [fault_line(f) for f in obs.faults]
    if not out:
        out = [f"{name} +{delta}" for name, delta in obs.stats.items()
               if ".lua." in f".{name}" and name.endswith(".errors") and delta > 0]
    return out


def compare(a: Observation, b: Observation, parts=("status", "headers", "body", "upstream", "logs", "stats"),
            ) -> list[Mismatch]:
    """Where two observations of the same case disagree (a is 'expected', b 'actual').

    Stats are compared for the names `a` reports, so an emulator (which knows only the filter's
    own stats) can be held against live Envoy (which knows them all)."""
    # Both runners got no response in time (a filter that never returns): they agree, and the
    # case fails in each on that error. What they saw before giving up is not comparable.
    if is_no_response(a.error) and is_no_response(b.error):
        return []
    if a.error or b.error:
        return [Mismatch("run", a.error or "ran", b.error or "ran")]
    out: list[Mismatch] = []
    ra, rb = a.response, b.response
    if (ra is None) != (rb is None):
        return [Mismatch("response", "a response" if ra else "no response", "a response" if rb else "no response")]
    if ra is not None:
        if "status" in parts and ra.status != rb.status:
            out.append(Mismatch("status", ra.status, rb.status))
        if "headers" in parts and _stable(ra.headers) != _stable(rb.headers):
            out.append(Mismatch("headers", _stable(ra.headers), _stable(rb.headers)))
        if "body" in parts and _stable_body(ra.body) != _stable_body(rb.body):
            out.append(Mismatch("body", mask(_show(ra.body))[:500], mask(_show(rb.body))[:500]))
    if "upstream" in parts:
        for where, ua, ub in [("upstream", a.upstream, b.upstream),
                              *((f"clusters.{n}", a.clusters.get(n, []), b.clusters.get(n, []))
                                for n in sorted(set(a.clusters) | set(b.clusters)))]:
            if len(ua) != len(ub):
                out.append(Mismatch(f"{where}.count", len(ua), len(ub)))
                continue
            for x, y in zip(ua, ub):
                rx, ry = f"{x.method} {mask(x.path)}", f"{y.method} {mask(y.path)}"
                if rx != ry:
                    out.append(Mismatch(f"{where}.request", rx, ry))
                if _stable(x.headers) != _stable(y.headers):
                    out.append(Mismatch(f"{where}.headers", _stable(x.headers), _stable(y.headers)))
                if _stable_body(x.body) != _stable_body(y.body):
                    out.append(Mismatch(f"{where}.body", mask(_show(x.body))[:200], mask(_show(y.body))[:200]))
    if "logs" in parts:
        la, lb = _stable_logs(a.logs), _stable_logs(b.logs)
        if sorted(la) != sorted(lb):
            out.append(Mismatch("logs", la, lb))
    if "stats" in parts:
        for name, v in a.stats.items():
            if b.stats.get(name, 0) != v:
                out.append(Mismatch(f"stats.{name}", v, b.stats.get(name, 0)))
        if a.prometheus is not None and b.prometheus is not None:
            for (sample, labels), v in a.prometheus.items():
                if b.prometheus.get((sample, labels), 0) != v:
                    out.append(Mismatch(f"prometheus.{sample}{dict(sorted(labels))}", v,
                                        b.prometheus.get((sample, labels), 0)))
    return out
