"""The one checker: `check()` judges an observation against its case's expectations, `compare()`
two observations of one case against each other (emulated vs live, filter vs native oracle).
Runners only produce observations; nothing else decides pass or fail.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoyext import prometheus
from envoyext.messages import Headers, Received, header_text, is_no_response, values
from envoyext.scenario.model import Case
from envoyext.scenario.observation import LogLine, Observation, mask, show


@dataclass
class Mismatch:
    where: str      # e.g. "status", "headers.x-hello", "upstream.headers.x-a"
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.where}: expected {self.expected!r}, got {self.actual!r}"


# An expectation as the scenario's YAML holds it (validated against schemas/scenario.yaml).
Expectation = dict[str, Any]


def _strings(v: str | list[str] | None) -> list[str]:
    return [] if v is None else ([v] if isinstance(v, str) else list(v))


def _check_headers(where: str, want: Expectation | None, absent: list[str] | None, got: Headers) -> list[Mismatch]:
    out = []
    for name, value in (want or {}).items():
        have = values(got, name)
        if isinstance(value, list):
            exp = [header_text(v) for v in value]
            if have != exp:
                out.append(Mismatch(f"{where}.{name}", exp, have or None))
        else:
            one = header_text(value)
            if ",".join(have) != one and one not in have:
                out.append(Mismatch(f"{where}.{name}", one, ",".join(have) if have else None))
    for name in absent or []:
        have = values(got, name)
        if have:
            out.append(Mismatch(f"{where}.{name}", "absent", ",".join(have)))
    return out


def _check_received(where: str, want: Expectation, got: list[Received]) -> list[Mismatch]:
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
    for name, part in (want.get("headers_contain") or {}).items():   # values with a varying part (XFCC's Hash)
        have = ",".join(values(last.headers, name))
        if str(part) not in have:
            out.append(Mismatch(f"{where}.headers_contain.{name}", str(part), have or None))
    body = show(last.body)
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
    if resp is not None:
        if "status" in e and resp.status != e["status"]:
            out.append(Mismatch("status", e["status"], resp.status))
        out += _check_headers("headers", e.get("headers"), e.get("headers_absent"), resp.headers)
        body = show(resp.body)
        if "body" in e and body != e["body"]:
            out.append(Mismatch("body", e["body"], body[:500]))
        for s in _strings(e.get("body_contains")):
            if s not in body:
                out.append(Mismatch("body_contains", s, body[:500]))
    if "upstream" in e:
        out += _check_received("upstream", e["upstream"], obs.upstream)
    for name, want in (e.get("clusters") or {}).items():
        out += _check_received(f"clusters.{name}", want, obs.clusters.get(name, []))
    # The filter's log lines on every proxy the case crossed; each shown with its proxy unless it is
    # the client's (so a single proxy's read as before).
    messages = [l.message for l in obs.logs]
    shown = [l.message if l.proxy == obs.proxy else f"{l.proxy}: {l.message}" for l in obs.logs]
    for s in _strings(e.get("logs_contain")):
        if not any(s in m for m in messages):
            out.append(Mismatch("logs_contain", s, shown[-10:]))
    for s in _strings(e.get("logs_absent")):
        hit = [line for m, line in zip(messages, shown) if s in m]
        if hit:
            out.append(Mismatch("logs_absent", s, hit[:3]))
    for name, delta in (e.get("stats") or {}).items():  # the client's proxy's, as `stats` holds
        got = obs.stats.get(name, 0)
        if isinstance(delta, dict):   # a range, for counts that depend on timing (rotations)
            if got < delta.get("min", 0) or got > delta.get("max", got):
                out.append(Mismatch(f"stats.{name}", f"{delta.get('min', 0)}..{delta.get('max', '')}", got))
        elif got != delta:
            out.append(Mismatch(f"stats.{name}", delta, got))
    out += _check_mesh(e, obs)
    for sample, wanted in (e.get("prometheus") or {}).items():
        for want in wanted:
            value = prometheus.matching(obs.prometheus or {}, sample, want.get("labels") or {})
            w = want["value"]
            ok = (w.get("min", value) <= value <= w.get("max", value)) if isinstance(w, dict) else value == w
            if not ok:
                labels = ",".join(f'{k}="{v}"' for k, v in (want.get("labels") or {}).items())
                wanted_text: Any = f"{w.get('min', '')}..{w.get('max', '')}" if isinstance(w, dict) else w
                out.append(Mismatch(f"prometheus.{sample}{{{labels}}}", wanted_text, value))
    return out


def _check_mesh(e: Expectation, obs: Observation) -> list[Mismatch]:
    """The expectations only a mesh run has: who answered, what each app received, retries, timing, spans."""
    out: list[Mismatch] = []
    if "answered_by" in e:
        total = len(obs.answered_by)
        tolerance = e.get("tolerance", 0.1)
        counts = {w: obs.answered_by.count(w) for w in set(obs.answered_by)}
        shares = {str(w): round(n / total, 3) for w, n in sorted(counts.items(), key=lambda kv: str(kv[0]))}
        for workload, want in e["answered_by"].items():
            share = counts.get(workload, 0) / total if total else 0.0
            if abs(share - want) > tolerance + 1e-9:
                out.append(Mismatch(f"answered_by.{workload}", f"{want} ± {tolerance}", shares))
    if "statuses" in e:
        got: dict[str, int] = {"reset": obs.resets} if obs.resets else {}
        for r in obs.responses:
            got[str(r.status)] = got.get(str(r.status), 0) + 1
        for status, n in e["statuses"].items():
            have = got.get(str(status), 0)
            if isinstance(n, dict):
                if have < n.get("min", 0) or have > n.get("max", have):
                    out.append(Mismatch(f"statuses.{status}", f"{n.get('min', 0)}..{n.get('max', '')}", got))
            elif have != n:
                out.append(Mismatch(f"statuses.{status}", n, got))
    for name, want in (e.get("workloads") or {}).items():
        out += _check_received(f"workloads.{name}", want, obs.workloads.get(name, []))
    if "retries" in e:
        retries = sum(v for k, v in obs.stats.items() if k.endswith(".upstream_rq_retry"))
        if retries != e["retries"]:
            out.append(Mismatch("retries", e["retries"], retries))
    if "min_duration_ms" in e:
        slowest = max(obs.durations_ms, default=0.0)
        if slowest < e["min_duration_ms"]:
            out.append(Mismatch("min_duration_ms", e["min_duration_ms"], round(slowest)))
    if "trace" in e:
        want = e["trace"]
        spans = obs.spans or []
        services = {str((s.get("localEndpoint") or {}).get("serviceName")) for s in spans}
        for service in want.get("services", []):
            if service not in services:
                out.append(Mismatch("trace.services", service, sorted(services)))
        if len(spans) < want.get("min_spans", 1):
            out.append(Mismatch("trace.min_spans", want.get("min_spans", 1), len(spans)))
    return out


# Headers whose values legitimately differ between two runs of the same case.
# `connection: close` on an early local reply depends on how the request arrived in socket reads.
VOLATILE_HEADERS = frozenset({"date", "x-request-id", "x-envoy-upstream-service-time", "x-ratelimit-reset",
                              "retry-after", "connection"})


def _stable(headers: Headers) -> list[tuple[str, str]]:
    return sorted((k, mask(v)) for k, v in headers if k not in VOLATILE_HEADERS)


def _stable_body(body: bytes) -> Any:
    """Echo bodies carry the upstream's request headers, which include volatile ones."""
    text = mask(show(body))
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if isinstance(doc, dict) and isinstance(doc.get("headers"), dict):
        doc = dict(doc, headers={k: v for k, v in doc["headers"].items() if k not in VOLATILE_HEADERS})
    return doc


