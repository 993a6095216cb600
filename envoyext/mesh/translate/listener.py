"""LDS: the listeners one proxy is served, named and shaped as Istio's (reference §1, §5, §11).

There is no iptables here, so capture is done with addresses (model.AddressPlan): a sidecar's
inbound side is ONE listener `virtualInbound` on the pod IP's :15006 that also binds the pod IP at
each inbound port (`additional_addresses`), with a filter chain per port chosen by
`destination_port`, as Istio's chains are; its outbound side is a listener `0.0.0.0_<port>` per
HTTP service port in view, bound on the pod's capture address, where the stand-in app sends every
request. A gateway gets `0.0.0.0_<port>` on its pod IP per HTTP server port of the Gateways that
select it. Every HCM names its RouteConfiguration over RDS (a file under `xds_dir`), except the
inbound chains, whose one route is inline as Istio's are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from envoyext.envoy import xds
from envoyext.mesh.model import INBOUND_CAPTURE_PORT, Json, Mesh, Proxy, Service
from envoyext.mesh.translate import authz, route, scope

FAULT = xds.T + "envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = xds.T + "envoy.extensions.filters.http.cors.v3.Cors"
TCP_PROXY = xds.T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
TCP_PROXY_NAME = "envoy.filters.network.tcp_proxy"
INBOUND_RETRY = {"retry_on": "reset-before-request", "num_retries": 2}   # pilot retry.ConvertInboundPolicy

# `istio.stats` for a reporter ("source" | "destination"); None leaves it out of the chain.
StatsFilter = Callable[[str], Json]
# --- security hooks (issue 11, mTLS; built by translate/tls.py, None = plaintext as before) ---
# One inbound port's plaintext chain → the chains its PeerAuthentication mode needs.
InboundTls = Callable[[Proxy, int, Json, bool], list[Json]]
# A gateway's TLS server listeners: (mesh, proxy, xds_dir, http filters, HCM extra fields).
GatewayTls = Callable[[Mesh, Proxy, str, list[Json], Json], list[Json]]
# The authentication filters (jwt_authn from RequestAuthentication, authn_jwt.py) for a proxy.
Authn = Callable[[Mesh, Proxy], list[Json]]


def for_proxy(mesh: Mesh, proxy: Proxy, *, xds_dir: str = "xds", stats: StatsFilter | None = None,
              hcm_extra: Json | None = None, inbound_tls: InboundTls | None = None,
              gateway_tls: GatewayTls | None = None, authn: Authn | None = None) -> list[Json]:
    """Every listener of the proxy. `stats` builds the `istio.stats` filter entry for a reporter
    (the telemetry module's); `hcm_extra` adds fields to every connection manager (tracing,
    access_log), as Envoy spells them. `inbound_tls`, `gateway_tls`: the mTLS hooks (tls.py);
    `authn`: the jwt_authn filter(s) placed between CUSTOM and RBAC (authn_jwt.py)."""
    security = authz.http_filters(mesh, proxy, authn(mesh, proxy) if authn is not None else None)
    if proxy.kind == "router":
        listeners = gateway_listeners(mesh, proxy, xds_dir, stats, hcm_extra or {}, security)
        if gateway_tls is not None:   # security hook: HTTPS / TLS servers
            listeners += gateway_tls(mesh, proxy, xds_dir, [*copy.deepcopy(security), *http_filters(stats, "source")],
                                     dict(hcm_extra or {}))
        return listeners
    return [inbound_listener(mesh, proxy, stats, hcm_extra or {}, inbound_tls, security),
            *outbound_listeners(mesh, proxy, xds_dir, stats, hcm_extra or {}),
            *outbound_tcp_listeners(mesh, proxy)]


def http_filters(stats: StatsFilter | None, reporter: str) -> list[Json]:
    """Istio's tail of every HCM chain (reference §11: fault, cors, istio.stats, router). Extension
    phases (AUTHN, AUTHZ, STATS, UNSPECIFIED) go before fault, inserted by the extensions post-pass."""
    chain = [xds.http_filter(route.FAULT_FILTER, {"@type": FAULT}), xds.http_filter(route.CORS_FILTER, {"@type": CORS})]
    if stats is not None:
        chain.append(stats(reporter))
    return [*chain, xds.router_filter()]


def config_source(path: str) -> Json:
    """A file-based xDS source. No watched_directory: with one, every file moved into the
    directory would reload every route configuration watching it; without, Envoy watches this
    one path for moves, which is what delivery's atomic rename-over is (as the clusters' EDS)."""
    return {"path_config_source": {"path": path}, "resource_api_version": "V3"}


def rds_hcm(stat_prefix: str, route_name: str, xds_dir: str, filters: list[Json], extra: Json,
            server_name: str | None) -> Json:
    return {"@type": xds.HCM, "stat_prefix": stat_prefix,
            "rds": {"route_config_name": route_name,
                    "config_source": config_source(f"{xds_dir}/rds/{route_name}.yaml")},
            **_hcm_common(server_name), **extra, "http_filters": filters}


def _hcm_common(server_name: str | None = "istio-envoy") -> Json:
    # What every Istio HCM sets: no idle cutoff on streams, websocket upgrades, normalized paths, and
    # the `server: istio-envoy` header of inbound and gateway answers (sidecar outbound keeps
    # Envoy's default "envoy", pilot GetProxyHeadersFromProxyConfig).
    out: Json = {"stream_idle_timeout": "0s", "normalize_path": True}
    if server_name:
        out["server_name"] = server_name
    return {**out, "upgrade_configs": [{"upgrade_type": "websocket"}]}


# --- sidecar outbound ------------------------------------------------------------------------------

def outbound_listeners(mesh: Mesh, proxy: Proxy, xds_dir: str, stats: StatsFilter | None,
                       extra: Json) -> list[Json]:
    out = []
    for port in route.outbound_http_ports(mesh, proxy):
        name = f"0.0.0.0_{port}"
        hcm = rds_hcm(f"outbound_{name}", str(port), xds_dir, http_filters(stats, "source"),
                      {"use_remote_address": False, **extra}, server_name=None)
        out.append(xds.listener(name, (proxy.workload.capture_address, port),
                                [xds.filter_chain([xds.network_filter(xds.HCM_NAME, hcm)])],
                                traffic_direction="OUTBOUND"))
    return out


TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})


def outbound_tcp_listeners(mesh: Mesh, proxy: Proxy) -> list[Json]:
    """Non-HTTP service ports in view (no HTTP listener on that port): TLS/HTTPS ports get one
    chain per service picked by SNI (`tls_inspector`), as Istio's `0.0.0.0_443` does for hosts
    without a VIP; a TCP port goes to the first service that has it. Every service name resolves
    to the one capture address, so a destination address cannot tell two TCP services apart the way
    Istio's `<vip>_<port>` listeners do."""
    http = set(route.outbound_http_ports(mesh, proxy))
    by_port: dict[int, list[tuple[Service, str]]] = {}
    for s in scope.services_in_view(mesh, proxy):
        for p in s.ports:
            if p.port not in http and p.protocol.upper() not in scope.HTTP_PROTOCOLS:
                by_port.setdefault(p.port, []).append((s, p.protocol.upper()))
    out = []
    for port, services in sorted(by_port.items()):
        name = f"0.0.0.0_{port}"
        address = (proxy.workload.capture_address, port)
        tls = [(s, proto) for s, proto in services if proto in TLS_PROTOCOLS]
        if tls:
            chains = [xds.filter_chain([tcp_proxy(c, c)], filter_chain_match={"server_names": sni_names(s)})
                      for s, _ in tls for c in [f"outbound|{port}||{s.hostname}"]]
            out.append(xds.listener(name, address, chains, traffic_direction="OUTBOUND",
                                    listener_filters=[xds.tls_inspector()]))
        else:
            cluster = f"outbound|{port}||{services[0][0].hostname}"
            out.append(xds.listener(name, address, [xds.filter_chain([tcp_proxy(cluster, cluster)])],
                                    traffic_direction="OUTBOUND"))
    return out


