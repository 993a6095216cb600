"""Bookinfo under load and faults (examples/bookinfo/scenarios/under-load.yaml, and mtls.yaml's
plaintext burst): sustained traffic through the gateway and three hops, a routing change and a pod
killed while requests are in flight, each with zero failed requests; a client outside the mesh
answered while it is PERMISSIVE and refused, every attempt, once it is STRICT.

Controls: every case judged again against a wrong expectation fails; the kill without retries (the
same outlier detection, no VirtualService retries) costs callers 503s, so the retries are what hid
it; a `during:` action whose time comes after the last response is an error, never a silent pass;
nothing listening is an error from outside, never counted as a refusal."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from envoyext import scenario
from envoyext.mesh import traffic
from envoyext.messages import Request
from tests.mesh.test_bookinfo import SCENARIOS, _failures, _judge_again, run

LOAD = SCENARIOS / "under-load.yaml"
SUSTAINED, OUTSIDE, REROUTE, KILL = (
    "sustained traffic through the gateway and three hops, zero errors",
    "a plaintext client outside the mesh is answered while it is PERMISSIVE",
    "routing changes while requests flow, zero errors",
    "a pod killed under load is ejected and retries hide it")


@pytest.fixture(scope="module")
def under_load():
    sc = scenario.load(LOAD)
    return sc, run(sc)


def test_the_mesh_under_load_loses_no_request(under_load):
    sc, results = under_load
    assert [r.case for r in results] == [c.name for c in sc.cases]
    assert _failures(results) == {}


@pytest.mark.parametrize("case_name, wrong", [
    (SUSTAINED, {"statuses": {200: 999}}),
    (SUSTAINED, {"workloads": {"ratings-v1": {"count": 999}}}),
    (OUTSIDE, {"statuses": {"reset": 20}}),
    (REROUTE, {"workloads": {"reviews-v2": {"called": False}}}),     # the change did land mid-load
    (KILL, {"stats": {"cluster.outbound|9080||reviews.default.svc.cluster.local"
                      ".outlier_detection.ejections_enforced_total": 0}}),
    (KILL, {"statuses": {200: 1000}, "workloads": {"reviews-v2": {"called": True}}}),   # it is gone afterwards
])
def test_negative_controls(under_load, case_name, wrong):
    sc, results = under_load
    assert _judge_again(sc, results, case_name, wrong), f"{case_name}: a wrong expectation passed"


def _variant(tmp_path: Path, case_name: str, change) -> scenario.Scenario:
    """under-load.yaml with one case kept (as written, then changed), in tmp_path, its paths absolute."""
    data = yaml.safe_load(LOAD.read_text())
    data["cases"] = [change(copy.deepcopy(c)) for c in data["cases"] if c["name"] == case_name]

    def absolute(p: str) -> str:
        return str((SCENARIOS / p).resolve())
    data["mesh"]["resources"] = [absolute(p) for p in data["mesh"]["resources"]]
    for c in data["cases"]:
        if "apply" in c:
            c["apply"] = absolute(c["apply"])
        for d in c.get("during", []):
            if "apply" in d:
                d["apply"] = absolute(d["apply"])
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return scenario.load(path)


def test_control_without_retries_the_kill_costs_503s(tmp_path):
    def no_retries(c):
        c["apply"] = "../resilience/reviews-outlier.yaml"      # the same ejection, no retries
        del c["expect"]["stats"]
        return c
    sc = _variant(tmp_path, KILL, no_retries)
    [result] = run(sc)
    statuses = [r.status for r in result.observations["mesh"].responses]
    assert not result.passed and 503 in statuses, statuses


def test_control_an_action_after_the_last_response_is_an_error(tmp_path):
    def late(c):
        c["repeat"] = 5
        c["during"] = [{"after_ms": 30000, "apply": "../routing/reviews-80-20.yaml"}]
        c["expect"] = {"statuses": {200: 5}}
        return c
    sc = _variant(tmp_path, REROUTE, late)
    [result] = run(sc)
    assert not result.passed
    assert "came after the last response" in str(result.observations["mesh"].error)


def test_nothing_listening_is_an_error_not_a_refusal():
    sent = traffic.to_pod("127.0.0.1", 9, Request(path="/"))     # the discard port: nothing there
    assert sent.response is None and sent.error and "nothing listens" in sent.error
