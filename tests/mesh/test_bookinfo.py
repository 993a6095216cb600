"""Bookinfo against live Envoys: every proxy a real Envoy, every pod a stand-in app on loopback.

Each scenario under examples/bookinfo/scenarios/ must pass case by case, and each gets a negative control
(the same run judged against a wrong expectation must fail), so a pass here means the mesh did it.
With a copy of Istio's samples/bookinfo (ENVOYEXT_BOOKINFO, or one beside the checkout: see
conftest.official_bookinfo), the routing scenario runs on the official manifests, unmodified,
instead of the suite's copy.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from envoyext import scenario, testrun
from envoyext.runners import MESH
from envoyext.runners.mesh import validate
from envoyext.scenario import Scenario
from tests.mesh.conftest import official_bookinfo

HERE = Path(__file__).parent
SUITE = HERE.resolve().parents[1] / "examples" / "bookinfo"
SCENARIOS = SUITE / "scenarios"
# The suite's files and the official ones they stand for (samples/bookinfo/...).
OFFICIAL = {
    "platform.yaml": "platform/kube/bookinfo.yaml",
    "gateway.yaml": "networking/bookinfo-gateway.yaml",
    "destination-rules.yaml": "networking/destination-rule-all.yaml",
    "routing/reviews-80-20.yaml": "networking/virtual-service-reviews-80-20.yaml",
    "routing/reviews-end-user-v2.yaml": "networking/virtual-service-reviews-test-v2.yaml",
    "routing/ratings-delay.yaml": "networking/virtual-service-ratings-test-delay.yaml",
    "routing/ratings-abort.yaml": "networking/virtual-service-ratings-test-abort.yaml",
    "routing/all-v1.yaml": "networking/virtual-service-all-v1.yaml",
}


def official(sc: Scenario, root: Path) -> Scenario:
    """The scenario with every suite Bookinfo file swapped for the official one it stands for."""
    def swap(p: Path) -> Path:
        rel = p.resolve().relative_to(SUITE.resolve()).as_posix() if SUITE.resolve() in p.resolve().parents else None
        return root / OFFICIAL[rel] if rel in OFFICIAL else p
    sc = copy.deepcopy(sc)
    assert sc.mesh is not None
    sc.mesh.resources = [swap(p) for p in sc.mesh.resources]
    for c in sc.cases:
        c.apply = [swap(p) for p in c.apply]
    return sc


def run(sc: Scenario) -> list[testrun.CaseResult]:
    validate(sc)
    return testrun.run_scenario(None, sc, runners=(MESH,), validated=True)


def _failures(results: list[testrun.CaseResult]) -> dict[str, list[str]]:
    return {r.case: [str(m) for ms in r.failures.values() for m in ms] for r in results if not r.passed}


def _judge_again(sc: Scenario, results: list[testrun.CaseResult], case_name: str, expect: dict) -> list:
    """The observation of one case judged against another expectation (the negative control)."""
    i = next(i for i, c in enumerate(sc.cases) if c.name == case_name)
    wrong = copy.deepcopy(sc.cases[i])
    wrong.expect = expect
    return scenario.check(wrong, results[i].observations[MESH])


@pytest.fixture(scope="module")
def routing() -> tuple[Scenario, list[testrun.CaseResult]]:
    sc = scenario.load(SCENARIOS / "routing.yaml")
    root = official_bookinfo()
    if root:
        sc = official(sc, root)
    return sc, run(sc)


def test_bookinfo_routing_scenario_passes(routing):
    sc, results = routing
    assert [r.case for r in results] == [c.name for c in sc.cases]
    assert _failures(results) == {}


@pytest.mark.parametrize("case_name,wrong", [
    ("80/20 between reviews v1 and v2", {"answered_by": {"reviews-v1": 0.5, "reviews-v2": 0.5}, "tolerance": 0.08}),
    ("end-user jason is routed to reviews v2", {"answered_by": {"reviews-v1": 1.0}, "tolerance": 0}),
    ("jason's calls to ratings are delayed 7 s", {"min_duration_ms": 9000}),
    ("jason's calls to ratings are aborted with 500", {"status": 200}),
    ("with retries on 5xx, the sidecar tries 3 more times", {"retries": 2}),
    ("a mirror sends a copy of every call to reviews v2", {"workloads": {"reviews-v2": {"called": False}}}),
    ("once ejected, it gets no more traffic", {"workloads": {"reviews-v3": {"called": True}}}),
])
def test_negative_controls_fail_on_the_same_observations(routing, case_name, wrong):
    sc, results = routing
    assert _judge_again(sc, results, case_name, wrong), f"{case_name}: a wrong expectation passed"


def test_circuit_breaker_overflows_with_envoys_503():
    sc = scenario.load(SCENARIOS / "circuit-breaker.yaml")
    results = run(sc)
    assert _failures(results) == {}
    obs = results[0].observations[MESH]
    overflowed = [r for r in obs.responses if r.status == 503]
    assert overflowed and all(("x-envoy-overloaded", "true") in r.headers for r in overflowed)
    # Every 503 is the sidecar's overflow, and ratings got exactly the calls that were answered.
    assert any(k.endswith("upstream_rq_pending_overflow") and v == len(overflowed) for k, v in obs.stats.items())
    assert len(obs.workloads["ratings-v1"]) == len(obs.responses) - len(overflowed)
    assert _judge_again(sc, results, "ten at once overflow the pool", {"statuses": {200: 10}})
    # the 503s carry Envoy's UO flag in Istio's metric, not another flag (control)
    uf = {"prometheus": {"istio_requests_total": [{"labels": {"reporter": "source", "response_code": "503",
                                                              "response_flags": "UF"}, "value": {"min": 1}}]}}
    assert _judge_again(sc, results, "ten at once overflow the pool", uf)


def test_telemetry_metrics_and_trace_across_gateway_and_sidecars():
    sc = scenario.load(SCENARIOS / "telemetry.yaml")
    results = run(sc)
    assert _failures(results) == {}
    obs = results[0].observations[MESH]
    assert obs.spans and len({s["traceId"] for s in obs.spans}) == 1  # one trace, not three
    name = sc.cases[0].name
    wrong_workload = {"prometheus": {"istio_requests_total": [
        {"labels": {"reporter": "source", "source_workload": "productpage-v1", "destination_workload": "reviews-v2"},
         "value": 1}]}}
    assert _judge_again(sc, results, name, wrong_workload)
    assert _judge_again(sc, results, name, {"trace": {"services": ["ratings.default"]}})


def test_envoyfilters_written_for_istio_apply_as_istio_applies_them():
    sc = scenario.load(SCENARIOS / "envoyfilter.yaml")
    results = run(sc)
    assert _failures(results) == {}
    # Negative controls: the same observations against the opposite expectations.
    assert _judge_again(sc, results, "reviews v2 has no such filter", {"headers": {"x-reviews-lua": "inbound"}})
    assert _judge_again(sc, results, "the gateway's Lua filter answers /healthz itself",
                        {"workloads": {"productpage-v1": {"called": True}}})
    assert _judge_again(sc, results, "the patch is on ratings' route only", {"headers": {"x-route-patched": "ratings"}})


def test_every_proxy_serves_prometheus_on_15090_and_readiness_on_15021():
    """Istio's scrape and health ports, on each proxy's own pod IP, as a Prometheus would scrape them."""
    import urllib.request

    from envoyext.runners.mesh import build, load_resources, started
    resources = load_resources([SUITE / "platform.yaml", SUITE / "gateway.yaml", SUITE / "destination-rules.yaml"])
    with started(build(resources)) as rt:
        assert rt.mesh is not None
        urllib.request.urlopen(rt.gateway_url() + "/productpage", timeout=10).read()
        for proxy in rt.mesh.proxies:
            ip = proxy.workload.ip
            with urllib.request.urlopen(f"http://{ip}:15021/healthz/ready", timeout=10) as r:
                assert r.status == 200
            text = urllib.request.urlopen(f"http://{ip}:15090/stats/prometheus", timeout=10).read().decode()
            assert "envoy_server_live" in text
        gateway = next(p for p in rt.mesh.proxies if p.kind == "router")
        scrape = f"http://{gateway.workload.ip}:15090/stats/prometheus"
        text = urllib.request.urlopen(scrape, timeout=10).read().decode()
        counted = [line for line in text.splitlines() if line.startswith("istio_requests_total{")]
        assert any('reporter="source"' in line and 'destination_workload="productpage-v1"' in line
                   and line.endswith(" 1") for line in counted), counted
        assert not any('destination_workload="reviews-v1"' in line for line in counted)  # negative control


def test_authorization_policies_are_enforced_by_the_sidecar():
    sc = scenario.load(SCENARIOS / "authorization.yaml")
    results = run(sc)
    assert _failures(results) == {}
    assert _judge_again(sc, results, "a POST is not allowed", {"status": 200})
    assert _judge_again(sc, results, "a blocked request is denied even where it would be allowed", {"status": 200})
    assert _judge_again(sc, results, "other services are not affected", {"status": 403})
