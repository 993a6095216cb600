"""What a runner saw: one `Observation` per case, the same type from every runner and for any
number of proxies.

Masking lives here too: the per-request values (request ids, dates, loopback ports) an observation
carries wherever a filter copies them, replaced by placeholders so two runs can be compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from envoyext.envoy.identity import TEST_PROXY
from envoyext.messages import Received, Response


@dataclass
class LogLine:
    level: str  # trace | debug | info | warn | error | critical (Envoy's, with spdlog's "warning" as "warn")
    message: str
    proxy: str = TEST_PROXY.name  # the proxy whose filter logged it (its ProxyIdentity.name)


# A Prometheus series that changed over a case, (sample, labels) -> delta: see envoyext.prometheus.
PrometheusDeltas = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Observation:
    """What one runner saw for one case. Every runner produces exactly this.

    A case may cross several proxies (in a mesh, a gateway and the sidecars behind it): log lines
    and received requests name the proxy they came from, and stats are kept per proxy. `proxy` is
    the one the client sent to; its stats are `stats`, the single-proxy view expectations check.
    """
    case: str
    runner: str                                 # its registry name (envoyext.runners)
    response: Response | None = None           # the last response (None: stream reset, no response)
    responses: list[Response] = field(default_factory=list)
    upstream: list[Received] = field(default_factory=list)
    clusters: dict[str, list[Received]] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)  # the filter's own log lines, every proxy's
    stats: dict[str, int] = field(default_factory=dict)  # `proxy`'s deltas over the case
    # Series at /stats/prometheus that changed over the case; gathered only for cases that expect
    # some (None otherwise).
    prometheus: PrometheusDeltas | None = None
    error: str | None = None                    # the runner could not run the case
    faults: list[str] = field(default_factory=list)  # the filter's VM failed (a Wasm trap): the reasons
    proxy: str = TEST_PROXY.name                # the proxy the client sent the case's requests to
    # Every other proxy the case crossed: its name -> its stat deltas over the case.
    other_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    # Mesh runs: which workload (Deployment) answered each response (None: no app did, e.g. a
    # proxy's own 503 or fault abort), what each workload's app received, how long each response
    # took, and the spans of the case's last request (None: not gathered).
    answered_by: list[str | None] = field(default_factory=list)
    workloads: dict[str, list[Received]] = field(default_factory=dict)
    durations_ms: list[float] = field(default_factory=list)
    spans: list[dict[str, Any]] | None = None
    resets: int = 0   # mesh: requests that got no response (connection or stream refused or reset)

    def stats_by_proxy(self) -> dict[str, dict[str, int]]:
        """Every proxy's stat deltas, by proxy name, the client's proxy first."""
        return {self.proxy: self.stats, **self.other_stats}

    def stats_of(self, proxy: str) -> dict[str, int]:
        return self.stats_by_proxy().get(proxy, {})

    def log_text(self, line: LogLine) -> str:
        """A log line as reports and JSON show it: `level: message`, with the proxy's name in
        front when it is not the client's proxy."""
        text = f"{line.level}: {line.message}"
        return text if line.proxy == self.proxy else f"{line.proxy} {text}"

    def to_json(self) -> dict[str, Any]:
        def rx(r: Received) -> dict[str, Any]:
            return {"method": r.method, "path": r.path, "headers": r.headers, "body": show(r.body),
                    "proxy": r.proxy}
        resp = self.response
        return {
            "case": self.case, "runner": self.runner, "proxy": self.proxy, "error": self.error,
            "response": None if resp is None else
            {"status": resp.status, "headers": resp.headers, "body": show(resp.body)},
            "upstream": [rx(r) for r in self.upstream],
            "clusters": {k: [rx(r) for r in v] for k, v in self.clusters.items()},
            "logs": [self.log_text(line) for line in self.logs],
            "faults": self.faults,
            "stats": self.stats,
            "other_stats": self.other_stats,
            "answered_by": self.answered_by,
            "workloads": {k: [rx(r) for r in v] for k, v in self.workloads.items()},
            "durations_ms": [round(d, 1) for d in self.durations_ms],
            "resets": self.resets,
            "spans": self.spans,
            "prometheus": None if self.prometheus is None else [
                {"sample": name, "labels": dict(sorted(labels)), "delta": v}
                for (name, labels), v in sorted(self.prometheus.items(), key=lambda kv: kv[0][0])],
        }


def show(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def startup_logs(lines: list[LogLine]) -> list[LogLine]:
    """What a filter logged while it started, each distinct line once: Envoy starts the plugin in a
    VM per worker and on the main thread (3 times with 1 worker, measured), the emulator in its own."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for line in lines:
        if (line.proxy, line.level, line.message) not in seen:
            seen.add((line.proxy, line.level, line.message))
            out.append(line)
    return out


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