def _stable_logs(logs: list[LogLine], proxy: str) -> list[tuple[str, str]]:
    return [(l.level, mask(l.message)) for l in logs if l.proxy == proxy]


def _where(proxy: str, client_proxy: str, where: str) -> str:
    """What a mismatch is about: as for a single proxy on the client's proxy, under
    `proxies.<name>.` on any other."""
    return where if proxy == client_proxy else f"proxies.{proxy}.{where}"


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
    """The filter's own errors during a case on every proxy it crossed, one line each (empty: none)."""
    out = [obs.log_text(l) for l in obs.logs if l.level in ERROR_LEVELS]
    out += [fault_line(f) for f in obs.faults]
    if not out:
        out = [_where(proxy, obs.proxy, f"{name} +{delta}") for proxy, stats in obs.stats_by_proxy().items()
               for name, delta in stats.items() if ".lua." in f".{name}" and name.endswith(".errors") and delta > 0]
    return out


def compare(a: Observation, b: Observation,
            parts: Sequence[str] = ("status", "headers", "body", "upstream", "logs", "stats")) -> list[Mismatch]:
    """Where two observations of the same case disagree (a is 'expected', b 'actual'), proxy by
    proxy: what the same proxy logged and counted, and which proxy sent each received request.

    Stats are compared for the names `a` reports, so an emulator (which knows only the filter's
    own stats) can be held against live Envoy (which knows them all)."""
    # Both runners got no response in time (a filter that never returns): they agree, and the
    # case fails in each on that error. What they saw before giving up is not comparable.
    if is_no_response(a.error) and is_no_response(b.error):
        return []
    if a.error or b.error:
        return [Mismatch("run", a.error or "ran", b.error or "ran")]
    if a.proxy != b.proxy:
        return [Mismatch("proxy", a.proxy, b.proxy)]
    out: list[Mismatch] = []
    ra, rb = a.response, b.response
    if ra is None or rb is None:
        if (ra is None) != (rb is None):
            return [Mismatch("response", "a response" if ra else "no response", "a response" if rb else "no response")]
    else:
        if "status" in parts and ra.status != rb.status:
            out.append(Mismatch("status", ra.status, rb.status))
        if "headers" in parts and _stable(ra.headers) != _stable(rb.headers):
            out.append(Mismatch("headers", _stable(ra.headers), _stable(rb.headers)))
        if "body" in parts and _stable_body(ra.body) != _stable_body(rb.body):
            out.append(Mismatch("body", mask(show(ra.body))[:500], mask(show(rb.body))[:500]))
    if "upstream" in parts:
        for where, ua, ub in [("upstream", a.upstream, b.upstream),
                              *((f"clusters.{n}", a.clusters.get(n, []), b.clusters.get(n, []))
                                for n in sorted(set(a.clusters) | set(b.clusters)))]:
            if len(ua) != len(ub):
                out.append(Mismatch(f"{where}.count", len(ua), len(ub)))
                continue
            for x, y in zip(ua, ub):
                if x.proxy != y.proxy:
                    out.append(Mismatch(f"{where}.proxy", x.proxy, y.proxy))
                rx, ry = f"{x.method} {mask(x.path)}", f"{y.method} {mask(y.path)}"
                if rx != ry:
                    out.append(Mismatch(f"{where}.request", rx, ry))
                if _stable(x.headers) != _stable(y.headers):
                    out.append(Mismatch(f"{where}.headers", _stable(x.headers), _stable(y.headers)))
                if _stable_body(x.body) != _stable_body(y.body):
                    out.append(Mismatch(f"{where}.body", mask(show(x.body))[:200], mask(show(y.body))[:200]))
    if "logs" in parts:
        proxies = dict.fromkeys([a.proxy, *(l.proxy for l in a.logs), *(l.proxy for l in b.logs)])
        for proxy in proxies:
            la, lb = _stable_logs(a.logs, proxy), _stable_logs(b.logs, proxy)
            if sorted(la) != sorted(lb):
                out.append(Mismatch(_where(proxy, a.proxy, "logs"), la, lb))
    if "stats" in parts:
        for proxy, stats in a.stats_by_proxy().items():
            theirs = b.stats_of(proxy)
            for name, v in stats.items():
                if theirs.get(name, 0) != v:
                    out.append(Mismatch(_where(proxy, a.proxy, f"stats.{name}"), v, theirs.get(name, 0)))
        if a.prometheus is not None and b.prometheus is not None:
            for (sample, labels), d in a.prometheus.items():
                if b.prometheus.get((sample, labels), 0) != d:
                    out.append(Mismatch(f"prometheus.{sample}{dict(sorted(labels))}", d,
                                        b.prometheus.get((sample, labels), 0)))
    return out