def sni_names(service: Service) -> list[str]:
    return [service.hostname]




# --- sidecar inbound -------------------------------------------------------------------------------

def inbound_ports(mesh: Mesh, proxy: Proxy) -> dict[int, tuple[Service, bool]]:
    """target port → (the first service that sends to it, whether it speaks HTTP), for the services
    selecting this workload (Istio builds inbound chains from service target ports)."""
    out: dict[int, tuple[Service, bool]] = {}
    for s in mesh.services:
        if s.from_service_entry or s.namespace != proxy.namespace or not s.selector:
            continue
        if not all(proxy.labels.get(k) == v for k, v in s.selector.items()):
            continue
        for p in s.ports:
            http = p.protocol.upper() in scope.HTTP_PROTOCOLS
            if p.target_port not in out:
                out[p.target_port] = (s, http)
            elif http and not out[p.target_port][1]:
                out[p.target_port] = (out[p.target_port][0], True)
    return dict(sorted(out.items()))


def inbound_listener(mesh: Mesh, proxy: Proxy, stats: StatsFilter | None, extra: Json,
                     inbound_tls: InboundTls | None, security: list[Json]) -> Json:
    """`security`: the head of each HTTP chain: CUSTOM ext_authz, jwt_authn, RBAC (reference §11)."""
    ip = proxy.workload.ip
    ports = inbound_ports(mesh, proxy)
    chains = [inbound_chain(port, service, http, stats, extra, copy.deepcopy(security))
              for port, (service, http) in ports.items()]
    if inbound_tls is not None:   # security hook: each port's chains as its mTLS mode needs them
        chains = [c for (port, (_, http)), chain in zip(ports.items(), chains)
                  for c in inbound_tls(proxy, port, chain, http)]
    # Istio's chain for connections to :15006 itself (nothing should arrive there).
    chains.append(xds.filter_chain([tcp_proxy("BlackHoleCluster", "BlackHoleCluster")],
                                   filter_chain_match={"destination_port": INBOUND_CAPTURE_PORT},
                                   name="virtualInbound-blackhole"))
    listener = xds.listener("virtualInbound", (ip, INBOUND_CAPTURE_PORT), chains, traffic_direction="INBOUND")
    if ports:
        listener["additional_addresses"] = [{"address": xds.socket_address(ip, p)} for p in ports]
    if inbound_tls is not None:   # security hook: tells TLS from plaintext (transport_protocol, ALPN)
        listener["listener_filters"] = [xds.tls_inspector()]
        listener["continue_on_listener_filters_timeout"] = True   # server-first TCP still connects
    return listener


