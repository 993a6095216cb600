"""Listeners and routes for every Bookinfo proxy, per routing variant, against golden YAML; and
Envoy itself accepting each proxy's config.

Regenerate after an intended change with `UPDATE_GOLDEN=1` (then review the diff)."""

import copy
import os
from pathlib import Path

import pytest
import yaml

from envoyext.envoy import xds
from envoyext.envoy.process import validate
from envoyext.mesh.translate import ProxyConfig, translate
from tests.mesh.translate.meshes import BOOKINFO, bookinfo

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
VARIANTS = [None, *sorted(p.stem for p in (BOOKINFO / "routing").glob("*.yaml"))]


def dump(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v or "no-routing" for v in VARIANTS])
def test_listeners_and_routes_match_golden(variant):
    configs = translate(bookinfo(variant), telemetry=False)
    folder = GOLDEN / (variant or "no-routing")
    for name, config in configs.items():
        got = dump({"listeners": config.listeners, "routes": config.routes})
        path = folder / f"{name}.yaml"
        if os.environ.get("UPDATE_GOLDEN"):
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(got)
        assert got == path.read_text(), f"{variant}: {name} differs from {path}"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(configs)


def test_translation_is_pure():
    mesh = bookinfo("reviews-80-20")
    a, b = translate(mesh, telemetry=False), translate(mesh, telemetry=False)
    assert {n: (c.listeners, c.routes) for n, c in a.items()} == {n: (c.listeners, c.routes) for n, c in b.items()}


def static_config(config: ProxyConfig) -> dict:
    """One proxy's xDS folded into a static bootstrap (RDS routes inline), as `envoy --mode
    validate` reads only the bootstrap. The clusters are the cluster translator's when it exists;
    routes do not require them (validate_clusters: false)."""
    listeners = copy.deepcopy(config.listeners)
    routes = {r["name"]: r for r in config.routes}
    for listener in listeners:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f["typed_config"]
                if f["name"] == xds.HCM_NAME and "rds" in hcm:
                    hcm["route_config"] = routes[hcm.pop("rds")["route_config_name"]]
                    hcm["http_filters"] = hcm.pop("http_filters")
    clusters = copy.deepcopy(config.clusters)
    endpoints = {e["cluster_name"]: e for e in config.endpoints}
    for c in clusters:
        if c.get("type") == "EDS":
            c["type"] = "STATIC"
            c.pop("eds_cluster_config", None)
            c["load_assignment"] = endpoints.get(c["name"], {"cluster_name": c["name"]})
    return xds.bootstrap(node=xds.node(config.proxy.node_id, config.proxy.node_cluster),
                         admin=(config.proxy.workload.ip, 15000), listeners=listeners, clusters=clusters)


@pytest.mark.parametrize("variant", ["reviews-80-20", "ratings-delay"])
def test_envoy_accepts_every_proxy(variant):
    configs = translate(bookinfo(variant), telemetry=False)
    for name in ("productpage-v1-0", "reviews-v2-0", "istio-ingressgateway-0"):
        validate(static_config(configs[name]))


def test_envoy_validation_is_a_real_check():
    """Negative control: the same fold with a route Envoy cannot parse is refused."""
    from envoyext.errors import EnvoyRejected
    config = static_config(translate(bookinfo("ratings-delay"), telemetry=False)["reviews-v2-0"])
    outbound = xds.listener_named(config, "0.0.0.0_9080")
    xds.hcm_of(outbound)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = "soon"
    with pytest.raises(EnvoyRejected):
        validate(config)
