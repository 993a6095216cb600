"""Listeners of sidecars and gateways (contract: addresses, names, filter order), each rule with a
negative control."""

from envoyext.envoy import xds
from envoyext.mesh.translate import listener
from tests.mesh.translate.meshes import BOOKINFO, bookinfo, build, resources


def by_name(listeners: list) -> dict:
    return {entry["name"]: entry for entry in listeners}


def sidecar(name: str = "reviews-v1", *docs: str) -> tuple:
    mesh = bookinfo(None, *docs)
    proxy = mesh.proxy(name)
    return proxy, by_name(listener.for_proxy(mesh, proxy))


def test_virtual_inbound_binds_the_pod_ip_at_15006_and_each_target_port():
    proxy, ls = sidecar()
    inbound = ls["virtualInbound"]
    ip = proxy.workload.ip
    assert inbound["address"] == xds.socket_address(ip, 15006)
    assert inbound["additional_addresses"] == [{"address": xds.socket_address(ip, 9080)}]
    assert inbound["traffic_direction"] == "INBOUND"
    chain = inbound["filter_chains"][0]
    assert chain["name"] == "0.0.0.0_9080" and chain["filter_chain_match"] == {"destination_port": 9080}
    hcm = chain["filters"][0]["typed_config"]
    assert hcm["stat_prefix"] == "inbound_0.0.0.0_9080"
    assert hcm["route_config"]["name"] == "inbound|9080||"
    [r] = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert r["route"]["cluster"] == "inbound|9080||"
    assert r["route"]["retry_policy"] == {"retry_on": "reset-before-request", "num_retries": 2}
    assert inbound["filter_chains"][-1]["name"] == "virtualInbound-blackhole"


def test_inbound_ports_come_from_services_selecting_the_workload():
    extra = """
apiVersion: v1
kind: Service
metadata: {name: reviews-db}
spec:
  selector: {app: reviews, version: v2}
  ports: [{name: tcp-db, port: 5432}, {name: http-admin, port: 81, targetPort: 8081}]
"""
    _, v2 = sidecar("reviews-v2", extra)
    chains = {c["name"]: c for c in v2["virtualInbound"]["filter_chains"]}
    assert set(chains) == {"0.0.0.0_9080", "0.0.0.0_5432", "0.0.0.0_8081", "virtualInbound-blackhole"}
    assert chains["0.0.0.0_5432"]["filters"][0]["name"] == "envoy.filters.network.tcp_proxy"
    assert chains["0.0.0.0_5432"]["filters"][0]["typed_config"]["cluster"] == "inbound|5432||"
    assert chains["0.0.0.0_8081"]["filter_chain_match"] == {"destination_port": 8081}   # the target port
    _, v1 = sidecar("reviews-v1", extra)        # negative control: the selector wants version v2
    assert [c["name"] for c in v1["virtualInbound"]["filter_chains"]] == ["0.0.0.0_9080", "virtualInbound-blackhole"]


def test_outbound_listener_per_http_port_at_the_capture_address():
    proxy, ls = sidecar("productpage-v1")
    out = ls["0.0.0.0_9080"]
    assert out["address"] == xds.socket_address(proxy.workload.capture_address, 9080)
    hcm = xds.hcm_of(out)
    assert hcm["stat_prefix"] == "outbound_0.0.0.0_9080"
    assert hcm["rds"] == {"route_config_name": "9080", "config_source": {
        "path_config_source": {"path": "xds/rds/9080.yaml"},
        "resource_api_version": "V3"}}
    assert "0.0.0.0_80" in ls               # the gateway service's HTTP2 port (it is in view)
    assert "rds" not in str(ls["0.0.0.0_443"])   # its HTTPS port is not an HTTP listener


def test_sidecar_egress_hosts_limit_what_is_in_view():
    local = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