def inbound_chain(port: int, service: Service, http: bool, stats: StatsFilter | None, extra: Json,
                  security: list[Json] | None = None) -> Json:
    cluster = f"inbound|{port}||"
    match = {"destination_port": port}
    if not http:
        return xds.filter_chain([tcp_proxy(cluster, cluster)], filter_chain_match=match, name=f"0.0.0.0_{port}")
    default = {"name": "default", "match": {"prefix": "/"},
               "decorator": {"operation": f"{service.hostname}:{port}/*"},
               "route": {"cluster": cluster, **route.no_timeout(), "retry_policy": dict(INBOUND_RETRY)}}
    routes = xds.route_config(cluster, [xds.virtual_host(f"inbound|http|{port}", ["*"], [default])])
    routes["validate_clusters"] = False
    hcm = {"@type": xds.HCM, "stat_prefix": f"inbound_0.0.0.0_{port}", "route_config": routes,
           **_hcm_common(), "use_remote_address": False, **extra,
           "http_filters": [*(security or []), *http_filters(stats, "destination")]}
    return xds.filter_chain([xds.network_filter(xds.HCM_NAME, hcm)], filter_chain_match=match, name=f"0.0.0.0_{port}")


def tcp_proxy(stat_prefix: str, cluster: str) -> Json:
    return xds.network_filter(TCP_PROXY_NAME, {"@type": TCP_PROXY, "stat_prefix": stat_prefix, "cluster": cluster})


# --- gateway ---------------------------------------------------------------------------------------

def gateway_listeners(mesh: Mesh, proxy: Proxy, xds_dir: str, stats: StatsFilter | None,
                      extra: Json, security: list[Json]) -> list[Json]:
    out = []
    for port in route.gateway_http_servers(mesh, proxy):
        name = f"0.0.0.0_{port}"
        # A gateway is the edge: it trusts the peer address it sees (use_remote_address), as Istio's do.
        hcm = rds_hcm(f"outbound_{name}", f"http.{port}", xds_dir,
                      [*copy.deepcopy(security), *http_filters(stats, "source")],
                      {"use_remote_address": True, **extra}, server_name="istio-envoy")
        out.append(xds.listener(name, (proxy.workload.ip, port),
                                [xds.filter_chain([xds.network_filter(xds.HCM_NAME, hcm)])],
                                traffic_direction="OUTBOUND"))
    return out
