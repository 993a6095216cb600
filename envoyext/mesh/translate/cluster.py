"""CDS + EDS for one proxy, as istiod builds them (reference §1, §4, §6; pilot's cluster.go,
cluster_builder.go, cluster_traffic_policy.go).

Per proxy: an outbound cluster `outbound|<port>||<fqdn>` for every port of every service it can see,
plus `outbound|<port>|<subset>|<fqdn>` per DestinationRule subset; `BlackHoleCluster`; and for
sidecars `PassthroughCluster`, `inbound|<targetPort>||` per port its services send to it, and
`InboundPassthroughCluster`. EDS clusters read their ClusterLoadAssignment from
`<xds_dir>/eds/<cluster name>.yaml` (one resource per file, as Envoy requires).

TLS is not built here: auto-mTLS and DestinationRule `tls` arrive with the security work through
the `upstream_tls` hook of `for_proxy`, which gets every outbound cluster with its context.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from envoyext.envoy import xds
from envoyext.errors import UserError
from envoyext.mesh.model import (
    CLUSTER_DOMAIN,
    ROOT_NAMESPACE,
    Endpoint,
    Json,
    Mesh,
    Proxy,
    Resource,
    Service,
    ServicePort,
    selects,
)
from envoyext.mesh.translate import scope

BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
MAX_UINT32 = 4294967295            # Istio's "no limit" circuit-breaker thresholds
DNS_REFRESH_RATE = "60s"           # MeshConfig dnsRefreshRate default
CLUSTER_ID = "Kubernetes"          # Istio's default cluster id, the last field of endpoint workload metadata
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP2_PROTOCOLS = ("HTTP2", "GRPC", "GRPC-WEB")
HTTP_PROTOCOLS = ("HTTP", *HTTP2_PROTOCOLS)


# ---- names and files -------------------------------------------------------------------------

def outbound_name(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def inbound_name(target_port: int) -> str:
    return f"inbound|{target_port}||"


def eds_dir(xds_dir: str) -> str:
    return posixpath.join(xds_dir, "eds")


def eds_file(xds_dir: str, cluster: str) -> str:
    """Where the delivery layer writes the ClusterLoadAssignment of EDS cluster `cluster`."""
    return posixpath.join(eds_dir(xds_dir), f"{cluster}.yaml")


# ---- the TLS hook ----------------------------------------------------------------------------

@dataclass(frozen=True)
class UpstreamContext:
    """What the security translation needs to give an outbound cluster its transport socket(s):
    `policy` is the merged trafficPolicy (its `tls` field included), `original_dst` says whether
    the cluster is ORIGINAL_DST (Istio never applies auto-mTLS to those)."""
    proxy: Proxy
    service: Service
    port: ServicePort
    subset: str
    policy: Json
    original_dst: bool


# Called with each outbound cluster (to add transport_socket / transport_socket_matches in place).
UpstreamTls = Callable[[Json, UpstreamContext], None]


# ---- which services, which DestinationRule ---------------------------------------------------

def _exported(export_to: tuple[str, ...] | list[str], owner_ns: str, viewer_ns: str) -> bool:
    """Istio exportTo: "*" everyone, "." the owner's namespace, "~" no one, else namespace names."""
    for ns in export_to or ("*",):
        if ns == "*" or ns == viewer_ns or (ns == "." and owner_ns == viewer_ns):
            return True
    return False


def visible_services(mesh: Mesh, proxy: Proxy) -> list[Service]:
    """The services a proxy gets clusters for: the ones in its sidecar scope (exported to its
    namespace, narrowed by a Sidecar's egress hosts, plus its VirtualServices' destinations)."""
    return scope.services_in_view(mesh, proxy)


def dr_host(dr: Resource) -> str:
    """The DR's host as an FQDN: a name without dots is short for `<name>.<dr ns>.svc.<domain>`;
    anything with a dot, and wildcards, are taken as written (Istio's ResolveShortnameToFQDN)."""
    host = str(dr.spec.get("host", ""))
    if host.startswith("*") or "." in host:
        return host
    return f"{host}.{dr.namespace}.svc.{CLUSTER_DOMAIN}"


