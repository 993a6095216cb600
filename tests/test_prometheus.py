"""Stat names as /stats/prometheus prints them (pinned to what Envoy 1.40 printed live)."""

from envoyext import prometheus as P
from envoyext.scenario import Case, Observation, Request, check

TAGS = [{"tag_name": "method", "regex": r"[.;](method=\.=(.*?);\.;)"},
        {"tag_name": "code", "regex": r"[.;](code=\.=(.*?);\.;)"}]


def test_lua_stat_gets_envoy_prefix_and_connection_manager_label():
    name, labels = P.tagged("http.ingress_http.lua.envoyext_requests_total.method=.=GET;.;code=.=200;.;", TAGS)
    assert name == "envoy_http_lua_envoyext_requests_total"
    assert labels == {"envoy_http_conn_manager_prefix": "ingress_http", "method": "GET", "code": "200"}


def test_wasm_custom_namespace_is_bare():
    assert P.tagged("wasmcustom.envoyext_requests_total.method=.=GET;.;", TAGS) == (
        "envoyext_requests_total", {"method": "GET"})


def test_counters_get_total_once_and_histograms_a_count():
    s = P.series({"wasmcustom.hits": 2, "wasmcustom.done_total": 1}, {"wasmcustom.level": 7},
                 {"wasmcustom.latency": [1.0, 5.0]})
    assert s == {("hits_total", frozenset()): 2, ("done_total", frozenset()): 1, ("level", frozenset()): 7,
                 ("latency_count", frozenset()): 2}


def test_expectation_sums_series_whose_labels_include_the_given_ones():
    obs = Observation("a", "t", prometheus={("x_total", frozenset({("m", "GET"), ("c", "200")})): 2,
                                            ("x_total", frozenset({("m", "GET"), ("c", "500")})): 1})
    ok = {"prometheus": {"x_total": [{"labels": {"m": "GET"}, "value": 3}, {"labels": {"c": 500}, "value": 1}]}}
    assert check(Case("a", Request(), ok), obs) == []
    bad = {"prometheus": {"x_total": [{"labels": {"m": "POST"}, "value": 1}]}}
    assert [m.where for m in check(Case("a", Request(), bad), obs)] == ['prometheus.x_total{m="POST"}']
