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
from envoyext.mesh.translate import ProxyConfig, tls, translate
from tests.mesh.translate.meshes import BOOKINFO, bookinfo, sds_home

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
    static = xds.bootstrap(node=xds.node(config.proxy.node_id, config.proxy.node_cluster),
                           admin=(config.proxy.workload.ip, 15000), listeners=listeners, clusters=clusters)
    return tls.absolute_sds_paths(static, sds_home())   # the mTLS contexts name sds/ files


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


KITCHEN_SINK = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: claims
    match: [{headers: {"@request.auth.claims.group": {exact: admin}}, withoutHeaders: {x-no: {}}, method: {exact: GET},
             queryParams: {q: {regex: "a.*"}}, uri: {regex: "/r/[0-9]+"}, ignoreUriCase: true, name: m}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 60, headers: {request: {set: {x-v: "1", host: a.com}}}}
    - {destination: {host: reviews, subset: v2}, weight: 40}
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,503", retryRemoteLocalities: true, backoff: 10ms}
    timeout: 5s
    fault: {delay: {fixedDelay: 1s, percentage: {value: 0.1}}, abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 12.5}
    corsPolicy: {allowOrigins: [{prefix: "https://"}], allowMethods: [GET], maxAge: 1m, allowCredentials: false}
    headers: {request: {add: {x-a: b}, remove: [x-c]}, response: {set: {x-d: e}}}
    rewrite: {uriRegexRewrite: {match: "^/r/(.*)", rewrite: "/\\\\1"}, authority: b.com}
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: c.com, port: 8080, redirectCode: 307}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - route: [{destination: {host: reviews, subset: v3}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-hash}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 10s, path: /}}}}
"""


def test_envoy_accepts_every_route_feature():
    from tests.mesh.translate.meshes import build, resources
    mesh = build(resources(BOOKINFO / "platform.yaml", BOOKINFO / "gateway.yaml", KITCHEN_SINK))
    configs = translate(mesh, telemetry=False)
    rc = next(r for r in configs["productpage-v1-0"].routes if r["name"] == "9080")
    routes = next(v for v in rc["virtual_hosts"] if v["name"].startswith("reviews."))["routes"]
    assert [("route" in r, "redirect" in r, "direct_response" in r) for r in routes] == [
        (True, False, False), (False, True, False), (False, False, True), (True, False, False)]
    validate(static_config(configs["productpage-v1-0"]))


def referenced_clusters(config: ProxyConfig) -> set[str]:
    """Every cluster name the proxy's listeners and routes send to."""
    found: set[str] = set()

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif key == "cluster" or (key == "name" and isinstance(node, str) and node.startswith("outbound|")):
            found.add(str(node))
    walk([config.listeners, config.routes])
    return found


@pytest.mark.parametrize("variant", VARIANTS, ids=[v or "no-routing" for v in VARIANTS])
def test_every_routed_cluster_exists(variant):
    for name, config in translate(bookinfo(variant), telemetry=False).items():
        missing = referenced_clusters(config) - {c["name"] for c in config.clusters}
        assert not missing, f"{name} routes to clusters it does not have: {sorted(missing)}"
    # negative control: the check sees a route to a cluster that is not there
    config = translate(bookinfo("all-v1"), telemetry=False)["productpage-v1-0"]
    config.clusters = [c for c in config.clusters if "|v1|reviews" not in c["name"]]
    assert referenced_clusters(config) - {c["name"] for c in config.clusters} == {
        "outbound|9080|v1|reviews.default.svc.cluster.local"}