def _host_specificity(pattern: str, hostname: str) -> tuple[int, int] | None:
    """How well `pattern` matches `hostname`: exact beats any wildcard, a longer wildcard beats a
    shorter one; None when it does not match."""
    if pattern == hostname:
        return (2, len(pattern))
    if pattern == "*" or (pattern.startswith("*.") and hostname.endswith(pattern[1:])):
        return (1, len(pattern))
    return None


def destination_rule(mesh: Mesh, proxy: Proxy, service: Service) -> Resource | None:
    """The DestinationRule that applies to `service` as seen from `proxy`, as istiod picks it:
    first the proxy's own namespace, then the service's namespace, then the root namespace; in
    each, the most specific host match (exact before wildcard), earliest loaded on a tie."""
    index: dict[tuple[str, str | None], list[tuple[int, Resource]]] = mesh.memo("destination rules by host",
                                                                                lambda: _rules_by_host(mesh))
    for ns in dict.fromkeys((proxy.namespace, service.namespace, ROOT_NAMESPACE)):
        best: tuple[tuple[int, int], int, Resource] | None = None
        # Only rules for this exact host, or with a wildcard host, can match (see _rules_by_host).
        for i, dr in index.get((ns, service.hostname), []) + index.get((ns, None), []):
            if not _exported(dr.spec.get("exportTo", ()), dr.namespace, proxy.namespace):
                continue
            selector = (dr.spec.get("workloadSelector") or {}).get("matchLabels")
            if selector is not None and (dr.namespace != proxy.namespace or not selects(selector, proxy.labels)):
                continue
            score = _host_specificity(dr_host(dr), service.hostname)
            if score is not None and (best is None or (score, -i) > (best[0], -best[1])):
                best = (score, i, dr)
        if best is not None:
            return best[2]
    return None


def _rules_by_host(mesh: Mesh) -> dict[tuple[str, str | None], list[tuple[int, Resource]]]:
    """DestinationRules by (namespace, host), in load order; wildcard hosts under (namespace, None)."""
    out: dict[tuple[str, str | None], list[tuple[int, Resource]]] = {}
    for i, dr in enumerate(mesh.destination_rules):
        host = dr_host(dr)
        out.setdefault((dr.namespace, None if "*" in host else host), []).append((i, dr))
    return out


# ---- trafficPolicy merging (Istio's MergeTrafficPolicy) --------------------------------------

_POLICY_FIELDS = ("connectionPool", "loadBalancer", "outlierDetection", "tls", "tunnel", "proxyProtocol")
_PORT_FIELDS = ("connectionPool", "loadBalancer", "outlierDetection", "tls")


def _merge(original: Json | None, override: Json | None, port: int) -> Json:
    """`override`'s fields over `original`'s; then `override`'s portLevelSettings for `port`, which
    replace connectionPool, loadBalancer, outlierDetection and tls wholesale (port-level settings
    do not inherit: an absent one falls back to Envoy's default)."""
    if override is None:
        return dict(original or {})
    merged = {k: v for k, v in (original or {}).items() if k in _POLICY_FIELDS}
    merged.update({k: v for k, v in override.items() if k in _POLICY_FIELDS})
    for pls in override.get("portLevelSettings") or ():
        if (pls.get("port") or {}).get("number") == port:
            for k in _PORT_FIELDS:
                merged.pop(k, None)
                if k in pls:
                    merged[k] = pls[k]
            break
    return merged


def traffic_policy(dr: Resource | None, subset: Json | None, port: int) -> Json:
    """The effective trafficPolicy for one cluster: top level with its port-level settings, then
    the subset's policy (and its port-level settings) over it."""
    top = _merge(None, (dr.spec.get("trafficPolicy") if dr else None), port)
    return _merge(top, subset.get("trafficPolicy") if subset else None, port)


# ---- durations -------------------------------------------------------------------------------

# Istio accepts Go durations ("3m", "1h30m", "250ms"); Envoy's JSON/YAML wants seconds ("180s").
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT = {"h": Decimal(3600), "m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001"),
         "us": Decimal("0.000001"), "µs": Decimal("0.000001"), "ns": Decimal("0.000000001")}
# The DestinationRule fields that hold durations (wherever they sit: top level, subset, port level).
_DURATION_KEYS = {"connectTimeout", "idleTimeout", "maxConnectionDuration", "interval", "baseEjectionTime",
                  "time", "timeout", "ttl", "duration"}


