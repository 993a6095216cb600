"""CDS/EDS translation: golden files per Bookinfo proxy, and the DestinationRule / ServiceEntry
rules of reference §4 and §6 one by one. UPDATE_GOLDEN=1 rewrites the golden files.

Until `build.mesh` lands, the Bookinfo mesh is built here by hand from the same facts as
examples/bookinfo (its DestinationRules are read from there)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoyext.errors import UserError
from envoyext.mesh.model import (
    AddressPlan,
    Endpoint,
    Mesh,
    MeshConfig,
    Proxy,
    Resource,
    Service,
    ServicePort,
    Workload,
)
from envoyext.mesh.translate import cluster

BOOKINFO = Path(__file__).resolve().parents[3] / "examples" / "bookinfo"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "clusters"
XDS = "/mesh/{proxy}/xds"   # the xds dir golden files are rendered with

# (deployment, labels, service account) of Bookinfo's pods, in platform.yaml's order.
PODS = [("details-v1", {"app": "details", "version": "v1"}, "bookinfo-details"),
        ("ratings-v1", {"app": "ratings", "version": "v1"}, "bookinfo-ratings"),
        ("reviews-v1", {"app": "reviews", "version": "v1"}, "bookinfo-reviews"),
        ("reviews-v2", {"app": "reviews", "version": "v2"}, "bookinfo-reviews"),
        ("reviews-v3", {"app": "reviews", "version": "v3"}, "bookinfo-reviews"),
        ("productpage-v1", {"app": "productpage", "version": "v1"}, "bookinfo-productpage")]


def resource(doc: dict[str, Any], file: str = "test.yaml", index: int = 0) -> Resource:
    meta = doc.get("metadata") or {}
    return Resource(doc["kind"], doc["apiVersion"], meta["name"], meta.get("namespace", "default"),
                    meta, doc.get("spec") or {}, file, index)


def dr(name: str, spec: dict[str, Any], namespace: str = "default") -> Resource:
    return resource({"kind": "DestinationRule", "apiVersion": "networking.istio.io/v1",
                     "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def http_service(name: str, vip: str, namespace: str = "default", port: int = 9080) -> Service:
    return Service(f"{name}.{namespace}.svc.cluster.local", name, namespace,
                   (ServicePort("http", port, port, "HTTP"),), selector={"app": name}, vip=vip)


def bookinfo_mesh(plan: AddressPlan | None = None) -> Mesh:
    plan = plan or AddressPlan()
    workloads = [Workload(f"{dep}-0", dep, "default", labels, sa, (9080,), plan.pod_ip(i),
                          plan.app_address(i), plan.capture_address(i))
                 for i, (dep, labels, sa) in enumerate(PODS)]
    gw = len(PODS)
    workloads.append(Workload("istio-ingressgateway-0", "istio-ingressgateway", "istio-system",
                              {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                              "istio-ingressgateway-service-account", (8080,), plan.pod_ip(gw),
                              plan.app_address(gw), plan.capture_address(gw), gateway=True))
    services = [http_service(name, plan.vip(i)) for i, name in enumerate(["details", "ratings", "reviews",
                                                                         "productpage"])]
    proxies = [Proxy("router" if w.gateway else "sidecar", w) for w in workloads]
    drs = [resource(d, str(BOOKINFO / "destination-rules.yaml"), i)
           for i, d in enumerate(yaml.safe_load_all((BOOKINFO / "destination-rules.yaml").read_text()))]
    return Mesh(MeshConfig(), services, workloads, proxies, destination_rules=drs, plan=plan)


def render(mesh: Mesh, proxy: Proxy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return cluster.for_proxy(mesh, proxy, XDS.format(proxy=proxy.name))


def named(clusters: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in clusters if c["name"] == name)


MESH = bookinfo_mesh()


@pytest.mark.parametrize("proxy", [p.name for p in MESH.proxies])
def test_matches_golden(proxy: str) -> None:
    found = MESH.proxy(proxy)
    assert found is not None
    clusters, endpoints = render(MESH, found)
    got = yaml.safe_dump({"clusters": clusters, "endpoints": endpoints}, sort_keys=False, width=120)
    path = GOLDEN / f"{proxy}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def test_productpage_sees_istio_names_and_subset_endpoints() -> None:
    clusters, endpoints = render(MESH, MESH.proxies[5])
    names = [c["name"] for c in clusters]
    assert names[:2] == ["outbound|9080||details.default.svc.cluster.local",
                         "outbound|9080|v1|details.default.svc.cluster.local"]
    assert names[-4:] == ["BlackHoleCluster", "PassthroughCluster", "inbound|9080||", "InboundPassthroughCluster"]
    v2 = named(clusters, "outbound|9080|v2|reviews.default.svc.cluster.local")
    assert v2["type"] == "EDS" and v2["lb_policy"] == "LEAST_REQUEST" and v2["connect_timeout"] == "10s"
    assert v2["eds_cluster_config"]["eds_config"]["path_config_source"]["path"] == \
        "/mesh/productpage-v1-0/xds/eds/outbound|9080|v2|reviews.default.svc.cluster.local.yaml"
    assert v2["upstream_bind_config"]["source_address"]["address"] == MESH.workloads[5].ip
    assert v2["metadata"]["filter_metadata"]["istio"]["subset"] == "v2"
    assert v2["metadata"]["filter_metadata"]["istio"]["config"] == \
        "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"
    cla = {e["cluster_name"]: e for e in endpoints}
    hosts = [le["endpoint"]["address"]["socket_address"]["address"]
             for le in cla[v2["name"]]["endpoints"][0]["lb_endpoints"]]
    assert hosts == [MESH.workloads[3].ip]   # reviews-v2's pod IP only
    all_reviews = cla["outbound|9080||reviews.default.svc.cluster.local"]["endpoints"][0]["lb_endpoints"]
    assert len(all_reviews) == 3
    assert all_reviews[0]["metadata"]["filter_metadata"] == {
        "envoy.transport_socket_match": {"tlsMode": "istio"},
        "istio": {"workload": "reviews-v1;default;reviews;v1;Kubernetes"}}
    inbound = named(clusters, "inbound|9080||")
    assert inbound["type"] == "STATIC" and "lb_policy" not in inbound and "outlier_detection" not in inbound
    assert inbound["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": MESH.workloads[5].app_address, "port_value": 9080}}
    passthrough = named(clusters, "PassthroughCluster")
    assert passthrough["type"] == "ORIGINAL_DST" and passthrough["original_dst_lb_config"] == {"use_http_header": True}


def test_gateway_has_no_inbound_or_passthrough() -> None:
    clusters, _ = render(MESH, MESH.proxies[-1])
    names = [c["name"] for c in clusters]
    assert names[-1] == "BlackHoleCluster"
    assert not [n for n in names if n.startswith("inbound") or "Passthrough" in n]


def with_rules(*rules: Resource, services: list[Service] | None = None) -> Mesh:
    mesh = bookinfo_mesh()
    mesh.destination_rules = list(rules)
    if services is not None:
        mesh.services = services
    return mesh


def reviews(mesh: Mesh, subset: str = "", proxy: int = 5) -> dict[str, Any]:
    clusters, _ = render(mesh, mesh.proxies[proxy])
    return named(clusters, f"outbound|9080|{subset}|reviews.default.svc.cluster.local")


@pytest.mark.parametrize("lb, expect", [
    ({"simple": "ROUND_ROBIN"}, {"lb_policy": "ROUND_ROBIN"}),
    ({"simple": "RANDOM"}, {"lb_policy": "RANDOM"}),
    ({"simple": "LEAST_CONN"}, {"lb_policy": "LEAST_REQUEST"}),
    ({"consistentHash": {"httpHeaderName": "x-user"}},
     {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 1024}}),
    ({"consistentHash": {"ringHash": {"minimumRingSize": 64}, "useSourceIp": True}},
     {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 64}}),
    ({"consistentHash": {"maglev": {"tableSize": 65537}, "useSourceIp": True}},
     {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 65537}}),
])
def test_load_balancer(lb: dict[str, Any], expect: dict[str, Any]) -> None:
    c = reviews(with_rules(dr("reviews", {"host": "reviews", "trafficPolicy": {"loadBalancer": lb}})))
    assert {k: c[k] for k in expect} == expect


def test_passthrough_lb_makes_original_dst() -> None:
    mesh = with_rules(dr("reviews", {"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}}))
    clusters, endpoints = render(mesh, mesh.proxies[5])
    c = named(clusters, "outbound|9080||reviews.default.svc.cluster.local")
    assert c["type"] == "ORIGINAL_DST" and c["lb_policy"] == "CLUSTER_PROVIDED" and "eds_cluster_config" not in c
    assert c["name"] not in {e["cluster_name"] for e in endpoints}


def test_connection_pool_and_outlier_detection() -> None:
    policy = {"connectionPool": {"tcp": {"maxConnections": 1, "connectTimeout": "250ms",
                                         "tcpKeepalive": {"time": "7200s", "interval": "75s", "probes": 9}},
                                 "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1,
                                          "maxRetries": 3, "idleTimeout": "30s"}},
              "outlierDetection": {"consecutive5xxErrors": 1, "consecutiveGatewayErrors": 0, "interval": "1s",
                                   "baseEjectionTime": "3m", "maxEjectionPercent": 100}}
    c = reviews(with_rules(dr("reviews", {"host": "reviews", "trafficPolicy": policy})))
    assert c["connect_timeout"] == "0.25s"   # Istio's Go durations become Envoy's seconds
    assert c["circuit_breakers"] == {"thresholds": [{"max_connections": 1, "max_pending_requests": 1,
                                                     "max_requests": 4294967295, "max_retries": 3,
                                                     "track_remaining": True}]}
    assert c["upstream_connection_options"] == {"tcp_keepalive": {"keepalive_probes": 9, "keepalive_time": 7200,
                                                                  "keepalive_interval": 75}}
    options = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"] == {"idle_timeout": "30s", "max_requests_per_connection": 1}
    assert options["explicit_http_config"] == {"http_protocol_options": {}}
    assert c["outlier_detection"] == {
        "enforcing_success_rate": 0, "consecutive_5xx": 1, "enforcing_consecutive_5xx": 100,
        "consecutive_gateway_failure": 0, "enforcing_consecutive_gateway_failure": 0,
        "interval": "1s", "base_ejection_time": "180s", "max_ejection_percent": 100}
    assert c["common_lb_config"] == {"healthy_panic_threshold": {"value": 0.0}}
    # Inbound: the connection pool applies, outlier detection and LB do not.
    inbound = named(render(with_rules(dr("reviews", {"host": "reviews", "trafficPolicy": policy})),
                           MESH.proxies[2])[0], "inbound|9080||")
    assert inbound["circuit_breakers"] == c["circuit_breakers"] and inbound["connect_timeout"] == "0.25s"
    assert "outlier_detection" not in inbound and "lb_policy" not in inbound


@pytest.mark.parametrize("istio, envoy", [("3m", "180s"), ("250ms", "0.25s"), ("1h30m", "5400s"), ("1.5s", "1.5s"),
                                          ("10s", "10s"), ("0s", "0s")])
def test_durations(istio: str, envoy: str) -> None:
    assert cluster.duration(istio) == envoy


def test_bad_duration_is_one_user_error_naming_the_field() -> None:
    rule = dr("reviews", {"host": "reviews", "subsets": [
        {"name": "v1", "labels": {"version": "v1"},
         "trafficPolicy": {"outlierDetection": {"baseEjectionTime": "3 minutes"}}}]})
    with pytest.raises(UserError) as e:
        reviews(with_rules(rule))
    assert e.value.field == "spec.subsets[0].trafficPolicy.outlierDetection.baseEjectionTime"
    assert e.value.file == "test.yaml" and "3 minutes" in e.value.one_line()


def test_no_destination_rule_defaults() -> None:
    c = reviews(with_rules())
    assert c["lb_policy"] == "LEAST_REQUEST" and "outlier_detection" not in c
    assert "typed_extension_protocol_options" not in c and "config" not in c["metadata"]["filter_metadata"]["istio"]
    assert c["circuit_breakers"]["thresholds"][0]["max_requests"] == 4294967295


def test_subset_policy_merges_over_top_level_and_port_level_replaces() -> None:
    rule = dr("reviews", {"host": "reviews", "trafficPolicy": {
        "loadBalancer": {"simple": "RANDOM"},
        "connectionPool": {"tcp": {"maxConnections": 7}},
        "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]},
        "subsets": [{"name": "v1", "labels": {"version": "v1"},
                     "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 2}}},
                    {"name": "v2", "labels": {"version": "v2"},
                     "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}]})
    mesh = with_rules(rule)
    top = reviews(mesh)
    # The port-level setting replaces the top level's LB *and* its connection pool (no inheritance).
    assert top["lb_policy"] == "ROUND_ROBIN"
    assert top["circuit_breakers"]["thresholds"][0]["max_connections"] == 4294967295
    v1 = reviews(mesh, "v1")
    assert v1["lb_policy"] == "ROUND_ROBIN" and v1["outlier_detection"]["consecutive_5xx"] == 2
    assert reviews(mesh, "v2")["lb_policy"] == "LEAST_REQUEST"


def test_destination_rule_host_matching() -> None:
    exact = dr("exact", {"host": "reviews.default.svc.cluster.local",
                         "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
    wildcard = dr("wild", {"host": "*.default.svc.cluster.local",
                           "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}})
    root = dr("root", {"host": "*", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}, "istio-system")
    assert reviews(with_rules(wildcard, exact))["lb_policy"] == "RANDOM"            # exact beats wildcard
    assert reviews(with_rules(wildcard))["lb_policy"] == "ROUND_ROBIN"
    assert reviews(with_rules(root))["lb_policy"] == "RANDOM"                       # root namespace fallback
    assert reviews(with_rules(root, wildcard))["lb_policy"] == "ROUND_ROBIN"        # namespace-local first
    # A short name means the DR's own namespace; `reviews.default` is not expanded (Istio).
    other_ns = dr("r", {"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}, "other")
    assert reviews(with_rules(other_ns))["lb_policy"] == "LEAST_REQUEST"
    dotted = dr("r", {"host": "reviews.default", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
    assert reviews(with_rules(dotted))["lb_policy"] == "LEAST_REQUEST"
    # exportTo "." hides a rule from other namespaces' proxies (the gateway is in istio-system).
    private = dr("r", {"host": "reviews", "exportTo": ["."],
                       "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
    assert reviews(with_rules(private))["lb_policy"] == "RANDOM"
    assert reviews(with_rules(private), proxy=6)["lb_policy"] == "LEAST_REQUEST"


def test_service_export_to_limits_visibility() -> None:
    mesh = bookinfo_mesh()
    mesh.services = [replace(s, export_to=(".",)) if s.name == "ratings" else s for s in mesh.services]
    gateway_names = [c["name"] for c in render(mesh, mesh.proxies[6])[0]]
    assert not [n for n in gateway_names if "ratings" in n]
    assert [n for n in (c["name"] for c in render(mesh, mesh.proxies[5])[0]) if "ratings" in n]


def se_service(resolution: str, endpoints: tuple[Endpoint, ...] = (), external: bool = True) -> Service:
    return Service("api.example.com", "api.example.com", "default", (ServicePort("http", 80, 80, "HTTP"),),
                   from_service_entry=True, mesh_external=external, resolution=resolution,  # type: ignore[arg-type]
                   static_endpoints=endpoints)


def api(mesh: Mesh) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    clusters, endpoints = render(mesh, mesh.proxies[5])
    return named(clusters, "outbound|80||api.example.com"), endpoints


def test_service_entry_resolutions() -> None:
    dns, _ = api(with_rules(services=[se_service("DNS")]))
    assert dns["type"] == "STRICT_DNS" and dns["respect_dns_ttl"] is True
    assert dns["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "api.example.com", "port_value": 80}}
    eps = (Endpoint("127.9.0.1", 8080, {"version": "a"}), Endpoint("127.9.0.2", 0, {"version": "b"}, weight=3))
    dns_eps, _ = api(with_rules(services=[se_service("DNS", eps)]))
    addresses = [(le["endpoint"]["address"]["socket_address"]["port_value"], le["load_balancing_weight"])
                 for le in dns_eps["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert addresses == [(8080, 1), (80, 3)]
    assert api(with_rules(services=[se_service("DNS_ROUND_ROBIN")]))[0]["type"] == "LOGICAL_DNS"
    static, endpoints = api(with_rules(services=[se_service("STATIC", eps)]))
    assert static["type"] == "EDS"
    cla = next(e for e in endpoints if e["cluster_name"] == static["name"])
    assert len(cla["endpoints"][0]["lb_endpoints"]) == 2
    assert "metadata" not in cla["endpoints"][0]["lb_endpoints"][0]   # not a mesh pod: no tlsMode
    none, _ = api(with_rules(services=[se_service("NONE")]))
    assert none["type"] == "ORIGINAL_DST" and none["lb_policy"] == "CLUSTER_PROVIDED"


def test_service_entry_subsets_filter_inline_endpoints() -> None:
    eps = (Endpoint("127.9.0.1", 80, {"version": "a"}), Endpoint("127.9.0.2", 80, {"version": "b"}))
    mesh = with_rules(dr("api", {"host": "api.example.com", "subsets": [{"name": "b", "labels": {"version": "b"}}]}),
                      services=[se_service("DNS", eps)])
    b = named(render(mesh, mesh.proxies[5])[0], "outbound|80|b|api.example.com")
    assert [le["endpoint"]["address"]["socket_address"]["address"]
            for le in b["load_assignment"]["endpoints"][0]["lb_endpoints"]] == ["127.9.0.2"]


def test_tls_hook_sees_every_outbound_cluster() -> None:
    seen: list[tuple[str, str, bool]] = []

    def hook(c: dict[str, Any], ctx: cluster.UpstreamContext) -> None:
        seen.append((c["name"], ctx.subset, ctx.service.mesh_external))
        c["transport_socket_matches"] = []

    clusters, _ = cluster.for_proxy(MESH, MESH.proxies[5], "/x", upstream_tls=hook)
    assert len(seen) == 10   # default + subsets: details 2, ratings 2, reviews 4, productpage 2
    assert ("outbound|9080|v3|reviews.default.svc.cluster.local", "v3", False) in seen
    assert "transport_socket_matches" not in named(clusters, "inbound|9080||")
