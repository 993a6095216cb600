"""EnvoyFilter post-pass: each rule on a hand-built ProxyConfig shaped like the mesh contract, with a
negative control (a patch that must not apply leaves the config exactly as it was)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from envoyext.envoy import xds
from envoyext.errors import UserError
from envoyext.mesh.model import AddressPlan, Mesh, MeshConfig, Proxy, Resource, Service, ServicePort, Workload
from envoyext.mesh.translate import ProxyConfig, envoyfilter

Json = dict[str, Any]
REVIEWS = "reviews.default.svc.cluster.local"
PRODUCTPAGE = "productpage.default.svc.cluster.local"
FAULT, CORS, STATS, ROUTER = "envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats", xds.ROUTER_NAME
LUA = xds.LUA


# ---------------------------------------------------------------- a mesh and configs like the contract's

def _workload(i: int, pod: str, deployment: str, ns: str, labels: dict[str, str], gateway: bool = False) -> Workload:
    plan = AddressPlan()
    return Workload(pod=pod, deployment=deployment, namespace=ns, labels=labels, service_account=deployment,
                    container_ports=(9080,), ip=plan.pod_ip(i), app_address=plan.app_address(i),
                    capture_address=plan.capture_address(i), gateway=gateway)


REVIEWS_V1 = _workload(0, "reviews-v1-0", "reviews-v1", "default", {"app": "reviews", "version": "v1"})
PRODUCTPAGE_V1 = _workload(1, "productpage-v1-0", "productpage-v1", "default", {"app": "productpage", "version": "v1"})
INGRESS = _workload(2, "istio-ingressgateway-0", "istio-ingressgateway", "istio-system",
                    {"istio": "ingressgateway", "app": "istio-ingressgateway"}, gateway=True)
OTHER_NS = _workload(3, "ratings-v1-0", "ratings-v1", "other", {"app": "ratings", "version": "v1"})


def proxy(w: Workload) -> Proxy:
    return Proxy("router" if w.gateway else "sidecar", w)


def make_mesh(envoy_filters: list[Resource] = (), wasm_plugins: list[Resource] = ()) -> Mesh:  # type: ignore[assignment]
    port = (ServicePort("http", 9080, 9080, "HTTP"),)
    services = [Service(REVIEWS, "reviews", "default", port, {"app": "reviews"}),
                Service(PRODUCTPAGE, "productpage", "default", port, {"app": "productpage"}),
                Service("istio-ingressgateway.istio-system.svc.cluster.local", "istio-ingressgateway", "istio-system",
                        (ServicePort("http2", 80, 8080, "HTTP2"),), {"istio": "ingressgateway"})]
    workloads = [REVIEWS_V1, PRODUCTPAGE_V1, INGRESS, OTHER_NS]
    return Mesh(MeshConfig(), services, workloads, [proxy(w) for w in workloads],
                envoy_filters=list(envoy_filters), wasm_plugins=list(wasm_plugins))


def chain_filters() -> list[Json]:
    return [xds.http_filter(FAULT, {"@type": xds.T + "envoy.extensions.filters.http.fault.v3.HTTPFault"}),
            xds.http_filter(CORS, {"@type": xds.T + "envoy.extensions.filters.http.cors.v3.Cors"}),
            xds.http_filter(STATS, {"@type": xds.T + "stats.PluginConfig"}),
            xds.router_filter()]


def sidecar_config(w: Workload = REVIEWS_V1) -> ProxyConfig:
    inbound_rc = xds.route_config("inbound|9080||", [xds.virtual_host("inbound|http|9080", ["*"], [
        xds.route("default", {"prefix": "/"}, cluster="inbound|9080||")])])
    inbound_hcm = xds.http_connection_manager("inbound_0.0.0.0_9080", inbound_rc, chain_filters())
    virtual_inbound = xds.listener("virtualInbound", (w.ip, 15006), [
        xds.filter_chain([xds.network_filter(xds.HCM_NAME, inbound_hcm)], name="0.0.0.0_9080",
                         filter_chain_match={"destination_port": 9080})],
        additional_addresses=[{"address": xds.socket_address(w.ip, 9080)}])
    outbound_hcm = {"@type": xds.HCM, "stat_prefix": "outbound_0.0.0.0_9080",
                    "rds": {"route_config_name": "9080"}, "http_filters": chain_filters()}
    outbound = xds.http_listener("0.0.0.0_9080", (w.capture_address, 9080), outbound_hcm)
    prometheus = xds.listener("prometheus", (w.ip, 15090), [xds.filter_chain([xds.network_filter(
        "envoy.filters.network.tcp_proxy", {"@type": xds.T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                            "stat_prefix": "p", "cluster": "PassthroughCluster"})])])
    domains = ["reviews.default.svc.cluster.local", "reviews", "reviews.default", "reviews.default.svc"]
    routes = [xds.route_config("9080", [
        xds.virtual_host(f"{REVIEWS}:9080", domains + [d + ":9080" for d in domains], [
            xds.route("default", {"prefix": "/"}, cluster=f"outbound|9080||{REVIEWS}")]),
        xds.virtual_host("allow_any", ["*"], [xds.route("allow_any", {"prefix": "/"}, cluster="PassthroughCluster")]),
    ])]
    clusters = [xds.static_cluster("inbound|9080||", [(w.app_address, 9080)]),
                {"name": f"outbound|9080||{REVIEWS}", "type": "EDS", "connect_timeout": "10s"},
                {"name": f"outbound|9080|v1|{REVIEWS}", "type": "EDS", "connect_timeout": "10s"},
                {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "connect_timeout": "10s",
                 "lb_policy": "CLUSTER_PROVIDED"}]
    return ProxyConfig(proxy(w), listeners=[virtual_inbound, outbound, prometheus], clusters=clusters, routes=routes)


def gateway_config() -> ProxyConfig:
    hcm = {"@type": xds.HCM, "stat_prefix": "outbound_0.0.0.0_8080", "rds": {"route_config_name": "http.8080"},
           "http_filters": chain_filters()}
    routes = [xds.route_config("http.8080", [xds.virtual_host("*:8080", ["*"], [
        xds.route("productpage", {"prefix": "/productpage"}, cluster=f"outbound|9080||{PRODUCTPAGE}")])])]
    return ProxyConfig(proxy(INGRESS), listeners=[xds.http_listener("0.0.0.0_8080", (INGRESS.ip, 8080), hcm)],
                       clusters=[{"name": f"outbound|9080||{PRODUCTPAGE}", "type": "EDS"}], routes=routes)


def resources(text: str) -> list[Resource]:
    out = []
    for i, doc in enumerate(yaml.safe_load_all(text)):
        meta = doc["metadata"]
        meta.setdefault("namespace", "default")
        out.append(Resource(doc["kind"], doc["apiVersion"], meta["name"], meta["namespace"], meta, doc["spec"],
                            "test.yaml", i))
    return out


def run(text: str, config: ProxyConfig | None = None) -> ProxyConfig:
    config = config or sidecar_config()
    before = copy.deepcopy(config)
    out = envoyfilter.apply(make_mesh(resources(text)), config)
    assert config == before, "apply must not change its input"
    return out


def listener(config: ProxyConfig, name: str) -> Json:
    return next(lis for lis in config.listeners if lis["name"] == name)


def http_names(config: ProxyConfig, name: str) -> list[str]:
    return [f["name"] for f in xds.hcm_of(listener(config, name))["http_filters"]]


def unchanged(text: str, config: ProxyConfig | None = None) -> None:
    config = config or sidecar_config()
    assert run(text, config) == config


# ---------------------------------------------------------------- HTTP_FILTER: the Lua injection

LUA_INBOUND = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: reviews-lua}
spec:
  workloadSelector: {labels: {app: reviews}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        portNumber: 9080
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code:
            inline_string: |
              function envoy_on_response(h) h:headers():add("x-lua", "1") end
"""