def _duration_seconds(value: Any) -> Decimal | None:
    text = str(value).strip()
    if not text or _DURATION_PART.sub("", text) != "":
        return None
    return sum((Decimal(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text)), Decimal(0))


def duration(value: Any) -> str:
    """An Istio duration as Envoy spells it: "3m" → "180s", "250ms" → "0.25s"."""
    seconds = _duration_seconds(value)
    if seconds is None:
        raise ValueError(f"not a duration: {value!r}")
    text = f"{seconds:f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "s"


def check_durations(dr: Resource) -> None:
    """Every duration in a DestinationRule parses, or one UserError naming the field."""
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in _DURATION_KEYS and not isinstance(v, (dict, list)) and _duration_seconds(v) is None:
                    raise UserError(f"DestinationRule {dr.namespace}/{dr.name}: not a duration: {v!r}",
                                    file=dr.file, field=f"{path}.{k}",
                                    fix='write a duration such as "30s", "1m", "1h30m" or "250ms"')
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
    walk(dr.spec, "spec")


# ---- policy → cluster fields -----------------------------------------------------------------

def _connection_pool(cluster: Json, policy: Json, protocol: str) -> None:
    """connectionPool → circuit_breakers (always present, Istio's defaults are "no limit"),
    connect_timeout, TCP keepalive, and HttpProtocolOptions for HTTP ports."""
    pool = policy.get("connectionPool") or {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    thresholds: Json = {"max_connections": MAX_UINT32, "max_pending_requests": MAX_UINT32,
                        "max_requests": MAX_UINT32, "max_retries": MAX_UINT32, "track_remaining": True}
    for envoy_field, value in (("max_connections", tcp.get("maxConnections")),
                               ("max_pending_requests", http.get("http1MaxPendingRequests")),
                               ("max_requests", http.get("http2MaxRequests")),
                               ("max_retries", http.get("maxRetries"))):
        if value is not None:
            thresholds[envoy_field] = int(value)
    cluster["circuit_breakers"] = {"thresholds": [thresholds]}
    if "connectTimeout" in tcp:
        cluster["connect_timeout"] = duration(tcp["connectTimeout"])
    keepalive = tcp.get("tcpKeepalive")
    if keepalive:
        cluster["upstream_connection_options"] = {"tcp_keepalive": {k: v for k, v in (
            ("keepalive_probes", keepalive.get("probes")),
            ("keepalive_time", _seconds(keepalive.get("time"))),
            ("keepalive_interval", _seconds(keepalive.get("interval")))) if v is not None}}
    if protocol not in HTTP_PROTOCOLS:
        return
    common: Json = {}
    idle = http.get("idleTimeout") or tcp.get("idleTimeout")   # tcp's only when http's is unset
    if idle:
        common["idle_timeout"] = duration(idle)
    if http.get("maxRequestsPerConnection"):
        common["max_requests_per_connection"] = int(http["maxRequestsPerConnection"])
    if tcp.get("maxConnectionDuration"):
        common["max_connection_duration"] = duration(tcp["maxConnectionDuration"])
    h2 = protocol in HTTP2_PROTOCOLS or http.get("h2UpgradePolicy") == "UPGRADE"
    if not common and not h2 and not http.get("useClientProtocol"):
        return   # nothing to say: Envoy's HTTP/1.1 defaults are Istio's
    options: Json = {"@type": xds.T + HTTP_PROTOCOL_OPTIONS}
    if common:
        options["common_http_protocol_options"] = common
    if http.get("useClientProtocol"):
        options["use_downstream_protocol_config"] = {"http_protocol_options": {}, "http2_protocol_options": {}}
    elif h2:
        h2_options: Json = {}
        if http.get("maxConcurrentStreams"):
            h2_options["max_concurrent_streams"] = int(http["maxConcurrentStreams"])
        options["explicit_http_config"] = {"http2_protocol_options": h2_options}
    else:
        options["explicit_http_config"] = {"http_protocol_options": {}}
    cluster["typed_extension_protocol_options"] = {HTTP_PROTOCOL_OPTIONS: options}


def _seconds(value: Any) -> int | None:
    """keepalive_time/interval are whole seconds in Envoy (at least 1); Istio's are durations."""
    seconds = None if value is None else _duration_seconds(value)
    return None if seconds is None else max(1, int(seconds))


def _load_balancer(cluster: Json, policy: Json) -> None:
    """loadBalancer.simple / consistentHash → lb_policy (+ ring/maglev config). PASSTHROUGH turns
    the cluster into ORIGINAL_DST. The hash keys themselves go on the route (route translation)."""
    lb = policy.get("loadBalancer") or {}
    simple = lb.get("simple")
    if simple == "PASSTHROUGH":
        _make_original_dst(cluster)
        return
    hashing = lb.get("consistentHash")
    if hashing is not None:
        if "maglev" in hashing:
            cluster["lb_policy"] = "MAGLEV"
            size = (hashing.get("maglev") or {}).get("tableSize")
            if size:
                cluster["maglev_lb_config"] = {"table_size": int(size)}
        else:
            ring = (hashing.get("ringHash") or {}).get("minimumRingSize") or hashing.get("minimumRingSize") or 1024
            cluster["lb_policy"] = "RING_HASH"
            cluster["ring_hash_lb_config"] = {"minimum_ring_size": int(ring)}
        return
    cluster["lb_policy"] = {"ROUND_ROBIN": "ROUND_ROBIN", "RANDOM": "RANDOM"}.get(simple or "", "LEAST_REQUEST")


def _outlier_detection(cluster: Json, policy: Json) -> None:
    od = policy.get("outlierDetection")
    if od is None:
        return
    out: Json = {"enforcing_success_rate": 0}
    for istio, count, enforcing in (("consecutive5xxErrors", "consecutive_5xx", "enforcing_consecutive_5xx"),
                                    ("consecutiveGatewayErrors", "consecutive_gateway_failure",
                                     "enforcing_consecutive_gateway_failure")):
        if istio in od:
            n = int(od[istio])
            out[count], out[enforcing] = n, (100 if n > 0 else 0)
    if od.get("consecutiveLocalOriginFailures"):
        out["consecutive_local_origin_failure"] = int(od["consecutiveLocalOriginFailures"])
        out["enforcing_consecutive_local_origin_failure"] = 100
    if od.get("splitExternalLocalOriginErrors"):
        out["split_external_local_origin_errors"] = True
        out["enforcing_local_origin_success_rate"] = 0
    for istio, envoy in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
        if od.get(istio):
            out[envoy] = duration(od[istio])
    if int(od.get("maxEjectionPercent") or 0) > 0:
        out["max_ejection_percent"] = int(od["maxEjectionPercent"])
    cluster["outlier_detection"] = out
    # minHealthPercent defaults to 0 in the proto, so Istio always sets the panic threshold.
    cluster.setdefault("common_lb_config", {})["healthy_panic_threshold"] = {
        "value": float(od.get("minHealthPercent") or 0)}


# ---- discovery types -------------------------------------------------------------------------

def _make_original_dst(cluster: Json) -> None:
    """ORIGINAL_DST with the destination taken from the `x-envoy-original-dst-host` header.

    In a pod, iptables redirects the app's connection and Envoy reads the address it was meant
    for (SO_ORIGINAL_DST). Locally nothing is redirected: the downstream's destination is the
    listener's own address, so using it would loop the request back into this Envoy. The header
    is the only source of the real destination here; without it the request cannot leave."""
    for key in ("eds_cluster_config", "load_assignment", "lb_policy", "ring_hash_lb_config", "maglev_lb_config"):
        cluster.pop(key, None)
    cluster["type"] = "ORIGINAL_DST"
    cluster["lb_policy"] = "CLUSTER_PROVIDED"
    cluster["original_dst_lb_config"] = {"use_http_header": True}


def _eds(name: str, xds_dir: str) -> Json:
    """EDS from the cluster's own file. No watched_directory: with one, every file moved into
    the directory reloads every cluster watching it (n² reads for n clusters per push); without,
    Envoy watches this one path for moves, which is what an atomic rename-over is. The file must
    exist before Envoy reads the cluster (delivery writes EDS before CDS)."""
    return {"service_name": name, "eds_config": {
        "path_config_source": {"path": eds_file(xds_dir, name)}, "resource_api_version": "V3"}}


# ---- endpoints -------------------------------------------------------------------------------

def _workload_metadata(mesh: Mesh, ep: Endpoint) -> Json:
    """Endpoint metadata as Istio writes it: `istio.workload` = `<workload>;<ns>;<canonical
    service>;<canonical revision>;<cluster id>` (the stats filter reads the peer from it) and, for
    pods that run an Istio proxy, `envoy.transport_socket_match.tlsMode: istio` (what auto-mTLS's
    transport_socket_matches select on)."""
    workload = next((w for w in mesh.workloads if w.pod == ep.workload), None)
    if workload is None:
        tls_mode = ep.labels.get("security.istio.io/tlsMode")
        return {"envoy.transport_socket_match": {"tlsMode": tls_mode}} if tls_mode else {}
    labels = workload.labels
    canonical = labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name") or workload.app
    revision = (labels.get("service.istio.io/canonical-revision") or labels.get("app.kubernetes.io/version")
                or labels.get("version") or "latest")
    tls_mode = labels.get("security.istio.io/tlsMode", "istio")
    return {"envoy.transport_socket_match": {"tlsMode": tls_mode},
            "istio": {"workload": f"{workload.deployment};{workload.namespace};{canonical};{revision};{CLUSTER_ID}"}}


def _lb_endpoints(mesh: Mesh, endpoints: list[Endpoint], port: ServicePort) -> list[Json]:
    out = []
    for ep in endpoints:
        entry: Json = {"endpoint": {"address": xds.socket_address(ep.address, ep.port or port.target_port)}}
        metadata = _workload_metadata(mesh, ep)
        if metadata:
            entry["metadata"] = {"filter_metadata": metadata}
        entry["load_balancing_weight"] = ep.weight or 1
        out.append(entry)
    return out


def _load_assignment(name: str, lb_endpoints: list[Json]) -> Json:
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else []}


