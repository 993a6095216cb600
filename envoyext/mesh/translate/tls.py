"""mTLS and TLS as Istio translates them (reference §4.4, §5, §7, §13). Pure functions, no I/O.

- Inbound: each port's plaintext filter chain on `virtualInbound` becomes the chains its
  PeerAuthentication mode asks for (`inbound_chains`): STRICT = TLS only, PERMISSIVE = the mTLS
  chain (picked by ALPN) beside a plaintext one, DISABLE = plaintext only; the listener gets a
  `tls_inspector` so Envoy can tell them apart.
- Outbound: `upstream_tls` is the hook `cluster.for_proxy(..., upstream_tls=...)` calls per
  cluster: DestinationRule `tls` (ISTIO_MUTUAL, SIMPLE, MUTUAL, DISABLE), else auto-mTLS by
  `transport_socket_matches` on the endpoints' `tlsMode` metadata. `endpoint_tls_modes` marks
  the endpoints whose own port is DISABLE, as pilot's endpoint mTLS checker does.
- Gateways: TLS servers (SIMPLE, MUTUAL terminating; PASSTHROUGH by SNI to tcp_proxy).

Mesh certificates come from file-based SDS: `sds/default.yaml` (the workload's cert and key) and
`sds/ROOTCA.yaml` (the trust bundle), relative to the proxy's directory. The files referenced by
DestinationRules and Gateways (standing in for `credentialName`) are named, never read: no key
material is ever in a generated config.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Callable
from typing import Any

from envoyext.envoy import xds
from envoyext.errors import UserError
from envoyext.mesh.model import ROOT_NAMESPACE, Json, Mesh, Proxy, Resource, Service, ServicePort
from envoyext.mesh.translate import peer_authn
from envoyext.mesh.translate.cluster import UpstreamContext, UpstreamTls, destination_rule

TLS_SOCKET = xds.TLS_SOCKET
RAW_BUFFER = {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
    "@type": xds.T + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
SDS_DIR = "sds"
CERT_SECRET = "default"      # Istio's SDS names (reference §13)
ROOT_SECRET = "ROOTCA"
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}
# ALPN (pilot util constants): what a sidecar client offers, what the server's mTLS chain accepts.
ALPN_MESH = ["istio-peer-exchange", "istio"]
ALPN_MESH_H2 = [*ALPN_MESH, "h2"]
ALPN_MTLS_HTTP = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
ALPN_MTLS_TCP = ["istio-peer-exchange", "istio"]
ALPN_SERVER_HTTP = ["h2", "http/1.1"]
ALPN_SERVER_TCP = ["istio-peer-exchange", "h2", "http/1.1"]
HTTP2_PROTOCOLS = ("HTTP2", "GRPC", "GRPC-WEB")


# ---- names and secrets -------------------------------------------------------------------------

def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def sds_secret(name: str, sds_dir: str = SDS_DIR) -> Json:
    """An SdsSecretConfig read from `<sds_dir>/<name>.yaml` (a DiscoveryResponse holding one
    Secret). No watched_directory: the file is replaced by rename, which Envoy sees on the path
    itself, so a rotated certificate is picked up without a restart."""
    return {"name": name, "sds_config": {"path_config_source": {"path": f"{sds_dir}/{name}.yaml"},
                                         "resource_api_version": "V3"}}


def absolute_sds_paths(node: Any, proxy_dir: str) -> Any:
    """A config (any part of one) with its `sds/…` paths under `proxy_dir`: `envoy --mode
    validate` resolves them from its own working directory and refuses a path that is not there,
    while a running proxy reads them from its directory (its working directory). New objects."""
    if isinstance(node, dict):
        return {k: (posixpath.join(proxy_dir, v) if k == "path" and isinstance(v, str) and v.startswith(SDS_DIR + "/")
                    else absolute_sds_paths(v, proxy_dir)) for k, v in node.items()}
    if isinstance(node, list):
        return [absolute_sds_paths(v, proxy_dir) for v in node]
    return node


def sni(port: int, subset: str, host: str) -> str:
    """Istio's mTLS SNI (`BuildDNSSrvSubsetKey`): outbound_.<port>_.<subset>_.<host>."""
    return f"outbound_.{port}_.{subset}_.{host}"


