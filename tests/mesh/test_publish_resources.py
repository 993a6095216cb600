"""What `envoyext publish` emits for Istio is accepted by Istio's own CRD schemas: every library
filter (filters/*/{lua,c}) built, emitted for each context, and loaded by envoyext.mesh.resources,
which validates against the shipped CRDs (structural schema and CEL rules) exactly as a user's
files are validated; every EnvoyFilter (Lua, and Wasm as an EnvoyFilter, local or by URL) is clean
under Istio's analyzers and admission checks; every filter's EnvoyExtensionPolicy passes its schema
and every plain Envoy entry `envoy --mode validate`. Negative controls: a broken emission must be
refused."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoyext import project as project_mod
from envoyext.errors import UserError
from envoyext.mesh import resources
from envoyext.publish import analyze, emit, gateway, istio, plain

ROOT = Path(__file__).resolve().parents[2]
FILTERS = sorted(p.parent for p in (ROOT / "filters").glob("*/*/filter.yaml"))
CONTEXTS: list[istio.Context] = ["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]


def test_the_library_has_twelve_filters() -> None:
    assert len(FILTERS) == 12, [str(p) for p in FILTERS]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each library filter built once, from a copy (the repository's tree is not written to)."""
    out = {}
    for src in FILTERS:
        name = f"{src.parent.name}-{src.name}"
        dest = tmp_path_factory.mktemp(name) / src.parent.name
        shutil.copytree(src.parent, dest, ignore=shutil.ignore_patterns("build", "__pycache__"))
        proj = project_mod.load(dest / src.name)
        out[name] = (proj, project_mod.build(proj))
    return out


def _load(doc: dict[str, Any], tmp_path: Path) -> list[Any]:
    f = tmp_path / f"{doc['metadata']['name']}.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    return resources.load([f])


@pytest.mark.parametrize("context", CONTEXTS)
def test_every_library_filter_emits_a_valid_istio_resource(built, context, tmp_path) -> None:
    where = istio.Placement(namespace="default", selector={"app": "productpage", "version": "v1"}, context=context)
    kinds = {}
    for name, (proj, artifact) in built.items():
        doc = istio.for_artifact(artifact, proj.config, where)
        loaded = _load(doc, tmp_path)
        assert [(r.kind, r.name) for r in loaded] == [(doc["kind"], doc["metadata"]["name"])], name
        kinds[name] = doc["kind"]
        if doc["kind"] == "WasmPlugin":
            spec = doc["spec"]
            assert spec["url"].startswith("file://") and Path(spec["url"][len("file://"):]) == artifact.path.resolve()
            assert spec["sha256"] == hashlib.sha256(artifact.path.read_bytes()).hexdigest()
            assert spec["match"] == [{"mode": istio.MODE[context]}]
        else:
            patch = doc["spec"]["configPatches"][0]
            assert patch["match"]["context"] == context and patch["patch"]["operation"] == "INSERT_BEFORE"
    assert sorted(kinds.values()) == ["EnvoyFilter"] * 6 + ["WasmPlugin"] * 6


def test_negative_controls_the_crd_validation_refuses_a_broken_emission(built, tmp_path) -> None:
    proj, artifact = built["cors-c"]
    doc = istio.for_artifact(artifact, proj.config, istio.Placement(selector={"app": "productpage"}))
    bad = copy.deepcopy(doc)
    bad["spec"]["match"] = [{"mode": "SIDEWAYS"}]           # not a WorkloadMode
    with pytest.raises(UserError, match="mode"):
        _load(bad, tmp_path)
    proj, artifact = built["cors-lua"]
    doc = istio.for_artifact(artifact, proj.config, istio.Placement(selector={"app": "productpage"}))
    bad = copy.deepcopy(doc)
    bad["spec"]["configPatches"][0]["patch"]["operation"] = "INSERT_SOMEWHERE"
    with pytest.raises(UserError, match="operation"):
        _load(bad, tmp_path)


def _clean(doc: dict[str, Any], tmp_path: Path, name: str) -> None:
    assert analyze.analyze(doc) == [] and analyze.admission(doc) == [], name
    assert [(r.kind, r.name) for r in _load(doc, tmp_path)] == [(doc["kind"], doc["metadata"]["name"])], name


@pytest.mark.parametrize("context", CONTEXTS)
def test_every_envoyfilter_is_clean_under_istios_analyzers(built, context, tmp_path) -> None:
    """12 filters x 3 contexts: the default resource, and each Wasm filter as an EnvoyFilter, from its local
    file and by URL (with the cluster it is fetched through), with ports and per-route configs."""
    by_labels = istio.Placement(namespace="default", selector={"app": "productpage"}, context=context)
    by_ref = istio.Placement(namespace="default", context=context, ports=(9080, 8080),
                             target_refs=(istio.TargetRef("Service", "productpage"),))
    routes = [istio.RouteConfig("health", {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                                           "disabled": True})]
    checked = 0
    for name, (proj, artifact) in built.items():
        for where in (by_labels, by_ref):
            _clean(istio.for_artifact(artifact, proj.config, where), tmp_path, name)
            doc = istio.envoy_filter(artifact, proj.config, where, routes=routes)
            assert doc["spec"]["priority"] == istio.DEFAULT_PRIORITY
            _clean(doc, tmp_path, name)
            checked += 2
            if artifact.kind == "wasm":
                _clean(istio.envoy_filter(artifact, proj.config, where, url="https://filters.example.com/m.wasm"),
                       tmp_path, name)
                checked += 1
    assert checked == 6 * 4 + 6 * 6