# ---- clusters --------------------------------------------------------------------------------

def _config_path(dr: Resource) -> str:
    return f"/apis/{dr.api_version}/namespaces/{dr.namespace}/destination-rule/{dr.name}"


def _service_metadata(services: list[Service], port: int | None, dr: Resource | None, subset: str) -> Json:
    istio: Json = {"services": [{"host": s.hostname, "name": s.name, "namespace": s.namespace} for s in services]}
    if port is not None:
        istio["default_original_port"] = port
    if dr is not None:
        istio["config"] = _config_path(dr)
    if subset:
        istio["subset"] = subset
    return {"filter_metadata": {"istio": istio}}


def _outbound(mesh: Mesh, proxy: Proxy, service: Service, port: ServicePort, dr: Resource | None,
              subset: Json | None, xds_dir: str, upstream_tls: UpstreamTls | None) -> tuple[Json, Json | None]:
    """One outbound cluster (and its ClusterLoadAssignment when it is EDS)."""
    subset_name = str(subset["name"]) if subset else ""
    name = outbound_name(port.port, subset_name, service.hostname)
    policy = traffic_policy(dr, subset, port.port)
    endpoints = mesh.endpoints(service, port)
    if subset:
        endpoints = [e for e in endpoints if selects(subset.get("labels") or {}, e.labels)]
    lb_endpoints = _lb_endpoints(mesh, endpoints, port)

    cluster: Json = {"name": name}
    resolution = service.resolution if service.from_service_entry else "STATIC"
    if resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not service.static_endpoints:   # no endpoints: the hosts themselves are resolved
            lb_endpoints = [{"endpoint": {"address": xds.socket_address(service.hostname, port.target_port)},
                             "load_balancing_weight": 1}]
        cluster["type"] = "STRICT_DNS" if resolution == "DNS" else "LOGICAL_DNS"
        cluster["load_assignment"] = _load_assignment(name, lb_endpoints)
        cluster.update(respect_dns_ttl=True, dns_refresh_rate=DNS_REFRESH_RATE, dns_lookup_family="V4_ONLY")
    else:
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = _eds(name, xds_dir)
    cluster["connect_timeout"] = mesh.config.connect_timeout
    if resolution == "NONE":
        _make_original_dst(cluster)
    else:
        _load_balancer(cluster, policy)
    _connection_pool(cluster, policy, port.protocol)
    _outlier_detection(cluster, policy)
    # The server side sees the caller's pod IP, as it would in Kubernetes (not the loopback default).
    cluster["upstream_bind_config"] = {"source_address": {"address": proxy.workload.ip, "port_value": 0}}
    cluster["metadata"] = _service_metadata([service], port.port, dr, subset_name)
    original_dst = cluster["type"] == "ORIGINAL_DST"
    if upstream_tls is not None:
        upstream_tls(cluster, UpstreamContext(proxy, service, port, subset_name, policy, original_dst))
    assignment = _load_assignment(name, lb_endpoints) if cluster["type"] == "EDS" else None
    return cluster, assignment