def test_lua_insert_before_router_on_sidecar_inbound() -> None:
    out = run(LUA_INBOUND)
    assert http_names(out, "virtualInbound") == [FAULT, CORS, STATS, "envoy.filters.http.lua", ROUTER]
    assert http_names(out, "0.0.0.0_9080") == [FAULT, CORS, STATS, ROUTER]  # outbound untouched
    lua = xds.hcm_of(listener(out, "virtualInbound"))["http_filters"][3]
    assert lua["typed_config"]["@type"] == LUA


@pytest.mark.parametrize("change", [
    ("SIDECAR_INBOUND", "GATEWAY"),                 # another context
    ("portNumber: 9080", "portNumber: 9081"),       # another port (virtualInbound: the chain's destination_port)
    ("app: reviews", "app: ratings"),               # another workload
    ("envoy.filters.http.router}", "envoy.filters.http.nope}"),  # no such anchor: INSERT_BEFORE does nothing
])
def test_lua_negative_controls(change: tuple[str, str]) -> None:
    unchanged(LUA_INBOUND.replace(*change))


def test_other_namespace_is_not_reached_but_root_namespace_is() -> None:
    unchanged(LUA_INBOUND.replace("{name: reviews-lua}", "{name: reviews-lua, namespace: other}"))
    root = LUA_INBOUND.replace("{name: reviews-lua}", "{name: reviews-lua, namespace: istio-system}")
    assert "envoy.filters.http.lua" in http_names(run(root), "virtualInbound")
    # the root namespace without a selector reaches every proxy, gateways included (context permitting)
    anywhere = root.replace("  workloadSelector: {labels: {app: reviews}}\n", "").replace("SIDECAR_INBOUND", "ANY") \
        .replace("portNumber: 9080", "portNumber: 8080")
    assert "envoy.filters.http.lua" in http_names(run(anywhere, gateway_config()), "0.0.0.0_8080")


