"""The mesh parts of the scenario format and of the one checker, without starting anything: each
expectation passes on an observation that meets it and fails (the negative control) on one that
does not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from envoyext import scenario
from envoyext.errors import UserError
from envoyext.mesh.model import Resource
from envoyext.mesh.overlay import overlay, workload_changes
from envoyext.messages import Received, Response
from envoyext.scenario import Case, Observation, Request

HERE = Path(__file__).parent
BOOKINFO = HERE.resolve().parents[1] / "examples" / "bookinfo"


def _case(expect: dict) -> Case:
    return Case(name="c", request=Request(), expect=expect)


def _obs(**kw) -> Observation:
    return Observation(case="c", runner="mesh", **kw)


def test_answered_by_within_tolerance_passes_and_outside_fails():
    obs = _obs(answered_by=["reviews-v1"] * 78 + ["reviews-v2"] * 22)
    assert scenario.check(_case({"answered_by": {"reviews-v1": 0.8, "reviews-v2": 0.2}, "tolerance": 0.05}), obs) == []
    bad = scenario.check(_case({"answered_by": {"reviews-v1": 0.5, "reviews-v2": 0.5}, "tolerance": 0.05}), obs)
    assert [m.where for m in bad] == ["answered_by.reviews-v1", "answered_by.reviews-v2"]
    # A workload that must get nothing: a single answer from it fails with tolerance 0.
    assert scenario.check(_case({"answered_by": {"reviews-v3": 0.0}, "tolerance": 0}),
                          _obs(answered_by=["reviews-v1", "reviews-v3"]))


def test_answered_by_counts_responses_no_app_answered():
    """A proxy's own 503 (no app answered) dilutes the share: it is not silently dropped."""
    obs = _obs(answered_by=["ratings-v1", None, None, None])
    assert scenario.check(_case({"answered_by": {"ratings-v1": 1.0}, "tolerance": 0.1}), obs)


def test_statuses_are_counted_over_every_repeat():
    obs = _obs(responses=[Response(200, [])] * 2 + [Response(503, [])] * 8)
    assert scenario.check(_case({"statuses": {200: 2, 503: 8}}), obs) == []
    assert scenario.check(_case({"statuses": {200: 10}}), obs)
    assert scenario.check(_case({"statuses": {200: {"min": 2, "max": 3}, 503: {"min": 7}}}), obs) == []
    assert scenario.check(_case({"statuses": {503: {"max": 7}}}), obs)
    assert scenario.check(_case({"statuses": {200: {"min": 3}}}), obs)


def test_workloads_received_and_retries_and_duration():
    rx = [Received("GET", "/reviews/7", [("host", "reviews:9080")])] * 3
    obs = _obs(workloads={"reviews-v2": rx},
               stats={"cluster.outbound|9080|v1|ratings.default.svc.cluster.local.upstream_rq_retry": 3},
               durations_ms=[12.0, 7003.5])
    ok = {"workloads": {"reviews-v2": {"count": 3, "path": "/reviews/7"}, "reviews-v3": {"called": False}},
          "retries": 3, "min_duration_ms": 7000}
    assert scenario.check(_case(ok), obs) == []
    wrong = {"workloads": {"reviews-v2": {"count": 4}, "reviews-v3": {"called": True}}, "retries": 0,
             "min_duration_ms": 8000}
    assert {m.where for m in scenario.check(_case(wrong), obs)} == {
        "workloads.reviews-v2.count", "workloads.reviews-v3.called", "retries", "min_duration_ms"}


def test_trace_expectation():
    spans = [{"localEndpoint": {"serviceName": "istio-ingressgateway.istio-system"}},
             {"localEndpoint": {"serviceName": "productpage.default"}}]
    obs = _obs(spans=spans)
    assert scenario.check(_case({"trace": {"services": ["productpage.default"], "min_spans": 2}}), obs) == []
    assert scenario.check(_case({"trace": {"services": ["reviews.default"]}}), obs)
    assert scenario.check(_case({"trace": {"min_spans": 3}}), obs)


def _write(tmp_path: Path, doc: dict) -> Path:
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


@pytest.mark.parametrize("field,value", [("from", "productpage-v1"), ("to", "reviews:9080"), ("concurrency", 2),
                                         ("behaviour", {"ratings-v1": {"latency_ms": 5}})])
def test_mesh_fields_outside_a_mesh_are_refused(tmp_path, field, value):
    f = _write(tmp_path, {"cases": [{"name": "a", field: value}]})
    with pytest.raises(UserError) as e:
        scenario.load(f)
    assert f"cases[0].{field}" in e.value.one_line() and "needs a mesh" in e.value.one_line()


def test_mesh_expectations_outside_a_mesh_are_refused(tmp_path):
    f = _write(tmp_path, {"cases": [{"name": "a", "expect": {"answered_by": {"x": 1.0}}}]})
    with pytest.raises(UserError, match=r"cases\[0\]\.expect\.answered_by"):
        scenario.load(f)


def test_mesh_paths_must_exist(tmp_path):
    f = _write(tmp_path, {"mesh": {"resources": "nowhere"}, "cases": [{"name": "a"}]})
    with pytest.raises(UserError, match=r"mesh\.resources\[0\]"):
        scenario.load(f)
    f = _write(tmp_path, {"mesh": {"resources": str(BOOKINFO)}, "cases": [{"name": "a", "apply": "nope.yaml"}]})
    with pytest.raises(UserError, match=r"cases\[0\]\.apply\[0\]"):
        scenario.load(f)


def test_the_suite_mesh_scenarios_load():
    for f in sorted((BOOKINFO / "scenarios").glob("*.yaml")):
        sc = scenario.load(f)
        assert sc.mesh is not None and sc.cases


def _res(kind: str, name: str, spec: dict) -> Resource:
    return Resource(kind, "v1", name, "default", {"name": name}, spec, "f.yaml", 0)


def test_overlay_replaces_by_key_and_keeps_order():
    a, b = _res("VirtualService", "reviews", {"v": 1}), _res("DestinationRule", "reviews", {})
    a2 = _res("VirtualService", "reviews", {"v": 2})
    out = overlay([a, b], [a2])
    assert out == [a2, b]
    assert workload_changes([a], [a2]) == []
    d1, d2 = _res("Deployment", "reviews-v1", {"replicas": 1}), _res("Deployment", "reviews-v1", {"replicas": 2})
    assert workload_changes([d1], [d2]) == ["Deployment/default/reviews-v1"]