def _uri_sans(names: list[str], *, prefix: bool = False) -> list[Json]:
    kind = "prefix" if prefix else "exact"
    return [{"san_type": "URI", "matcher": {kind: n}} for n in names]


def _named_sans(names: list[str]) -> list[Json]:
    """DestinationRule/Gateway subjectAltNames: a URI (spiffe://…) is matched as a URI SAN,
    anything else as a DNS SAN."""
    return [{"san_type": "URI" if "://" in n else "DNS", "matcher": {"exact": n}} for n in names]


def _mesh_common(alpn: list[str], sans: list[Json]) -> Json:
    """The common context of every sidecar mTLS side: SDS cert `default`, SDS roots `ROOTCA`
    with the peer's SAN checked, TLS 1.2–1.3."""
    # Envoy requires default_validation_context in a combined one, even with no SAN to check.
    validation: Json = {"validation_context_sds_secret_config": sds_secret(ROOT_SECRET),
                        "default_validation_context": {"match_typed_subject_alt_names": sans} if sans else {}}
    return {"tls_params": dict(TLS_PARAMS), "alpn_protocols": list(alpn),
            "tls_certificate_sds_secret_configs": [sds_secret(CERT_SECRET)],
            "combined_validation_context": validation}


# ---- inbound -----------------------------------------------------------------------------------

def downstream_mtls(trust_domain: str, http: bool) -> Json:
    """The inbound DownstreamTlsContext (AU `BuildInboundTLS`): client cert required, any peer of
    the trust domain (SAN prefix spiffe://<td>/); authorization narrows it further."""
    common = _mesh_common(ALPN_SERVER_HTTP if http else ALPN_SERVER_TCP,
                          _uri_sans([f"spiffe://{trust_domain}/"], prefix=True))
    return xds.transport_socket(TLS_SOCKET, {"@type": xds.DOWNSTREAM_TLS, "common_tls_context": common,
                                             "require_client_certificate": True})


def _with_match(chain: Json, extra_match: Json, socket: Json | None) -> Json:
    out = copy.deepcopy(chain)
    out["filter_chain_match"] = {**out.get("filter_chain_match", {}), **extra_match}
    if socket is not None:
        out["transport_socket"] = socket
    return out