def test_targetrefs_service() -> None:
    text = LUA_INBOUND.replace("workloadSelector: {labels: {app: reviews}}",
                               "targetRefs: [{kind: Service, name: reviews}]")
    assert "envoy.filters.http.lua" in http_names(run(text), "virtualInbound")
    unchanged(text.replace("name: reviews}", "name: productpage}"))


HTTP_OPS = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ops}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            SUB
    patch:
      operation: OP
      value:
        name: my.filter
        typed_config:
          {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1024}
"""


@pytest.mark.parametrize("op, sub, expected", [
    ("INSERT_FIRST", "", ["my.filter", FAULT, CORS, STATS, ROUTER]),
    ("INSERT_BEFORE", "", ["my.filter", FAULT, CORS, STATS, ROUTER]),     # no anchor: first
    ("INSERT_AFTER", "", [FAULT, CORS, STATS, ROUTER, "my.filter"]),      # no anchor: last
    ("ADD", "", [FAULT, CORS, STATS, ROUTER, "my.filter"]),
    ("INSERT_AFTER", "subFilter: {name: envoy.filters.http.cors}", [FAULT, CORS, "my.filter", STATS, ROUTER]),
    ("REPLACE", "subFilter: {name: envoy.filters.http.cors}", [FAULT, "my.filter", STATS, ROUTER]),
    ("REMOVE", "subFilter: {name: envoy.filters.http.fault}", [CORS, STATS, ROUTER]),
])
def test_http_filter_operations(op: str, sub: str, expected: list[str]) -> None:
    out = run(HTTP_OPS.replace("OP", op).replace("SUB", sub))
    assert http_names(out, "0.0.0.0_9080") == expected
    assert http_names(out, "virtualInbound") == [FAULT, CORS, STATS, ROUTER]


@pytest.mark.parametrize("op", ["REPLACE", "REMOVE"])
def test_replace_and_remove_need_an_anchor(op: str) -> None:
    unchanged(HTTP_OPS.replace("OP", op).replace("SUB", ""))


def test_filter_class_places_add_by_phase() -> None:
    text = HTTP_OPS.replace("OP", "ADD").replace("SUB", "").replace("      value:",
                                                                     "      filterClass: AUTHN\n      value:")
    assert http_names(run(text), "0.0.0.0_9080") == ["my.filter", FAULT, CORS, STATS, ROUTER]
    cfg = sidecar_config()
    hcm = xds.hcm_of(listener(cfg, "0.0.0.0_9080"))
    hcm["http_filters"][:0] = [{"name": "envoy.filters.http.jwt_authn", "typed_config": {"@type": "x"}},
                               {"name": "envoy.filters.http.rbac", "typed_config": {"@type": "y"}}]
    got = http_names(run(text, cfg), "0.0.0.0_9080")
    assert got[:3] == ["my.filter", "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"]
    got = http_names(run(text.replace("AUTHN", "AUTHZ"), cfg), "0.0.0.0_9080")
    assert got[:3] == ["envoy.filters.http.jwt_authn", "my.filter", "envoy.filters.http.rbac"]
    got = http_names(run(text.replace("AUTHN", "STATS"), cfg), "0.0.0.0_9080")
    assert got[:4] == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "my.filter", FAULT]


def test_merge_http_filter_typed_config() -> None:
    text = HTTP_OPS.replace("OP", "MERGE").replace("SUB", "subFilter: {name: envoy.filters.http.router}").replace(
        "        name: my.filter\n", "").replace(
        "envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1024",
        "envoy.extensions.filters.http.router.v3.Router, suppress_envoy_headers: true")
    out = run(text)
    router = xds.hcm_of(listener(out, "0.0.0.0_9080"))["http_filters"][-1]
    assert router == {"name": ROUTER, "typed_config": {"@type": xds.ROUTER, "suppress_envoy_headers": True}}
    unchanged(text.replace("SIDECAR_OUTBOUND", "SIDECAR_INBOUND").replace(
        "subFilter: {name: envoy.filters.http.router}", "subFilter: {name: envoy.filters.http.nope}"))


# ---------------------------------------------------------------- NETWORK_FILTER: MERGE on the HCM

HCM_MERGE = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: hcm-merge, namespace: istio-system}
spec:
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {name: envoy.filters.network.http_connection_manager}
    patch:
      operation: MERGE
      value:
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          common_http_protocol_options: {idle_timeout: 30s}
          server_name: my-mesh
"""