"""
    _, ls = sidecar("productpage-v1", local)
    assert set(ls) == {"virtualInbound", "0.0.0.0_9080"}       # istio-system's gateway service is out of view
    _, ls = sidecar("productpage-v1", local.replace('["./*"]', '["./*", "istio-system/*"]'))
    assert set(ls) == {"virtualInbound", "0.0.0.0_9080", "0.0.0.0_80", "0.0.0.0_443", "0.0.0.0_15021"}
    only_reviews = local.replace('["./*"]', '["./reviews.default.svc.cluster.local"]')
    mesh = bookinfo(None, only_reviews)
    from envoyext.mesh.translate import route
    [rc] = route.for_proxy(mesh, mesh.proxy("productpage-v1"))
    assert [v["name"] for v in rc["virtual_hosts"]] == ["reviews.default.svc.cluster.local:9080", "allow_any"]
    selected = local.replace("spec:\n", "spec:\n  workloadSelector: {labels: {app: ratings}}\n")
    _, ls = sidecar("productpage-v1", selected)      # negative control: it selects ratings only
    assert "0.0.0.0_80" in ls


def test_http_filter_order_and_stats_reporter():
    mesh = bookinfo()
    proxy = mesh.proxy("reviews-v1")
    stats = lambda reporter: {"name": "istio.stats", "typed_config": {"reporter": reporter}}  # noqa: E731
    ls = by_name(listener.for_proxy(mesh, proxy, stats=stats, hcm_extra={"tracing": {"random_sampling": {}}}))
    inbound = ls["virtualInbound"]["filter_chains"][0]["filters"][0]["typed_config"]
    outbound = xds.hcm_of(ls["0.0.0.0_9080"])
    names = ["envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats", "envoy.filters.http.router"]
    assert [f["name"] for f in inbound["http_filters"]] == names
    assert [f["name"] for f in outbound["http_filters"]] == names
    assert xds.http_filter_named(inbound, "istio.stats")["typed_config"]["reporter"] == "destination"
    assert xds.http_filter_named(outbound, "istio.stats")["typed_config"]["reporter"] == "source"
    assert outbound["tracing"] == {"random_sampling": {}}
    plain = xds.hcm_of(by_name(listener.for_proxy(mesh, proxy))["0.0.0.0_9080"])
    assert [f["name"] for f in plain["http_filters"]] == [n for n in names if n != "istio.stats"]
    assert "tracing" not in plain


def test_gateway_listener_per_http_server_port_of_selecting_gateways():
    mesh = bookinfo()
    gw = mesh.proxy("istio-ingressgateway-0")
    [only] = listener.for_proxy(mesh, gw)
    assert only["name"] == "0.0.0.0_8080"
    assert only["address"] == xds.socket_address(gw.workload.ip, 8080)
    hcm = xds.hcm_of(only)
    assert hcm["rds"]["route_config_name"] == "http.8080" and hcm["use_remote_address"] is True
    other = (BOOKINFO / "gateway.yaml").read_text().replace("istio: ingressgateway", "istio: egressgateway")
    mesh = build(resources(BOOKINFO / "platform.yaml", other))
    assert listener.for_proxy(mesh, mesh.proxy("istio-ingressgateway-0")) == []   # selector does not match


def test_tls_and_tcp_service_ports_get_tcp_proxy_listeners():
    extra = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{name: tcp-pg, port: 5432}, {name: https-admin, port: 443}]
"""
    proxy, ls = sidecar("productpage-v1", extra)
    db = ls["0.0.0.0_5432"]
    assert db["address"] == xds.socket_address(proxy.workload.capture_address, 5432)
    [chain] = db["filter_chains"]
    assert chain["filters"][0]["typed_config"]["cluster"] == "outbound|5432||db.default.svc.cluster.local"
    tls = ls["0.0.0.0_443"]
    assert tls["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    assert {c["filter_chain_match"]["server_names"][0]: c["filters"][0]["typed_config"]["cluster"]
            for c in tls["filter_chains"]} == {
        "db.default.svc.cluster.local": "outbound|443||db.default.svc.cluster.local",
        "istio-ingressgateway.istio-system.svc.cluster.local":
            "outbound|443||istio-ingressgateway.istio-system.svc.cluster.local"}
    _, plain = sidecar("productpage-v1")       # negative control: no db service, no 5432 listener
    assert "0.0.0.0_5432" not in plain
