"""Resources to a `Mesh`: the mesh config, services, workloads (one per Deployment replica) and
proxies (a sidecar per workload, gateways per install profile), with loopback addresses.

Addresses are handed out by a stable index, so the same resources always give the same mesh:
workloads sorted by (namespace, deployment, replica), Kubernetes services by (namespace, name).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from envoyext.errors import UserError
from envoyext.mesh import pki
from envoyext.mesh import resources as resources_mod
from envoyext.mesh.crd import go_duration
from envoyext.mesh.model import (
    CLUSTER_DOMAIN,
    ROOT_NAMESPACE,
    AddressPlan,
    Endpoint,
    Json,
    Mesh,
    MeshConfig,
    Profile,
    Proxy,
    Resource,
    Service,
    ServicePort,
    Workload,
    selects,
)

# Istio's protocol names (pkg/config/protocol Parse), keyed by the lower-case port-name prefix.
_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "grpc": "GRPC", "grpc-web": "GRPC-Web", "http": "HTTP",
              "http_proxy": "HTTP_PROXY", "http2": "HTTP2", "https": "HTTPS", "tls": "TLS",
              "mongo": "Mongo", "redis": "Redis", "mysql": "MySQL"}
# Kubernetes' standard appProtocol values (pkg/config/kube ConvertProtocol).
_APP_PROTOCOLS = {"kubernetes.io/h2c": "HTTP2", "kubernetes.io/ws": "HTTP", "kubernetes.io/wss": "HTTPS"}
# Ports Istio never sniffs: an unnamed port here is TCP (SMTP, DNS, MySQL, MongoDB).
_WELL_KNOWN_TCP = {25, 53, 3306, 27017}


def protocol(port: int, name: str, app_protocol: str | None = None, k8s_protocol: str = "TCP") -> str:
    """Istio's protocol for a Kubernetes Service port: UDP as declared; else appProtocol, else the
    port name's prefix before '-' (`http-web` is HTTP, `grpc-web...` GRPC-Web). An unrecognised
    name is "auto-detect" in Istio (sniffed per connection); this local model has no sniffing and
    treats it as HTTP, except on the well-known TCP ports, as Istio does."""
    if k8s_protocol == "UDP":
        return "UDP"
    text = name
    if app_protocol:
        if app_protocol in _APP_PROTOCOLS:
            return _APP_PROTOCOLS[app_protocol]
        text = app_protocol
    if text.lower().startswith("grpc-web"):
        return "GRPC-Web"
    found = _PROTOCOLS.get(text.split("-", 1)[0].lower())
    if found and found != "UDP":
        return found
    return "TCP" if port in _WELL_KNOWN_TCP else "HTTP"


def load_mesh(paths: Sequence[Path | str], plan: AddressPlan | None = None) -> Mesh:
    return mesh(resources_mod.load(paths), plan or AddressPlan())


def mesh(resources: Iterable[Resource], plan: AddressPlan | None = None) -> Mesh:
    plan = plan or AddressPlan()
    resources = list(resources)
    config = mesh_config(resources)
    # The profile's gateways, unless the resources define their own Deployment/Service of that
    # name (a customised gateway, as with istioctl's overlays): theirs wins, still a gateway.
    given = {r.key for r in resources}
    gateways = {d.key for d in _gateway_deployments(config)}
    deployments = [r for r in resources if r.kind == "Deployment"] + [
        d for d in _gateway_deployments(config) if d.key not in given]
    workloads = _workloads(deployments, plan, gateways)
    k8s_services = sorted([r for r in resources if r.kind == "Service"] + [
        s for s in _gateway_services(config) if s.key not in given], key=lambda r: (r.namespace, r.name))
    services = [_service(r, plan.vip(i), deployments) for i, r in enumerate(k8s_services)]
    for r in resources:
        if r.kind == "ServiceEntry":
            services.extend(_entry_services(r, workloads))
    proxies = [Proxy("router" if w.gateway else "sidecar", w) for w in workloads]
    by_kind: dict[str, list[Resource]] = {}
    for r in resources:
        by_kind.setdefault(r.kind, []).append(r)
    return Mesh(config, services, workloads, proxies,
                gateways=by_kind.get("Gateway", []), virtual_services=by_kind.get("VirtualService", []),
                destination_rules=by_kind.get("DestinationRule", []),
                service_entries=by_kind.get("ServiceEntry", []), sidecars=by_kind.get("Sidecar", []),
                envoy_filters=by_kind.get("EnvoyFilter", []), wasm_plugins=by_kind.get("WasmPlugin", []),
                peer_authentications=by_kind.get("PeerAuthentication", []),
                request_authentications=by_kind.get("RequestAuthentication", []),
                authorization_policies=by_kind.get("AuthorizationPolicy", []), plan=plan)


def mesh_config(resources: Iterable[Resource]) -> MeshConfig:
    """From the IstioOperator (at most one), else Istio's defaults. The profile sets defaults
    (demo: access log to /dev/stdout, 100% tracing) that explicit meshConfig values override."""
    operators = [r for r in resources if r.kind == "IstioOperator"]
    if not operators:
        return MeshConfig()
    if len(operators) > 1:
        second = operators[1]
        raise UserError(f"a second IstioOperator ({second.namespace}/{second.name}; the first is "
                        f"{operators[0].file} document {operators[0].index}) (document {second.index})",
                        file=second.file, field="kind", fix="keep one IstioOperator: there is one mesh config")
    spec = operators[0].spec
    profile = cast(Profile, spec.get("profile", "default"))
    mc: Json = spec.get("meshConfig") or {}
    sampling = (((mc.get("defaultConfig") or {}).get("tracing") or {}).get("sampling"))
    demo = profile == "demo"
    return MeshConfig(
        profile=profile,
        trust_domain=mc.get("trustDomain", MeshConfig.trust_domain),
        outbound_traffic_policy=(mc.get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY"),
        tracing_sampling=float(sampling) if sampling is not None else (100.0 if demo else 1.0),
        access_log_file=mc.get("accessLogFile", "/dev/stdout" if demo else ""),
        enable_auto_mtls=mc.get("enableAutoMtls", True),
        connect_timeout=mc.get("connectTimeout", MeshConfig.connect_timeout),
        extension_providers=tuple(mc.get("extensionProviders") or ()),
        trust_domain_aliases=tuple(mc.get("trustDomainAliases") or ()),
        workload_cert_ttl=_secret_ttl(operators[0], mc))


def _secret_ttl(operator: Resource, mc: Json) -> dt.timedelta:
    """meshConfig.defaultConfig.proxyMetadata.SECRET_TTL (a Go duration, as the agent reads it)."""
    field = "spec.meshConfig.defaultConfig.proxyMetadata.SECRET_TTL"
    text = ((mc.get("defaultConfig") or {}).get("proxyMetadata") or {}).get("SECRET_TTL")
    if text is None:
        return MeshConfig.workload_cert_ttl
    try:
        seconds = go_duration(str(text))
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= pki.MAX_WORKLOAD_TTL.total_seconds():
        raise UserError(f"SECRET_TTL {text!r} is not a lifetime from 1s to {pki.MAX_WORKLOAD_TTL.days} days",
                        file=operator.file, field=field, fix="write a Go duration such as 24h or 60s")
    return dt.timedelta(seconds=seconds)


# --- gateways the install profile adds (as the istio-ingressgateway/egressgateway charts do) -------

def _gateway(name: str, istio: str, ports: list[Json], replicas: int = 1) -> tuple[Resource, Resource]:
    labels = {"app": name, "istio": istio}
    meta = {"name": name, "namespace": ROOT_NAMESPACE, "labels": labels}
    deployment = Resource("Deployment", "apps/v1", name, ROOT_NAMESPACE, meta, {
        "replicas": replicas, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {
            "serviceAccountName": f"{name}-service-account",
            "containers": [{"name": "istio-proxy", "ports": [
                {"containerPort": p["targetPort"]} for p in ports] + [{"containerPort": 15090}]}]}}},
        "<profile>", 0)
    service = Resource("Service", "v1", name, ROOT_NAMESPACE, meta,
                       {"selector": labels, "ports": ports}, "<profile>", 0)
    return deployment, service


def _profile_gateways(config: MeshConfig) -> list[tuple[Resource, Resource]]:
    out = []
    if config.has_ingress_gateway:
        out.append(_gateway("istio-ingressgateway", "ingressgateway", [
            {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
            {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]))
    if config.has_egress_gateway:
        out.append(_gateway("istio-egressgateway", "egressgateway", [
            {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]))
    return out


def _gateway_deployments(config: MeshConfig) -> list[Resource]:
    return [d for d, _ in _profile_gateways(config)]


def _gateway_services(config: MeshConfig) -> list[Resource]:
    return [s for _, s in _profile_gateways(config)]


# --- workloads -------------------------------------------------------------------------------------

def _workloads(deployments: list[Resource], plan: AddressPlan, gateways: set[str]) -> list[Workload]:
    pods: list[tuple[str, str, int, Resource]] = []
    for d in deployments:
        for i in range(int(d.spec.get("replicas", 1))):
            pods.append((d.namespace, d.name, i, d))
    pods.sort(key=lambda p: (p[0], p[1], p[2]))
    out = []
    for index, (ns, name, i, d) in enumerate(pods):
        template = d.spec["template"]
        pod_spec = template["spec"]
        ports = tuple(p["containerPort"] for c in pod_spec["containers"] for p in c.get("ports") or [])
        out.append(Workload(
            pod=f"{name}-{i}", deployment=name, namespace=ns,
            labels=dict(template["metadata"].get("labels") or {}),
            service_account=pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default",
            container_ports=ports, ip=plan.pod_ip(index), app_address=plan.app_address(index),
            capture_address=plan.capture_address(index), gateway=d.key in gateways))
    return out


# --- services --------------------------------------------------------------------------------------

def _service(r: Resource, vip: str, deployments: list[Resource]) -> Service:
    selector: dict[str, str] = dict(r.spec.get("selector") or {})
    ports = []
    for i, p in enumerate(r.spec["ports"]):
        name = p.get("name", "")
        target = p.get("targetPort", p["port"])
        if isinstance(target, str):
            target = _named_port(r, i, target, selector, deployments)
        ports.append(ServicePort(name, p["port"], target,
                                 protocol(p["port"], name, p.get("appProtocol"), p.get("protocol", "TCP"))))
    return Service(hostname=f"{r.name}.{r.namespace}.svc.{CLUSTER_DOMAIN}", name=r.name, namespace=r.namespace,
                   ports=tuple(ports), selector=selector, vip=vip,
                   export_to=_export_to(r.metadata))


def _named_port(r: Resource, i: int, name: str, selector: dict[str, str], deployments: list[Resource]) -> int:
    """A named targetPort: the containerPort with that name in the pods the Service selects."""
    for d in deployments:
        template = d.spec["template"]
        if d.namespace == r.namespace and selector and selects(selector, template["metadata"].get("labels") or {}):
            for c in template["spec"]["containers"]:
                for p in c.get("ports") or []:
                    if p.get("name") == name:
                        return int(p["containerPort"])
    raise UserError(f"targetPort {name!r} names no container port of the pods this Service selects "
                    f"(document {r.index}, Service {r.name})", file=r.file, field=f"spec.ports[{i}].targetPort",
                    fix="give the port number, or name a containerPort of the selected Deployment")


def _export_to(meta: Json) -> tuple[str, ...]:
    value = (meta.get("annotations") or {}).get("networking.istio.io/exportTo")
    return tuple(v.strip() for v in value.split(",")) if value else ("*",)


def _entry_services(r: Resource, workloads: list[Workload]) -> list[Service]:
    """One Service per host of a ServiceEntry (Istio's convertServices)."""
    spec = r.spec
    ports = tuple(ServicePort(p.get("name", ""), p["number"], p.get("targetPort", p["number"]),
                              _entry_protocol(p)) for p in spec.get("ports") or [])
    selector = dict((spec.get("workloadSelector") or {}).get("labels") or {})
    endpoints: list[Endpoint] = []
    for e in spec.get("endpoints") or []:
        named: dict[str, int] = e.get("ports") or {}
        # One Endpoint per address, at the port of the entry's first port (an endpoint's `ports`
        # maps port names to its own numbers).
        first = ports[0] if ports else None
        port = named.get(first.name, first.target_port) if first else 0
        endpoints.append(Endpoint(e.get("address", ""), port, dict(e.get("labels") or {}),
                                  service_account=e.get("serviceAccount"), weight=e.get("weight")))
    if selector and ports:
        endpoints.extend(Endpoint(w.ip, ports[0].target_port, dict(w.labels), w.pod, w.service_account)
                         for w in workloads if w.namespace == r.namespace and selects(selector, w.labels))
    addresses = spec.get("addresses") or []
    export_to = tuple(spec.get("exportTo") or ()) or _export_to(r.metadata)
    return [Service(hostname=host, name=host, namespace=r.namespace, ports=ports, selector=selector,
                    vip=addresses[0] if addresses else None, from_service_entry=True,
                    mesh_external=spec.get("location", "MESH_EXTERNAL") == "MESH_EXTERNAL",
                    resolution=spec.get("resolution", "NONE"), static_endpoints=tuple(endpoints),
                    export_to=export_to)
            for host in spec["hosts"]]


def _entry_protocol(p: Json) -> str:
    declared: Any = p.get("protocol")
    if declared:
        return _PROTOCOLS.get(str(declared).lower(), str(declared).upper())
    return protocol(p["number"], p.get("name", ""))