def test_merge_on_hcm() -> None:
    out = run(HCM_MERGE)
    hcm = xds.hcm_of(listener(out, "virtualInbound"))
    assert hcm["server_name"] == "my-mesh"
    assert hcm["common_http_protocol_options"] == {"idle_timeout": "30s"}
    assert hcm["stat_prefix"] == "inbound_0.0.0.0_9080"   # merged, not replaced
    assert [f["name"] for f in hcm["http_filters"]] == [FAULT, CORS, STATS, ROUTER]
    assert "server_name" not in xds.hcm_of(listener(out, "0.0.0.0_9080"))
    unchanged(HCM_MERGE.replace("SIDECAR_INBOUND", "GATEWAY"))
    unchanged(HCM_MERGE.replace("{name: envoy.filters.network.http_connection_manager}",
                                "{name: envoy.filters.network.tcp_proxy}"))


def test_network_filter_insert_and_remove() -> None:
    text = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: nf}
spec:
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener:
        portNumber: 9080
        filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.network.rbac
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, stat_prefix: tcp.}
"""
    out = run(text)
    assert [f["name"] for f in listener(out, "0.0.0.0_9080")["filter_chains"][0]["filters"]] == \
        ["envoy.filters.network.rbac", xds.HCM_NAME]
    unchanged(text.replace("portNumber: 9080", "portNumber: 9081"))
    removed = run(text.replace("operation: INSERT_BEFORE", "operation: REMOVE"))
    assert listener(removed, "0.0.0.0_9080")["filter_chains"][0]["filters"] == []


# ---------------------------------------------------------------- LISTENER / FILTER_CHAIN / LISTENER_FILTER

def test_listener_merge_remove_add() -> None:
    base = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lis}
spec:
  configPatches:
  - applyTo: LISTENER
    match: {context: SIDECAR_OUTBOUND, listener: {portNumber: 9080}}
    patch: {operation: OP, value: {per_connection_buffer_limit_bytes: 32768}}
"""
    merged = run(base.replace("OP", "MERGE"))
    assert listener(merged, "0.0.0.0_9080")["per_connection_buffer_limit_bytes"] == 32768
    assert "per_connection_buffer_limit_bytes" not in listener(merged, "virtualInbound")
    removed = run(base.replace("OP", "REMOVE"))
    assert [lis["name"] for lis in removed.listeners] == ["virtualInbound", "prometheus"]
    # portNumber on LISTENER compares the listener's own port: virtualInbound (15006) is not 9080
    unchanged(base.replace("OP", "REMOVE").replace("SIDECAR_OUTBOUND", "SIDECAR_INBOUND"))
    extra = "{name: extra, address: {socket_address: {address: 127.0.0.1, port_value: 7777}}}"
    added = run(base.replace("OP", "ADD").replace("{per_connection_buffer_limit_bytes: 32768}", extra))
    assert [lis["name"] for lis in added.listeners][-1] == "extra"
    # ADD with context ANY only lands on outbound and gateways: once on a sidecar
    any_add = run(base.replace("OP", "ADD").replace("context: SIDECAR_OUTBOUND, ", "").replace(
        "{per_connection_buffer_limit_bytes: 32768}", "{name: extra}"))
    assert [lis["name"] for lis in any_add.listeners].count("extra") == 1


def test_prometheus_listener_is_never_patched() -> None:
    text = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: all}
spec:
  configPatches:
  - applyTo: LISTENER
    patch: {operation: MERGE, value: {per_connection_buffer_limit_bytes: 1}}