def inbound_ports(mesh: Mesh, proxy: Proxy) -> dict[int, list[tuple[Service, ServicePort]]]:
    """Target port → the (service, port) pairs that send to it, for the services selecting this
    sidecar's pod (Istio builds one inbound cluster per target port; the first service wins)."""
    w = proxy.workload
    out: dict[int, list[tuple[Service, ServicePort]]] = {}
    if proxy.kind != "sidecar":
        return out
    for s in mesh.services:
        if not s.from_service_entry and s.namespace == w.namespace and s.selector and selects(s.selector, w.labels):
            for p in s.ports:
                out.setdefault(p.target_port, []).append((s, p))
    return out


def _inbound(mesh: Mesh, proxy: Proxy, target_port: int, pairs: list[tuple[Service, ServicePort]]) -> Json:
    """`inbound|<targetPort>||`: STATIC to the app address. Connection pool settings apply;
    load balancing, outlier detection and TLS are outbound-only (CTP applyTrafficPolicy)."""
    name = inbound_name(target_port)
    service, port = pairs[0]
    cluster = xds.static_cluster(name, [(proxy.workload.app_address, target_port)],
                                 connect_timeout=mesh.config.connect_timeout)
    dr = destination_rule(mesh, proxy, service)   # durations already checked by for_proxy
    _connection_pool(cluster, traffic_policy(dr, None, port.port), port.protocol)
    cluster["metadata"] = _service_metadata([s for s, _ in pairs], None, None, "")
    return cluster


