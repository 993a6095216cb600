"""Istio's EnvoyFilter analyzer rules (publish/analyze.py), each with a resource that triggers it and
one that does not, after the cases of Istio's own analyzer tests (pkg/config/analysis/analyzers:
relative, replace, add and remove operations, proxyVersion); and the webhook's structural checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from envoyext.publish.analyze import admission, analyze, analyze_all

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = {"filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}}
LUA = {"name": "envoy.lua", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}}


def envoy_filter(*patches: dict[str, Any], priority: int | None = None, name: str = "ef") -> dict[str, Any]:
    spec: dict[str, Any] = {"configPatches": list(patches)}
    if priority is not None:
        spec["priority"] = priority
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": name, "namespace": "bookinfo"}, "spec": spec}


def patch(apply_to: str, operation: str, value: Any = LUA, listener: Any = None, proxy_version: str | None = None,
          context: str = "SIDECAR_INBOUND") -> dict[str, Any]:
    match: dict[str, Any] = {"context": context}
    if proxy_version:
        match["proxy"] = {"proxyVersion": proxy_version}
    if listener is not None:
        match["listener"] = {"filterChain": listener}
    p: dict[str, Any] = {"operation": operation}
    if value is not None:
        p["value"] = copy.deepcopy(value)
    return {"applyTo": apply_to, "match": match, "patch": p}


def codes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f.code, f.field) for f in analyze(doc)]


@pytest.mark.parametrize("operation", ["INSERT_BEFORE", "INSERT_AFTER", "REPLACE", "REMOVE"])
def test_ist0151_relative_operation_without_priority(operation):
    doc = envoy_filter(patch("HTTP_FILTER", operation, listener=ROUTER))
    assert codes(doc) == [("IST0151", "spec.configPatches[0].patch.operation")]
    assert codes(envoy_filter(patch("HTTP_FILTER", operation, listener=ROUTER), priority=10)) == []
    assert codes(envoy_filter(patch("HTTP_FILTER", operation, listener=ROUTER), priority=-1)) == []


@pytest.mark.parametrize("operation", ["INSERT_FIRST", "ADD", "MERGE"])
def test_absolute_operations_and_merge_are_not_flagged(operation):
    assert codes(envoy_filter(patch("HTTP_FILTER", operation, listener=ROUTER))) == []


def test_ist0152_replace_only_on_filters_and_virtual_hosts():
    doc = envoy_filter(patch("CLUSTER", "REPLACE", value={"name": "c"}), priority=10)
    assert codes(doc) == [("IST0152", "spec.configPatches[0].applyTo")]
    for apply_to in ("HTTP_FILTER", "NETWORK_FILTER", "VIRTUAL_HOST"):
        assert codes(envoy_filter(patch(apply_to, "REPLACE"), priority=10)) == [], apply_to
    # unflagged REPLACE is still relative: without a priority, IST0151
    assert [c for c, _ in codes(envoy_filter(patch("VIRTUAL_HOST", "REPLACE")))] == ["IST0151"]


@pytest.mark.parametrize("apply_to", ["ROUTE_CONFIGURATION", "HTTP_ROUTE"])
def test_ist0153_and_ist0154_add_and_remove_on_routes(apply_to):
    assert codes(envoy_filter(patch(apply_to, "ADD"))) == [("IST0153", "spec.configPatches[0].applyTo")]
    assert codes(envoy_filter(patch(apply_to, "REMOVE", value=None))) == [("IST0154", "spec.configPatches[0].applyTo")]
    assert codes(envoy_filter(patch(apply_to, "MERGE"))) == []
    assert codes(envoy_filter(patch("HTTP_FILTER", "ADD"))) == []
    # REMOVE elsewhere is relative
    assert [c for c, _ in codes(envoy_filter(patch("NETWORK_FILTER", "REMOVE", value=None)))] == ["IST0151"]


def test_ist0155_same_filter_with_a_proxy_version_earlier():
    """Istio's test-replace-3: the first REPLACE of envoy.lua (with proxyVersion) is IST0151, the next
    relative patch of envoy.lua IST0155; another name stays IST0151."""
    doc = envoy_filter(patch("HTTP_FILTER", "REPLACE", listener=ROUTER, proxy_version=r"^1\.11.*"),
                       patch("HTTP_FILTER", "REPLACE"),
                       patch("NETWORK_FILTER", "REPLACE", value={"name": "other"}))
    assert [c for c, _ in codes(doc)] == ["IST0151", "IST0155", "IST0151"]
    assert codes(doc)[1][1] == "spec.configPatches[1].patch.operation"
    # without the proxyVersion: IST0151 throughout
    plain = envoy_filter(patch("HTTP_FILTER", "REPLACE", listener=ROUTER), patch("HTTP_FILTER", "REPLACE"))
    assert [c for c, _ in codes(plain)] == ["IST0151", "IST0151"]
    # across resources, in order, as istioctl analyze walks them
    first = envoy_filter(patch("HTTP_FILTER", "ADD", proxy_version="^1.*"), name="a")
    second = envoy_filter(patch("HTTP_FILTER", "INSERT_AFTER", listener=ROUTER), name="b")
    assert [(d["metadata"]["name"], f.code) for d, f in analyze_all([first, second])] == [("b", "IST0155")]
    assert codes(second) == [("IST0151", "spec.configPatches[0].patch.operation")]


def test_analysis_stops_at_a_patch_less_entry_and_ignores_other_kinds():
    doc = envoy_filter({"applyTo": "HTTP_FILTER"}, patch("HTTP_FILTER", "INSERT_BEFORE", listener=ROUTER))
    assert codes(doc) == []
    assert analyze({"kind": "WasmPlugin", "spec": {"configPatches": [patch("HTTP_ROUTE", "ADD")]}}) == []


def test_messages_name_istio_message_and_fix():
    [f] = analyze(envoy_filter(patch("HTTP_FILTER", "INSERT_BEFORE", listener=ROUTER)))
    assert "EnvoyFilterUsesRelativeOperation (Warning)" in f.message and "envoy.lua" in f.message
    assert "priority" in f.fix()


@pytest.mark.parametrize("broken, message, field", [
    ({"applyTo": "HTTP_FILTER"}, "missing patch", "spec.configPatches[0].patch"),
    ({"patch": {"operation": "ADD", "value": {}}}, "missing applyTo", "spec.configPatches[0].applyTo"),
    ({"applyTo": "HTTP_FILTER", "patch": {"value": {}}}, "missing patch operation",
     "spec.configPatches[0].patch.operation"),
    ({"applyTo": "HTTP_FILTER", "patch": {"operation": "ADD"}}, "missing patch value",
     "spec.configPatches[0].patch.value"),
    (patch("HTTP_FILTER", "ADD", proxy_version="^1.(("), "invalid regex",
     "spec.configPatches[0].match.proxy.proxyVersion"),
    (patch("NETWORK_FILTER", "INSERT_BEFORE", listener=ROUTER), "HTTP_FILTER only",
     "spec.configPatches[0].match.listener.filterChain.filter.subFilter"),
    (patch("HTTP_FILTER", "INSERT_BEFORE", listener={"filter": {"name": "envoy.filters.network.tcp_proxy",
                                                                "subFilter": {"name": "x"}}}),
     "requires filter match with", "spec.configPatches[0].match.listener.filterChain.filter.name"),
    (patch("HTTP_FILTER", "INSERT_BEFORE", listener={"filter": {"subFilter": {"name": "x"}}}),
     "filter match has no name", "spec.configPatches[0].match.listener.filterChain.filter.name"),
    ({"applyTo": "CLUSTER", "match": {"listener": {}}, "patch": {"operation": "ADD", "value": {}}},
     "cluster class", "spec.configPatches[0].match.listener"),
    ({"applyTo": "HTTP_ROUTE", "match": {"cluster": {}}, "patch": {"operation": "MERGE", "value": {}}},
     "http route class", "spec.configPatches[0].match.cluster"),
])
def test_admission_checks(broken, message, field):
    [f] = admission(envoy_filter(broken, priority=1))
    assert f.code == "admission" and message in f.message and f.field == field
    fine = [patch("HTTP_FILTER", "INSERT_BEFORE", listener=ROUTER), patch("NETWORK_FILTER", "REMOVE", value=None),
            patch("HTTP_FILTER", "ADD", proxy_version=r"^1\.2.*"), patch("HTTP_ROUTE", "MERGE"),
            {"applyTo": "HTTP_FILTER", "match": {"context": "WAYPOINT"}}]
    assert admission(envoy_filter(*fine)) == []
