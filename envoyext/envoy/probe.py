"""What one case did to a running Envoy: its counters, Prometheus series and log lines, read before
and after the case, once Envoy has settled.

A probe belongs to one proxy (its ProxyIdentity names the connection manager whose active requests
the settle poll waits out); a mesh case opens one per proxy it crosses.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from envoyext import prometheus
from envoyext.envoy.admin import Admin
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.envoy.runtime import EnvoyRuntime

# The probe's own admin requests move these; they say nothing about the case.
ADMIN_STATS = ("http.admin.", "listener.admin.")


@dataclass
class CaseEffects:
    stats: dict[str, int]                      # counters and gauges that changed, by how much
    prometheus: prometheus.Series | None       # series that changed (when asked to scrape)
    log: str                                   # Envoy's log written during the case


def _admin(envoy: EnvoyRuntime) -> Admin:
    if envoy.admin is None:
        raise RuntimeError("Envoy is not ready: no admin address yet")
    return envoy.admin


def scrape(envoy: EnvoyRuntime, settle: bool = False, timeout: float = 3.0) -> prometheus.Series:
    """/stats/prometheus as series. Each scrape makes Envoy flush (stats_flush_on_admin), and
    histograms land a moment after the flush: with `settle`, scrape until two scrapes agree."""
    admin = _admin(envoy)
    current = prometheus.parse(admin.prometheus())
    deadline = time.monotonic() + timeout
    while settle and time.monotonic() < deadline:
        time.sleep(0.05)
        previous, current = current, prometheus.parse(admin.prometheus())
        if current == previous:
            break
    return current


class CaseProbe:
    """Open before the case's first request, `settle()` after each, `close()` after the last."""

    def __init__(self, envoy: EnvoyRuntime, identity: ProxyIdentity = TEST_PROXY, *, prometheus: bool = False):
        self.envoy = envoy
        self.identity = identity
        self._before = _admin(envoy).stats()
        self._series_before = scrape(envoy) if prometheus else None
        self._log_offset = envoy.log_size()

    def settle(self, timeout: float = 5) -> None:
        """Wait until no downstream request is active: on_log / access logging have run."""
        deadline = time.monotonic() + timeout
        name = self.identity.hcm_stats + "downstream_rq_active"
        admin = _admin(self.envoy)
        while time.monotonic() < deadline:  # polled: ask for the one gauge, not every stat
            if admin.stats(f"^{re.escape(name)}$").get(name, 0) == 0:
                return
            time.sleep(0.01)

    def close(self) -> CaseEffects:
        after = _admin(self.envoy).stats()
        before = self._before
        series = None
        if self._series_before is not None:
            series = prometheus.delta(self._series_before, scrape(self.envoy, settle=True))
        return CaseEffects(
            stats={k: v - before.get(k, 0) for k, v in after.items()
                   if v != before.get(k, 0) and not k.startswith(ADMIN_STATS)},
            prometheus=series, log=self.envoy.log_since(self._log_offset))