def test_negative_control_the_analyzers_flag_the_old_emission(built) -> None:
    """Before: INSERT_BEFORE the router and no priority, which Istio's analyzer flags (IST0151) and
    publish refuses, naming the code and the field."""
    proj, artifact = built["cors-lua"]
    doc = istio.envoy_filter(artifact, proj.config, istio.Placement(selector={"app": "productpage"}))
    del doc["spec"]["priority"]
    assert [(f.code, f.field) for f in analyze.analyze(doc)] == [("IST0151", "spec.configPatches[0].patch.operation")]
    with pytest.raises(UserError, match="IST0151") as e:
        emit.validated(doc)
    assert e.value.field == "spec.configPatches[0].patch.operation" and "priority" in (e.value.fix or "")


def test_every_filter_as_an_envoy_gateway_policy(built) -> None:
    refs = (istio.TargetRef("Gateway", "eg"),)
    for name, (proj, artifact) in built.items():
        doc = gateway.extension_policy(artifact, proj.config, "default", refs,
                                       url="https://filters.example.com/m.wasm")
        gateway.check(doc)
        assert set(doc["spec"]) == {"targetRefs", "lua" if artifact.kind == "lua" else "wasm"}, name
    proj, artifact = built["cors-c"]
    doc = gateway.extension_policy(artifact, proj.config, "default", refs, url="https://filters.example.com/m.wasm")
    bad = copy.deepcopy(doc)
    bad["spec"]["wasm"][0]["code"]["type"] = "Image"    # CEL: type Image needs image, not http
    with pytest.raises(UserError, match="code"):
        gateway.check(bad)
    bad = copy.deepcopy(doc)
    bad["spec"]["targetRefs"][0]["kind"] = "Service"
    with pytest.raises(UserError, match="targetRefs.0.kind"):
        gateway.check(bad)


def test_every_filter_as_a_plain_envoy_entry_passes_envoy_validate(built) -> None:
    for name, (proj, artifact) in built.items():
        text = emit.validated(plain.snippet(artifact, proj.config))
        assert yaml.safe_load(text)["http_filters"][0]["name"] == artifact.filter_name, name
    proj, artifact = built["cors-c"]
    snip = plain.snippet(artifact, proj.config, url="https://filters.example.com/m.wasm")
    emit.validated(snip)
    snip["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["remote"]["sha256"] = ""
    with pytest.raises(UserError, match="Sha256"):   # negative control: Envoy's own proto rules run
        emit.validated(snip)


def test_the_mesh_translator_places_what_is_published(built) -> None:
    """The published EnvoyFilter (a Wasm module by URL, a per-route config) through the mesh's EnvoyFilter
    pass: the filter lands just before the router, the route named in it gets the filter's per-route
    config, the module's cluster is added once; Envoy accepts the result."""
    from envoyext.envoy import xds
    from envoyext.envoy.process import validate
    from envoyext.mesh.translate import envoyfilter
    from tests.mesh.translate.test_envoyfilter import STATS, _static, http_names, make_mesh, sidecar_config

    proj, artifact = built["cors-c"]
    routes = [istio.RouteConfig("default", {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                                            "disabled": True})]
    doc = istio.envoy_filter(artifact, proj.config, istio.Placement(selector={"app": "reviews"}),
                             url="https://filters.example.com/cors.wasm", routes=routes)
    meta = doc["metadata"]
    res = resources.Resource(doc["kind"], doc["apiVersion"], meta["name"], meta["namespace"], meta, doc["spec"],
                             "published", 0)
    config = sidecar_config()
    for lis in config.listeners[:2]:   # istio.stats is envoyext's own filter: not in a plain Envoy
        hcm = xds.hcm_of(lis)
        hcm["http_filters"] = [h for h in hcm["http_filters"] if h["name"] != STATS]
    out = envoyfilter.apply(make_mesh([res]), config)
    assert http_names(out, "virtualInbound")[-2:] == ["cors", xds.ROUTER_NAME]
    assert "cors" not in http_names(out, "0.0.0.0_9080")          # SIDECAR_INBOUND only
    inbound = xds.hcm_of(next(lis for lis in out.listeners if lis["name"] == "virtualInbound"))
    [route] = inbound["route_config"]["virtual_hosts"][0]["routes"]
    assert route["typed_per_filter_config"] == {"cors": routes[0].config}
    assert [c["name"] for c in out.clusters].count("envoyext_wasm_filters.example.com_443") == 1
    validate(_static(out))


def test_failure_policy_maps_to_fail_strategy(built) -> None:
    """reload was published as FAIL_CLOSE; Istio's WasmPlugin has FAIL_RELOAD (and the mesh translates it)."""
    import dataclasses
    _, artifact = built["cors-c"]
    for policy, strategy in (("fail_closed", "FAIL_CLOSE"), ("fail_open", "FAIL_OPEN"), ("reload", "FAIL_RELOAD")):
        doc = istio.wasm_plugin(dataclasses.replace(artifact, failure_policy=policy), None, istio.Placement())
        assert doc["spec"]["failStrategy"] == strategy