# The inbound HCM tells the app who called (LIN `buildSidecarInboundHTTPOpts`): the peer's
# certificate subject, URI and DNS SANs appended to x-forwarded-client-cert.
XFCC = {"forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True}}


def _with_xfcc(chain: Json) -> Json:
    out = copy.deepcopy(chain)
    for f in out.get("filters", []):
        if f.get("name") == xds.HCM_NAME:
            f["typed_config"].update(copy.deepcopy(XFCC))
    return out


def inbound_chains(mode: peer_authn.Mode, chain: Json, trust_domain: str, http: bool) -> list[Json]:
    """One port's plaintext chain (`filter_chain_match.destination_port` set) as the chains its
    mode needs (FCO: strict / permissive / plaintext match options)."""
    mtls = downstream_mtls(trust_domain, http)
    chain = _with_xfcc(chain) if http else chain
    if mode == "STRICT":
        return [_with_match(chain, {"transport_protocol": "tls"}, mtls)]
    plain = _with_match(chain, {"transport_protocol": "raw_buffer"}, None)
    if mode == "DISABLE":
        return [plain]
    alpn = ALPN_MTLS_HTTP if http else ALPN_MTLS_TCP
    chains = [_with_match(chain, {"transport_protocol": "tls", "application_protocols": alpn}, mtls), plain]
    if not http:
        # TLS that is not Istio's (no mesh ALPN) passes through to the app untouched.
        chains.append(_with_match(chain, {"transport_protocol": "tls"}, None))
    return chains


InboundTls = Callable[[Proxy, int, Json, bool], list[Json]]


def inbound_tls(mesh: Mesh) -> InboundTls:
    """The hook `listener.for_proxy(..., inbound_tls=...)` calls with each inbound port's chain."""
    def hook(proxy: Proxy, target_port: int, chain: Json, http: bool) -> list[Json]:
        mode = peer_authn.effective(mesh, proxy).for_port(target_port)
        return inbound_chains(mode, chain, mesh.config.trust_domain, http)
    return hook


# ---- outbound ----------------------------------------------------------------------------------

def service_accounts(mesh: Mesh, service: Service, port: ServicePort) -> list[str]:
    """The SPIFFE IDs of the workloads behind a service port (pilot `ServiceAccounts[host][port]`)."""
    ids = {spiffe_id(mesh.config.trust_domain, service.namespace, e.service_account)
           for e in mesh.endpoints(service, port) if e.service_account}
    return sorted(ids)


def istio_mutual(sni_name: str, sans: list[str], h2: bool) -> Json:
    """UpstreamTlsContext for ISTIO_MUTUAL (CTLS `buildIstioMutualTLS`)."""
    common = _mesh_common(ALPN_MESH_H2 if h2 else ALPN_MESH, _uri_sans(sans))
    return xds.transport_socket(TLS_SOCKET, {"@type": xds.UPSTREAM_TLS, "common_tls_context": common,
                                             "sni": sni_name})


def _dr_field(mesh: Mesh, proxy: Proxy, service: Service) -> tuple[str, str]:
    dr = destination_rule(mesh, proxy, service)
    return (dr.file if dr else "DestinationRule"), (f"DestinationRule {dr.namespace}/{dr.name}" if dr else "")


def simple_or_mutual(tls: Json, default_sni: str, h2: bool, where: tuple[str, str]) -> Json:
    """UpstreamTlsContext for SIMPLE and MUTUAL with certificates from files (CTLS
    `buildUpstreamTLSContext`): the CA and SANs verify the server, MUTUAL adds our certificate."""
    file, name = where
    mode = tls["mode"]
    if tls.get("credentialName"):
        raise UserError(f"{name}: credentialName needs a Kubernetes secret store", file=file,
                        field="spec.trafficPolicy.tls.credentialName",
                        fix="name the files instead: caCertificates, clientCertificate, privateKey")
    common: Json = {}
    if h2:
        common["alpn_protocols"] = ["h2"]
    if mode == "MUTUAL":
        missing = [f for f in ("clientCertificate", "privateKey") if not tls.get(f)]
        if missing:
            raise UserError(f"{name}: tls mode MUTUAL without {missing[0]}", file=file,
                            field=f"spec.trafficPolicy.tls.{missing[0]}",
                            fix="give both clientCertificate and privateKey (PEM file paths)")
        common["tls_certificates"] = [{"certificate_chain": {"filename": tls["clientCertificate"]},
                                       "private_key": {"filename": tls["privateKey"]}}]
    if not tls.get("insecureSkipVerify") and (tls.get("caCertificates") or tls.get("subjectAltNames")):
        validation: Json = {}
        if tls.get("caCertificates"):
            validation["trusted_ca"] = {"filename": tls["caCertificates"]}
        if tls.get("subjectAltNames"):
            validation["match_typed_subject_alt_names"] = _named_sans(list(tls["subjectAltNames"]))
        common["validation_context"] = validation
    return xds.transport_socket(TLS_SOCKET, {"@type": xds.UPSTREAM_TLS, "common_tls_context": common,
                                             "sni": tls.get("sni") or default_sni})


def service_mtls_mode(mesh: Mesh, service: Service) -> str:
    """pilot `BestEffortInferServiceMTLSMode`: only namespace and mesh policies count (a workload's
    own exceptions are found per endpoint, see endpoint_tls_modes)."""
    if service.mesh_external:
        return "UNKNOWN"
    return _namespace_mode(mesh, service.namespace)


def _namespace_mode(mesh: Mesh, namespace: str) -> str:
    mode: str = peer_authn.DEFAULT_MODE
    for ns in (ROOT_NAMESPACE, namespace):
        pa = next((p for p in mesh.peer_authentications if p.namespace == ns and p.spec.get("selector") is None), None)
        m = str(((pa.spec.get("mtls") or {}).get("mode") if pa else None) or "UNSET").upper()
        if m != "UNSET":
            mode = m
    return mode


def apply_upstream(mesh: Mesh, cluster: Json, ctx: UpstreamContext) -> None:
    """Give one outbound cluster its TLS (in place), from its DestinationRule or by auto-mTLS."""
    h2 = ctx.port.protocol.upper() in HTTP2_PROTOCOLS
    tls = ctx.policy.get("tls") or {}
    mode = str(tls.get("mode") or "")
    default_sni = sni(ctx.port.port, ctx.subset, ctx.service.hostname)
    if mode == "DISABLE":
        return
    if mode == "ISTIO_MUTUAL":
        sans = list(tls.get("subjectAltNames") or service_accounts(mesh, ctx.service, ctx.port))
        cluster["transport_socket"] = istio_mutual(tls.get("sni") or default_sni, sans, h2)
        return
    if mode in ("SIMPLE", "MUTUAL"):
        cluster["transport_socket"] = simple_or_mutual(tls, ctx.service.hostname, h2,
                                                       _dr_field(mesh, ctx.proxy, ctx.service))
        return
    if (not mesh.config.enable_auto_mtls or ctx.service.mesh_external or ctx.original_dst
            or service_mtls_mode(mesh, ctx.service) == "DISABLE"):
        return
    mtls = istio_mutual(default_sni, service_accounts(mesh, ctx.service, ctx.port), h2)
    cluster["transport_socket_matches"] = [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": mtls},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": copy.deepcopy(RAW_BUFFER)}]