"""
    out = run(text)
    assert listener(out, "prometheus") == listener(sidecar_config(), "prometheus")
    assert listener(out, "virtualInbound")["per_connection_buffer_limit_bytes"] == 1


def test_filter_chain_match_fields() -> None:
    text = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: fc}
spec:
  configPatches:
  - applyTo: FILTER_CHAIN
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {name: 0.0.0.0_9080, destinationPort: 9080}}
    patch:
      operation: MERGE
      value: {transport_socket_connect_timeout: 5s}
"""
    out = run(text)
    assert listener(out, "virtualInbound")["filter_chains"][0]["transport_socket_connect_timeout"] == "5s"
    unchanged(text.replace("destinationPort: 9080", "destinationPort: 9081"))
    unchanged(text.replace("name: 0.0.0.0_9080", "name: 0.0.0.0_9081"))
    unchanged(text.replace("destinationPort: 9080", "sni: reviews.example.com"))
    unchanged(text.replace("destinationPort: 9080", "transportProtocol: tls"))
    removed = run(text.replace("operation: MERGE", "operation: REMOVE"))
    assert listener(removed, "virtualInbound")["filter_chains"] == []


def test_listener_filter_add_and_anchor() -> None:
    text = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lf}
spec:
  configPatches:
  - applyTo: LISTENER_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.listener.tls_inspector
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
"""
    out = run(text)
    assert [f["name"] for f in listener(out, "virtualInbound")["listener_filters"]] == \
        ["envoy.filters.listener.tls_inspector"]
    unchanged(text.replace("SIDECAR_INBOUND", "GATEWAY"))
    unchanged(text.replace("operation: INSERT_FIRST", "operation: REMOVE"))  # REMOVE without listenerFilter: no-op


# ---------------------------------------------------------------- routes

ROUTES = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: routes}
spec:
  configPatches:
  - applyTo: APPLY
    match:
      context: SIDECAR_OUTBOUND
      routeConfiguration:
        portNumber: 9080
        VHOST
    patch:
      operation: OP
      value: VALUE
"""


def _routes(apply_to: str, op: str, value: str, vhost: str = "") -> str:
    return ROUTES.replace("APPLY", apply_to).replace("OP", op).replace("VALUE", value).replace("VHOST", vhost)


def test_route_configuration_merge() -> None:
    text = _routes("ROUTE_CONFIGURATION", "MERGE", "{request_headers_to_add: [{header: {key: x-rc, value: '1'}}]}")
    out = run(text)
    assert out.routes[0]["request_headers_to_add"] == [{"header": {"key": "x-rc", "value": "1"}}]
    unchanged(text.replace("portNumber: 9080", "portNumber: 9081"))
    unchanged(text.replace("SIDECAR_OUTBOUND", "SIDECAR_INBOUND").replace("portNumber: 9080", "portNumber: 9999"))
    # the inbound inline route config is SIDECAR_INBOUND, its port parsed from inbound|9080||
    inbound = run(text.replace("SIDECAR_OUTBOUND", "SIDECAR_INBOUND"))
    rc = xds.hcm_of(listener(inbound, "virtualInbound"))["route_config"]
    assert rc["request_headers_to_add"] == [{"header": {"key": "x-rc", "value": "1"}}]
    assert "request_headers_to_add" not in inbound.routes[0]


def test_virtual_host_merge_remove_add() -> None:
    vhost = f"vhost: {{name: '{REVIEWS}:9080'}}"
    merged = run(_routes("VIRTUAL_HOST", "MERGE", "{include_request_attempt_count: true}", vhost))
    assert merged.routes[0]["virtual_hosts"][0]["include_request_attempt_count"] is True
    assert "include_request_attempt_count" not in merged.routes[0]["virtual_hosts"][1]
    by_domain = run(_routes("VIRTUAL_HOST", "MERGE", "{include_request_attempt_count: true}",
                            "vhost: {domainName: reviews.default}"))
    assert by_domain == merged
    removed = run(_routes("VIRTUAL_HOST", "REMOVE", "{}", "vhost: {name: allow_any}"))
    assert [v["name"] for v in removed.routes[0]["virtual_hosts"]] == [f"{REVIEWS}:9080"]
    added = run(_routes("VIRTUAL_HOST", "ADD", "{name: extra, domains: [extra.local], routes: []}"))
    assert [v["name"] for v in added.routes[0]["virtual_hosts"]][-1] == "extra"
    unchanged(_routes("VIRTUAL_HOST", "REMOVE", "{}", "vhost: {name: nope}"))


