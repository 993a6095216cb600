"""Scenarios, observations and the one checker.

A scenario (YAML) says what to send through a filter and what should come out. Every runner, the
emulators and live Envoy alike, turns a scenario into one `Observation` per case; `check()` judges
an observation against the case's expectations and `compare()` judges two observations of the same
case against each other (emulated vs live, filter vs native oracle). Runners only produce
observations; nothing else decides pass or fail.
"""

from __future__ import annotations

import json
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

    def matches(self, path: str, headers: Headers) -> bool:
        """Envoy's route match for the subset of fields the scenario format allows."""
        m = self.match
        bare = path.split("?", 1)[0]
        if "path" in m and bare != m["path"]:
            return False
        if "prefix" in m and not path.startswith(m["prefix"]):
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

    def route_for(self, path: str, headers: Headers) -> Route | None:
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
        routes.append(Route(name=r.get("name", f"route{i}"), match=r["match"], cluster=target,
                            direct_response=r.get("direct_response"), metadata=r.get("metadata"),
                            per_filter_config=r.get("per_filter_config"), timeout_ms=r.get("timeout_ms")))
    cases = []
    for i, c in enumerate(data["cases"]):
        for name in (c.get("expect") or {}).get("clusters") or {}:
            if name not in clusters:
                raise UserError(f"expectation on undeclared cluster '{name}'", file=path,
                                field=f"cases[{i}].expect.clusters.{name}", fix="declare it under 'clusters'")
        rq = c.get("request") or {}
        cases.append(Case(
            name=c["name"],
            request=Request(method=rq.get("method", "GET"), path=rq.get("path", "/"),
                            authority=rq.get("authority", "example.com"),
                            headers=header_list(rq.get("headers")),
                            body=rq.get("body", "").encode(), trailers=header_list(rq.get("trailers")),
                            timeout_ms=rq.get("timeout_ms", DEFAULT_RESPONSE_TIMEOUT_MS)),
            expect=c.get("expect") or {}, repeat=c.get("repeat", 1), wait_ms=c.get("wait_ms", 0),
            only=c.get("only")))
        _check_sendable(cases[-1].request, path, f"cases[{i}].request")
    o = data.get("oracle")
    oracle = Oracle(o.get("http_filters", []), o.get("typed_per_filter_config", {}),
                    o.get("compare", ["status", "headers", "body", "upstream"])) if o else None
    return Scenario(path=path, name=data.get("name", path.stem),
                    config=data["config"] if "config" in data else default_config,
                    upstream=UpstreamSpec.from_dict(data.get("upstream") or {}),
                    clusters=clusters, routes=routes or default_routes(), cases=cases, oracle=oracle)


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


def _stable(headers: Headers) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers if k not in VOLATILE_HEADERS)


def _stable_body(body: bytes) -> Any:
    """Echo bodies carry the upstream's request headers, which include volatile ones."""
    try:
        doc = json.loads(body)
    except ValueError:
        return _show(body)
    if isinstance(doc, dict) and isinstance(doc.get("headers"), dict):
        doc = dict(doc, headers={k: v for k, v in doc["headers"].items() if k not in VOLATILE_HEADERS})
    return doc


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
            out.append(Mismatch("body", _show(ra.body)[:500], _show(rb.body)[:500]))
    if "upstream" in parts:
        for where, ua, ub in [("upstream", a.upstream, b.upstream),
                              *((f"clusters.{n}", a.clusters.get(n, []), b.clusters.get(n, []))
                                for n in sorted(set(a.clusters) | set(b.clusters)))]:
            if len(ua) != len(ub):
                out.append(Mismatch(f"{where}.count", len(ua), len(ub)))
                continue
            for x, y in zip(ua, ub):
                if (x.method, x.path) != (y.method, y.path):
                    out.append(Mismatch(f"{where}.request", f"{x.method} {x.path}", f"{y.method} {y.path}"))
                if _stable(x.headers) != _stable(y.headers):
                    out.append(Mismatch(f"{where}.headers", _stable(x.headers), _stable(y.headers)))
                if x.body != y.body:
                    out.append(Mismatch(f"{where}.body", _show(x.body)[:200], _show(y.body)[:200]))
    if "logs" in parts:
        la = [(l.level, l.message) for l in a.logs]
        lb = [(l.level, l.message) for l in b.logs]
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