def _passthrough(name: str, mesh: Mesh) -> Json:
    cluster: Json = {"name": name, "type": "ORIGINAL_DST", "connect_timeout": mesh.config.connect_timeout}
    _make_original_dst(cluster)
    _connection_pool(cluster, {}, "TCP")
    cluster["typed_extension_protocol_options"] = {HTTP_PROTOCOL_OPTIONS: {
        "@type": xds.T + HTTP_PROTOCOL_OPTIONS,
        "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}}
    return cluster


def for_proxy(mesh: Mesh, proxy: Proxy, xds_dir: str, *,
              upstream_tls: UpstreamTls | None = None) -> tuple[list[Json], list[Json]]:
    """(clusters, ClusterLoadAssignments) for one proxy, in Istio's order: outbound (each
    service's default cluster, then its subsets), BlackHoleCluster, then for sidecars
    PassthroughCluster, the inbound clusters and InboundPassthroughCluster. `xds_dir` is the
    absolute directory the proxy's xDS files live in (EDS paths are under it)."""
    clusters: list[Json] = []
    assignments: list[Json] = []
    for rule in mesh.destination_rules:
        check_durations(rule)
    for service in visible_services(mesh, proxy):
        dr = destination_rule(mesh, proxy, service)
        subsets: list[Json | None] = [None, *((dr.spec.get("subsets") or []) if dr else [])]
        for port in service.ports:
            for subset in subsets:
                cluster, assignment = _outbound(mesh, proxy, service, port, dr, subset, xds_dir, upstream_tls)
                clusters.append(cluster)
                if assignment is not None:
                    assignments.append(assignment)
    clusters.append({"name": BLACKHOLE, "type": "STATIC", "connect_timeout": mesh.config.connect_timeout,
                     "lb_policy": "ROUND_ROBIN"})
    if proxy.kind == "sidecar":
        clusters.append(_passthrough(PASSTHROUGH, mesh))
        clusters.extend(_inbound(mesh, proxy, tp, pairs) for tp, pairs in inbound_ports(mesh, proxy).items())
        clusters.append(_passthrough(INBOUND_PASSTHROUGH, mesh))
    return _dedupe(clusters, "name"), _dedupe(assignments, "cluster_name")


def _dedupe(resources: list[Json], key: str) -> list[Json]:
    """Two services claiming one name (a ServiceEntry for a Service's host): the first is kept,
    as Istio's normalizeClusters does."""
    seen: set[str] = set()
    out = []
    for r in resources:
        if r[key] not in seen:
            seen.add(r[key])
            out.append(r)
    return out