def upstream_tls(mesh: Mesh) -> UpstreamTls:
    """The hook for `cluster.for_proxy(mesh, proxy, xds_dir, upstream_tls=tls.upstream_tls(mesh))`."""
    def hook(cluster: Json, ctx: UpstreamContext) -> None:
        apply_upstream(mesh, cluster, ctx)
    return hook


def endpoint_tls_modes(mesh: Mesh, resources: list[Json]) -> list[Json]:
    """Clusters (inline `load_assignment`) or ClusterLoadAssignments with each mesh endpoint that
    must be spoken to in plaintext marked `tlsMode: disabled`, so auto-mTLS does: a sidecar whose
    own PeerAuthentication is DISABLE on that port (pilot's endpoint mTLS checker), and a gateway
    pod (Istio's gateway injection template sets no `security.istio.io/tlsMode` label, and an
    endpoint without it is `disabled`). New dicts; the input is not changed."""
    by_ip = {p.workload.ip: p for p in mesh.proxies}
    out = copy.deepcopy(resources)
    for res in out:
        assignment = res.get("load_assignment", res) if "name" in res else res
        for locality in assignment.get("endpoints") or []:
            for lb in locality.get("lb_endpoints") or []:
                addr = lb["endpoint"]["address"]["socket_address"]
                proxy = by_ip.get(addr["address"])
                if proxy is None:
                    continue
                if proxy.kind == "router":
                    plaintext = proxy.labels.get("security.istio.io/tlsMode", "disabled") != "istio"
                else:
                    plaintext = peer_authn.effective(mesh, proxy).for_port(int(addr["port_value"])) == "DISABLE"
                if plaintext:
                    meta = lb.setdefault("metadata", {}).setdefault("filter_metadata", {})
                    meta.setdefault("envoy.transport_socket_match", {})["tlsMode"] = "disabled"
    return out


# ---- gateways ----------------------------------------------------------------------------------