def test_http_route_patches() -> None:
    vhost = f"vhost: {{name: '{REVIEWS}:9080', route: {{name: default, action: ROUTE}}}}"
    merged = run(_routes("HTTP_ROUTE", "MERGE", "{route: {timeout: 3s}}", vhost))
    r = merged.routes[0]["virtual_hosts"][0]["routes"][0]
    assert r["route"] == {"cluster": f"outbound|9080||{REVIEWS}", "timeout": "3s"}
    unchanged(_routes("HTTP_ROUTE", "MERGE", "{route: {timeout: 3s}}", vhost.replace("ROUTE}", "REDIRECT}")))
    unchanged(_routes("HTTP_ROUTE", "MERGE", "{route: {timeout: 3s}}", vhost.replace("name: default", "name: x")))
    before = run(_routes("HTTP_ROUTE", "INSERT_BEFORE",
                         "{name: health, match: {path: /healthz}, direct_response: {status: 200}}", vhost))
    assert [r["name"] for r in before.routes[0]["virtual_hosts"][0]["routes"]] == ["health", "default"]
    assert [r["name"] for r in before.routes[0]["virtual_hosts"][1]["routes"]] == ["allow_any"]
    removed = run(_routes("HTTP_ROUTE", "REMOVE", "{}", "vhost: {name: allow_any, route: {name: allow_any}}"))
    assert removed.routes[0]["virtual_hosts"][1]["routes"] == []
    # a oneof: setting direct_response clears route
    swapped = run(_routes("HTTP_ROUTE", "MERGE", "{direct_response: {status: 418}}", vhost))
    r = swapped.routes[0]["virtual_hosts"][0]["routes"][0]
    assert "route" not in r and r["direct_response"] == {"status": 418}


def test_gateway_route_configuration_by_service_port() -> None:
    text = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: gw, namespace: istio-system}
spec:
  workloadSelector: {labels: {istio: ingressgateway}}
  configPatches:
  - applyTo: VIRTUAL_HOST
    match: {context: GATEWAY, routeConfiguration: {portNumber: 80}}
    patch: {operation: MERGE, value: {include_request_attempt_count: true}}
"""
    # 80 is the gateway Service's port for target port 8080 (the route http.8080): Istio's port map
    assert run(text, gateway_config()).routes[0]["virtual_hosts"][0]["include_request_attempt_count"] is True
    assert run(text.replace("portNumber: 80", "portNumber: 8080"), gateway_config()) != gateway_config()
    unchanged(text.replace("portNumber: 80", "portNumber: 443"), gateway_config())
    unchanged(text, sidecar_config())   # not selected: the sidecar has no istio=ingressgateway label


# ---------------------------------------------------------------- clusters

CLUSTER = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: cl}
spec:
  configPatches:
  - applyTo: CLUSTER
    match:
      context: CTX
      cluster: MATCH
    patch:
      operation: OP
      value: VALUE
"""


def _cluster(ctx: str, match: str, op: str, value: str = "{}") -> str:
    return CLUSTER.replace("CTX", ctx).replace("MATCH", match).replace("OP", op).replace("VALUE", value)


def test_cluster_merge_by_service_subset_port() -> None:
    text = _cluster("SIDECAR_OUTBOUND", f"{{service: {REVIEWS}, subset: v1, portNumber: 9080}}", "MERGE",
                    "{connect_timeout: 1s, circuit_breakers: {thresholds: [{max_connections: 5}]}}")
    out = run(text)
    c = {c["name"]: c for c in out.clusters}
    assert c[f"outbound|9080|v1|{REVIEWS}"]["connect_timeout"] == "1s"
    assert c[f"outbound|9080|v1|{REVIEWS}"]["circuit_breakers"] == {"thresholds": [{"max_connections": 5}]}
    assert c[f"outbound|9080||{REVIEWS}"]["connect_timeout"] == "10s"
    unchanged(text.replace("subset: v1", "subset: v2"))
    unchanged(text.replace("portNumber: 9080", "portNumber: 9081"))
    unchanged(text.replace("SIDECAR_OUTBOUND", "SIDECAR_INBOUND"))


def test_cluster_inbound_matches_the_workload_services() -> None:
    text = _cluster("SIDECAR_INBOUND", f"{{service: {REVIEWS}, portNumber: 9080}}", "MERGE", "{connect_timeout: 2s}")
    out = run(text)
    assert out.clusters[0]["name"] == "inbound|9080||" and out.clusters[0]["connect_timeout"] == "2s"
    unchanged(text.replace(REVIEWS, PRODUCTPAGE))


