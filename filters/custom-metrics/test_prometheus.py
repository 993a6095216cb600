"""custom-metrics as a Prometheus scraper sees it: real labels at Envoy's /stats/prometheus.

Scenario `expect.stats` can only check counters by their admin /stats names (the label encoding);
these tests check what a dashboard would query, for both languages. Run:
    .venv/bin/pytest filters/custom-metrics/test_prometheus.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent

# The Lua API creates stats in the Lua filter's scope, which Envoy prints with its envoy_http_lua_
# prefix and the connection manager's tag; proxy-wasm metrics live in Envoy's custom namespace,
# printed bare.
NAMES = {"lua": "envoy_http_lua_envoyext_", "c": "envoyext_"}
SCOPE_LABELS = {"lua": {"envoy_http_conn_manager_prefix": "ingress_http"}, "c": {}}

CONFIG = {
    "prefix": "envoyext",
    "labels": [
        {"name": "method", "from": "method"},
        {"name": "path_prefix", "from": "path_prefix", "prefixes": ["/api"]},
        {"name": "response_code", "from": "response_code"},
        {"name": "response_code_class", "from": "response_code_class"},
        {"name": "tenant", "from": "header", "header": "x-tenant", "values": ["acme"]},
        {"name": "route", "from": "route"},
    ],
}
ROUTES = [{"name": "gone", "match": {"prefix": "/gone"}, "direct_response": {"status": 410}},
          {"name": "api", "match": {"prefix": "/"}}]


def series(prom: dict, name: str) -> dict[frozenset, float]:
    return {frozenset(labels.items()): value for labels, value in prom.get(name, [])}


def scrape_until(envoy, name: str, want: int, timeout: float = 12.0) -> dict:
    """Histograms reach /stats/prometheus only when Envoy flushes stats (every 5 s by default)."""
    deadline = time.monotonic() + timeout
    while True:
        prom = envoy.admin.prometheus()
        if sum(series(prom, name).values()) >= want or time.monotonic() > deadline:
            return prom
        time.sleep(0.25)


@pytest.mark.parametrize("lang", ["lua", "c"])
def test_labels_are_prometheus_labels(envoy_filter, lang):
    envoy = envoy_filter(HERE / lang, config=CONFIG, routes=ROUTES)
    for _ in range(3):
        assert envoy.request("GET", "/api/users/7", headers={"x-tenant": "acme"}).status == 200
    assert envoy.request("DELETE", "/static/x", headers={"x-tenant": "evil"}).status == 200
    assert envoy.request("GET", "/gone").status == 410

    prefix, scope = NAMES[lang], SCOPE_LABELS[lang]
    prom = scrape_until(envoy, prefix + "request_duration_milliseconds_count", 5)

    def labels(**kw):
        return frozenset({**scope, **kw}.items())

    total = series(prom, prefix + "requests_total")
    assert total == {
        labels(method="GET", path_prefix="/api", response_code="200", response_code_class="2xx",
               tenant="acme", route="api"): 3,
        labels(method="DELETE", path_prefix="other", response_code="200", response_code_class="2xx",
               tenant="other", route="api"): 1,
        labels(method="GET", path_prefix="other", response_code="410", response_code_class="4xx",
               tenant="unknown", route="gone"): 1,
    }, total
    # One latency observation per request, under exactly the same label sets.
    counts = series(prom, prefix + "request_duration_milliseconds_count")
    assert counts == total, counts
    buckets = series(prom, prefix + "request_duration_milliseconds_bucket")
    inf = {k - {("le", "+Inf")}: v for k, v in buckets.items() if ("le", "+Inf") in k}
    assert inf == total


def test_wasm_labels_by_upstream_cluster(envoy_filter):
    """The Wasm version reads the upstream cluster (xds.cluster_name); Envoy's Lua API cannot."""
    config = {"labels": [{"name": "upstream_cluster", "from": "upstream_cluster"},
                         {"name": "response_code", "from": "response_code"}]}
    envoy = envoy_filter(HERE / "c", config=config)
    assert envoy.request("GET", "/").status == 200
    prom = envoy.admin.prometheus()
    assert series(prom, "envoyext_requests_total") == {
        frozenset({"upstream_cluster": "upstream", "response_code": "200"}.items()): 1}