TLS_SERVER_MODES = ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "PASSTHROUGH")
_MIN_VERSION = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3"}


def gateway_tls_servers(mesh: Mesh, proxy: Proxy) -> dict[int, list[tuple[Resource, int, Json]]]:
    """TLS servers (HTTPS / TLS protocol with a `tls` block) of the Gateways selecting this proxy,
    by listen port, each with its index in `spec.servers` (for errors)."""
    from envoyext.mesh.translate import route, scope
    out: dict[int, list[tuple[Resource, int, Json]]] = {}
    for gw in scope.gateways_for(mesh, proxy):
        for i, server in enumerate(gw.spec.get("servers", [])):
            port = server.get("port", {})
            mode = str((server.get("tls") or {}).get("mode") or "")
            if str(port.get("protocol", "")).upper() in ("HTTPS", "TLS") and mode in TLS_SERVER_MODES:
                out.setdefault(route.listen_port(mesh, proxy, int(port["number"])), []).append((gw, i, server))
    return dict(sorted(out.items()))


def https_route_name(gw: Resource, server: Json) -> str:
    """MGW `gatewayRDSRouteName` for a terminated HTTPS server: https.<port>.<portName>.<gw>.<ns>."""
    port = server["port"]
    return f"https.{port['number']}.{port.get('name', '')}.{gw.name}.{gw.namespace}"


def server_names(server: Json) -> list[str]:
    """MGW `GetSNIHostsForServer`: the hosts with their `ns/` part dropped; `*` means any (no SNI match)."""
    hosts = [h.rpartition("/")[2] for h in server.get("hosts", [])]
    return [] if "*" in hosts else list(dict.fromkeys(hosts))


def downstream_server_tls(mesh: Mesh, gw: Resource, index: int, server: Json) -> Json:
    """DownstreamTlsContext of a terminating server (LST `BuildListenerTLSContext`), certificates
    from the files that stand in for `credentialName`."""
    tls = server["tls"]
    mode = tls["mode"]
    where = f"spec.servers[{index}].tls"
    name = f"Gateway {gw.namespace}/{gw.name}"
    common: Json = {"alpn_protocols": list(ALPN_SERVER_HTTP)}
    if tls.get("minProtocolVersion") or tls.get("maxProtocolVersion"):
        common["tls_params"] = {k: _MIN_VERSION[str(tls[f]).upper()] for k, f in (
            ("tls_minimum_protocol_version", "minProtocolVersion"),
            ("tls_maximum_protocol_version", "maxProtocolVersion")) if tls.get(f)}
    if tls.get("cipherSuites"):
        common.setdefault("tls_params", {})["cipher_suites"] = list(tls["cipherSuites"])
    if mode == "ISTIO_MUTUAL":
        common.update(_mesh_common(ALPN_SERVER_HTTP, _named_sans(list(tls.get("subjectAltNames") or []))))
    else:
        for f in ("serverCertificate", "privateKey", *(("caCertificates",) if mode == "MUTUAL" else ())):
            if not tls.get(f):
                fix = "name PEM files: serverCertificate, privateKey (and caCertificates for MUTUAL)"
                why = ("credentialName needs a Kubernetes secret store" if tls.get("credentialName")
                       else f"tls mode {mode} without {f}")
                raise UserError(f"{name}: {why}", file=gw.file, field=f"{where}.{f}", fix=fix)
        common["tls_certificates"] = [{"certificate_chain": {"filename": tls["serverCertificate"]},
                                       "private_key": {"filename": tls["privateKey"]}}]
        if mode == "MUTUAL":
            validation: Json = {"trusted_ca": {"filename": tls["caCertificates"]}}
            if tls.get("subjectAltNames"):
                validation["match_typed_subject_alt_names"] = _named_sans(list(tls["subjectAltNames"]))
            common["validation_context"] = validation
    context: Json = {"@type": xds.DOWNSTREAM_TLS, "common_tls_context": common}
    if mode in ("MUTUAL", "ISTIO_MUTUAL"):
        context["require_client_certificate"] = True
    return xds.transport_socket(TLS_SOCKET, context)