def test_cluster_remove_and_add_and_lists() -> None:
    removed = run(_cluster("ANY", "{name: PassthroughCluster}", "REMOVE"))
    assert "PassthroughCluster" not in [c["name"] for c in removed.clusters]
    added = run(_cluster("ANY", "{}", "ADD", "{name: extra, type: STATIC}").replace("      cluster: {}\n", ""))
    assert [c["name"] for c in added.clusters].count("extra") == 1
    # lists append on MERGE and are replaced by MERGE_AND_REPLACE_LIST
    cfg = sidecar_config()
    cfg.clusters[3]["health_checks"] = [{"timeout": "1s"}]
    appended = run(_cluster("ANY", "{name: PassthroughCluster}", "MERGE", "{health_checks: [{timeout: 2s}]}"), cfg)
    assert appended.clusters[3]["health_checks"] == [{"timeout": "1s"}, {"timeout": "2s"}]
    replaced = run(_cluster("ANY", "{name: PassthroughCluster}", "MERGE_AND_REPLACE_LIST",
                            "{health_checks: [{timeout: 2s}]}"), cfg)
    assert replaced.clusters[3]["health_checks"] == [{"timeout": "2s"}]


def test_cluster_transport_socket_merge() -> None:
    tls = xds.T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    cfg = sidecar_config()
    cfg.clusters[1]["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                           "typed_config": {"@type": tls, "sni": "a"}}
    text = _cluster("SIDECAR_OUTBOUND", f"{{service: {REVIEWS}, subset: ''}}", "MERGE",
                    '{transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": ' + tls
                    + ', common_tls_context: {alpn_protocols: [h2]}}}, connect_timeout: 9s}')
    out = run(text, cfg)
    ts = out.clusters[1]["transport_socket"]["typed_config"]
    assert ts == {"@type": tls, "sni": "a", "common_tls_context": {"alpn_protocols": ["h2"]}}
    assert out.clusters[1]["connect_timeout"] == "10s"   # Istio merges only the transport socket then


# ---------------------------------------------------------------- order, proxy match, errors

def test_priority_root_namespace_and_creation_order() -> None:
    def ef(name: str, ns: str, priority: int, created: str | None = None) -> str:
        meta = f"{{name: {name}, namespace: {ns}" + (f", creationTimestamp: '{created}'" if created else "") + "}"
        return f"""
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {meta}
spec:
  priority: {priority}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {{name: envoy.filters.http.router}}
    patch:
      operation: INSERT_BEFORE
      value: {{name: {name}, typed_config: {{"@type": {LUA}}}}}
"""
    docs = "---".join([ef("late", "default", 10), ef("ns-b", "default", 0, "2026-01-02T00:00:00Z"),
                       ef("ns-a", "default", 0, "2026-01-01T00:00:00Z"), ef("root", "istio-system", 0),
                       ef("early", "default", -5)])
    names = http_names(run(docs), "virtualInbound")
    # each INSERT_BEFORE router lands just before it, so application order reads left to right
    assert names[3:-1] == ["early", "root", "ns-a", "ns-b", "late"]


def test_proxy_version_and_metadata_match() -> None:
    base = LUA_INBOUND.replace("    match:\n      context: SIDECAR_INBOUND",
                               "    match:\n      proxy: PROXY\n      context: SIDECAR_INBOUND")
    assert "envoy.filters.http.lua" in http_names(run(base.replace("PROXY", "{proxyVersion: '^1\\.30.*'}")),
                                                  "virtualInbound")
    unchanged(base.replace("PROXY", "{proxyVersion: '^1\\.29.*'}"))
    assert run(base.replace("PROXY", "{metadata: {NAMESPACE: default}}")) != sidecar_config()
    unchanged(base.replace("PROXY", "{metadata: {NAMESPACE: other}}"))


@pytest.mark.parametrize("value, field", [
    ("{name: envoy.lua, config: {inlineCode: x}}", "patch.value.config"),
    ("{name: envoy.lua, typed_config: {inline_code: x}}", "patch.value.typed_config"),
    ("{name: envoy.lua, typed_config: {type_url: x, value: y}}", "patch.value.typed_config"),
])
def test_old_value_forms_are_refused(value: str, field: str) -> None:
    text = HTTP_OPS.replace("OP", "ADD").replace("SUB", "").split("      value:")[0] + f"      value: {value}\n"
    with pytest.raises(UserError) as e:
        run(text)
    assert e.value.field == f"spec.configPatches[0].{field}"
    assert "EnvoyFilter default/ops" in str(e.value) and e.value.file == "test.yaml"


def test_extension_config_is_a_clear_error() -> None:
    text = HTTP_OPS.replace("applyTo: HTTP_FILTER", "applyTo: EXTENSION_CONFIG").replace("OP", "ADD").replace("SUB", "")
    with pytest.raises(UserError, match="EXTENSION_CONFIG is not supported"):
        run(text)


def test_merge_semantics() -> None:
    dst: Json = {"a": {"b": 1, "l": [1]}, "tc": {"@type": "A", "x": 1}, "m": {"typed_per_filter_config": {
        "k": {"@type": "T", "p": 1}}}, "route": {"cluster": "c"}}
    envoyfilter.merge(dst, {"a": {"c": 2, "l": [2]}, "tc": {"@type": "A", "y": 2}, "m": {"typed_per_filter_config": {
        "k": {"@type": "T", "q": 2}}}})
    assert dst["a"] == {"b": 1, "c": 2, "l": [1, 2]}
    assert dst["tc"] == {"@type": "A", "x": 1, "y": 2}
    assert dst["m"]["typed_per_filter_config"]["k"] == {"@type": "T", "q": 2}   # map entries replace
    envoyfilter.merge(dst, {"tc": {"@type": "B", "z": 3}})
    assert dst["tc"] == {"@type": "B", "z": 3}   # a different @type replaces


# ---------------------------------------------------------------- the CRD schema (shipped), when present

def _crd_schema(kind: str) -> Json:
    from envoyext.schemas import HERE
    for doc in yaml.safe_load_all((HERE / "istio" / "crd-all.gen.yaml").read_text()):
        if doc and doc.get("spec", {}).get("names", {}).get("kind") == kind:
            version = next(v for v in doc["spec"]["versions"] if v.get("served", True))
            return dict(version["schema"]["openAPIV3Schema"])
    raise AssertionError(kind)


@pytest.mark.parametrize("text", [
    LUA_INBOUND, HCM_MERGE, HTTP_OPS.replace("OP", "INSERT_FIRST").replace("SUB", ""),
    _cluster("SIDECAR_OUTBOUND", "{service: x, subset: v1}", "MERGE", "{connect_timeout: 1s}")])
def test_examples_validate_against_the_crd(text: str) -> None:
    import jsonschema
    schema = _crd_schema("EnvoyFilter")
    for r in resources(text):
        doc = {"apiVersion": r.api_version, "kind": r.kind, "metadata": r.metadata, "spec": r.spec}
        jsonschema.validate(doc, schema)


# ---------------------------------------------------------------- Envoy accepts the patched config

def _static(config: ProxyConfig) -> Json:
    """The proxy's config as one static bootstrap Envoy can validate: RDS inlined, EDS made static."""
    routes = {rc["name"]: rc for rc in config.routes}
    listeners = copy.deepcopy(config.listeners)
    for lis in listeners:
        for fc in lis["filter_chains"]:
            for f in fc["filters"]:
                if f["name"] == xds.HCM_NAME and "rds" in f["typed_config"]:
                    f["typed_config"]["route_config"] = routes[f["typed_config"].pop("rds")["route_config_name"]]
    clusters = [c if c.get("type") != "EDS" else {**c, "type": "STATIC", "load_assignment": {"cluster_name": c["name"]}}
                for c in config.clusters]
    return xds.bootstrap(node=xds.node(config.proxy.node_id, config.proxy.node_cluster),
                         admin=("127.0.0.1", 0), listeners=listeners, clusters=clusters)


def test_envoy_validates_the_patched_config() -> None:
    from envoyext.envoy.process import validate
    docs = "---".join([LUA_INBOUND, HCM_MERGE,
                       _cluster("SIDECAR_OUTBOUND", f"{{service: {REVIEWS}}}", "MERGE", "{connect_timeout: 1s}"),
                       _routes("HTTP_ROUTE", "MERGE", "{route: {timeout: 3s}}",
                               f"vhost: {{name: '{REVIEWS}:9080', route: {{name: default}}}}")])
    cfg = sidecar_config()
    for lis in cfg.listeners[:2]:   # istio.stats is envoyext's own filter: not in a plain Envoy
        hcm = xds.hcm_of(lis)
        hcm["http_filters"] = [h for h in hcm["http_filters"] if h["name"] != STATS]
    out = run(docs, cfg)
    assert "envoy.filters.http.lua" in http_names(out, "virtualInbound")
    validate(_static(out))