def _passthrough_chains(mesh: Mesh, proxy: Proxy, gw: Resource, server: Json) -> list[Json]:
    """One chain per VirtualService `tls` rule bound to this gateway: its sniHosts → tcp_proxy to
    the rule's first destination (GW `buildGatewayNetworkFiltersFromTLSRoutes`)."""
    from envoyext.mesh.translate import route, scope
    from envoyext.mesh.translate.listener import tcp_proxy
    number = int(server["port"]["number"])
    ctx = route.Context(mesh, proxy, number, gateway=gw)
    chains = []
    for vs in mesh.virtual_services:
        if not scope.binds_to_gateway(vs, gw):
            continue
        for rule in vs.spec.get("tls") or []:
            for match in rule.get("match") or []:
                if match.get("port") not in (None, number) or not rule.get("route"):
                    continue
                cluster = route.destination_cluster(ctx, vs, rule["route"][0]["destination"])
                chains.append(xds.filter_chain([tcp_proxy(cluster, cluster)],
                                               filter_chain_match={"server_names": list(match["sniHosts"])}))
    return chains


def gateway_listeners(mesh: Mesh, proxy: Proxy, xds_dir: str, filters: list[Json], extra: Json) -> list[Json]:
    """A listener `0.0.0.0_<port>` per TLS server port: terminating servers as an HCM over RDS
    `https.…` behind their DownstreamTlsContext, PASSTHROUGH servers as SNI chains to tcp_proxy."""
    from envoyext.mesh.translate.listener import rds_hcm
    out = []
    for listen, servers in gateway_tls_servers(mesh, proxy).items():
        chains: list[Json] = []
        for gw, index, server in servers:
            if server["tls"]["mode"] == "PASSTHROUGH":
                chains += _passthrough_chains(mesh, proxy, gw, server)
                continue
            name = f"0.0.0.0_{listen}"
            hcm = rds_hcm(f"outbound_{name}", https_route_name(gw, server), xds_dir, copy.deepcopy(filters),
                          {"use_remote_address": True, **extra}, server_name="istio-envoy")
            match = {"server_names": server_names(server)} if server_names(server) else None
            chains.append(xds.filter_chain([xds.network_filter(xds.HCM_NAME, hcm)], filter_chain_match=match,
                                           transport_socket=downstream_server_tls(mesh, gw, index, server)))
        if chains:
            out.append(xds.listener(f"0.0.0.0_{listen}", (proxy.workload.ip, listen), chains,
                                    traffic_direction="OUTBOUND", listener_filters=[xds.tls_inspector()]))
    return out


def gateway_routes(mesh: Mesh, proxy: Proxy) -> list[Json]:
    """The RouteConfiguration `https.<port>.<portName>.<gw>.<ns>` of each terminating server: the
    VirtualServices bound to the gateway whose hosts the server admits (as `http.<port>`)."""
    from envoyext.mesh.translate import route, scope
    configs = []
    for servers in gateway_tls_servers(mesh, proxy).values():
        for gw, _, server in servers:
            if server["tls"]["mode"] == "PASSTHROUGH":
                continue
            port = int(server["port"]["number"])
            ctx = route.Context(mesh, proxy, port, gateway=gw)
            hosts: dict[str, Json] = {}
            for vs in mesh.virtual_services:
                if scope.binds_to_gateway(vs, gw):
                    for host in route._server_hosts_for(vs, gw, server):
                        vh = hosts.setdefault(host, xds.virtual_host(f"{host}:{port}",
                                                                     route.gateway_domains(host, port), []))
                        vh["routes"] += route.vs_routes(ctx, vs)
            if not hosts:
                hosts["blackhole"] = xds.virtual_host(f"blackhole:{port}", ["*"], [
                    {"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}])
            configs.append(route.route_configuration(https_route_name(gw, server), list(hosts.values())))
    return configs
