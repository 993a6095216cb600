"""The mesh model: what a set of Kubernetes + Istio resources means, before any Envoy config.

`resources.load()` turns YAML into `Resource`s (schema-checked); `build.mesh()` turns those into a
`Mesh`: services (from Services and ServiceEntries), workloads (one per Deployment replica, each a
pod on its own loopback address), proxies (a sidecar per workload pod, gateways per profile) and the
Istio configuration resources, kept as validated dicts because the translator reads their fields in
Istio's own words (`spec["http"][0]["route"]`).

Addresses. There is no iptables capture on a laptop, so each pod gets three loopback addresses
instead of one (see `AddressPlan`): the pod IP, where its proxy's inbound side listens and which
other proxies connect to and from (so source IPs and ipBlocks are real); the app address, where the
stand-in app listens (the inbound cluster's endpoint, like the app behind the sidecar); and the
capture address, where the sidecar's outbound listeners listen and every service name resolves to
for the app (what iptables' outbound redirect does in a pod).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Json = dict[str, Any]

CLUSTER_DOMAIN = "cluster.local"   # Kubernetes' DNS domain: reviews.default.svc.cluster.local
ROOT_NAMESPACE = "istio-system"    # Istio's root namespace: mesh-wide config lives here
ISTIO_VERSION = "1.30.3"           # the release whose CRD schemas we ship and whose names we follow

Profile = Literal["default", "demo", "minimal", "empty"]
ProxyKind = Literal["sidecar", "router"]  # Istio's node types: a gateway is a "router"


@dataclass(frozen=True)
class Resource:
    """One Kubernetes object as loaded: where it came from, and its validated content."""
    kind: str
    api_version: str
    name: str
    namespace: str
    metadata: Json
    spec: Json
    file: str          # the file it was read from (for one-line errors)
    index: int         # which YAML document in that file (0-based)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class MeshConfig:
    """Istio's MeshConfig, the parts the model uses (from an IstioOperator resource, else defaults)."""
    profile: Profile = "default"
    trust_domain: str = CLUSTER_DOMAIN
    outbound_traffic_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"
    tracing_sampling: float = 1.0          # percent; the demo profile sets 100
    access_log_file: str = ""              # "" = off; the demo profile sets /dev/stdout
    enable_auto_mtls: bool = True
    connect_timeout: str = "10s"
    # AuthorizationPolicy (translate/authz.py): meshConfig.extensionProviders as written (CUSTOM
    # ext_authz), and meshConfig.trustDomainAliases (principals are expanded to each).
    extension_providers: tuple[Json, ...] = ()
    trust_domain_aliases: tuple[str, ...] = ()
    # Workload certificate lifetime: the agent's SECRET_TTL (24 h), set as Istio users do through
    # meshConfig.defaultConfig.proxyMetadata.SECRET_TTL; rotation at half of it.
    workload_cert_ttl: dt.timedelta = dt.timedelta(hours=24)

    @property
    def has_ingress_gateway(self) -> bool:
        return self.profile in ("default", "demo")

    @property
    def has_egress_gateway(self) -> bool:
        return self.profile == "demo"


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int
    protocol: str      # Istio's protocol: HTTP, HTTP2, GRPC, HTTPS, TLS, TCP (from appProtocol or the name prefix)


@dataclass(frozen=True)
class Endpoint:
    """One address serving a service port (a pod, or a ServiceEntry endpoint)."""
    address: str
    port: int
    labels: dict[str, str]
    workload: str | None = None        # the pod's name when it is a mesh workload
    service_account: str | None = None
    weight: int | None = None


@dataclass(frozen=True)
class Service:
    """A host the mesh can route to: a Kubernetes Service or one host of a ServiceEntry."""
    hostname: str                      # FQDN: reviews.default.svc.cluster.local, or api.example.com
    name: str                          # short name (Service name; the host for a ServiceEntry)
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: dict[str, str] = field(default_factory=dict)
    vip: str | None = None             # the ClusterIP (a loopback address here) or a ServiceEntry address
    # ServiceEntry only:
    from_service_entry: bool = False
    mesh_external: bool = False
    resolution: Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"] = "STATIC"
    static_endpoints: tuple[Endpoint, ...] = ()
    export_to: tuple[str, ...] = ("*",)

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True)
class Workload:
    """One pod of a Deployment, with its addresses (see AddressPlan)."""
    pod: str                           # reviews-v1-0
    deployment: str                    # reviews-v1 (Istio's source_workload)
    namespace: str
    labels: dict[str, str]             # the pod template's labels (app, version, istio, ...)
    service_account: str
    container_ports: tuple[int, ...]
    ip: str                            # pod IP: the proxy's inbound side, admin 15000, prometheus 15090
    app_address: str                   # where the stand-in app listens (inbound cluster endpoint)
    capture_address: str               # where the sidecar's outbound listeners listen
    gateway: bool = False              # an Istio gateway pod (no app, no sidecar: the proxy is the pod)

    @property
    def app(self) -> str:
        return self.labels.get("app", self.deployment)

    @property
    def version(self) -> str:
        return self.labels.get("version", "unknown")


@dataclass(frozen=True)
class Proxy:
    """One Envoy: a workload's sidecar, or a gateway pod's proxy."""
    kind: ProxyKind
    workload: Workload

    @property
    def name(self) -> str:
        """How reports, observations and file names refer to this proxy: the pod name."""
        return self.workload.pod

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.workload.labels

    @property
    def node_id(self) -> str:
        """Istio's node id: `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`."""
        w = self.workload
        return f"{self.kind}~{w.ip}~{w.pod}.{w.namespace}~{w.namespace}.svc.{CLUSTER_DOMAIN}"

    @property
    def node_cluster(self) -> str:
        """Istio's service cluster: `<app>.<namespace>`."""
        return f"{self.workload.app}.{self.namespace}"


@dataclass(frozen=True)
class AddressPlan:
    """Loopback addresses for a mesh run: pod i gets 127.<base>.hi.lo as pod IP, 127.<base+1>.hi.lo as
    app address, 127.<base+2>.hi.lo as capture address; service VIPs come from 127.<base+3>.

    Two meshes on one machine at once use different bases (the runtime picks a free one)."""
    base: int = 64

    @staticmethod
    def _hi_lo(i: int) -> tuple[int, int]:
        return divmod(i, 250)[0], divmod(i, 250)[1] + 1

    def _addr(self, offset: int, i: int) -> str:
        hi, lo = self._hi_lo(i)
        return f"127.{self.base + offset}.{hi}.{lo}"

    def pod_ip(self, i: int) -> str:
        return self._addr(0, i)

    def app_address(self, i: int) -> str:
        return self._addr(1, i)

    def capture_address(self, i: int) -> str:
        return self._addr(2, i)

    def vip(self, i: int) -> str:
        return self._addr(3, i)


# Envoy's well-known ports on every proxy, as Istio uses them (all bound on the pod IP).
ADMIN_PORT = 15000
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
HEALTH_PORT = 15021
PROMETHEUS_PORT = 15090
APP_CONTROL_PORT = 15999   # the stand-in app's control endpoint, on its app address (not through Envoy)


@dataclass
class Mesh:
    """Everything a translator or runtime needs, in one place."""
    config: MeshConfig
    services: list[Service]
    workloads: list[Workload]
    proxies: list[Proxy]
    # Istio configuration, schema-checked, in load order:
    gateways: list[Resource] = field(default_factory=list)
    virtual_services: list[Resource] = field(default_factory=list)
    destination_rules: list[Resource] = field(default_factory=list)
    service_entries: list[Resource] = field(default_factory=list)
    sidecars: list[Resource] = field(default_factory=list)
    envoy_filters: list[Resource] = field(default_factory=list)
    wasm_plugins: list[Resource] = field(default_factory=list)
    peer_authentications: list[Resource] = field(default_factory=list)
    request_authentications: list[Resource] = field(default_factory=list)
    authorization_policies: list[Resource] = field(default_factory=list)
    plan: AddressPlan = field(default_factory=AddressPlan)
    # Indexes built on first use (a translation looks up N services for each of N proxies: without
    # them a 1,000-service mesh is quadratic). Not an init field, so dataclasses.replace() (a
    # readdressed or changed mesh) starts with none.
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, key: str, build: Callable[[], Any]) -> Any:
        """`build()`'s result, computed once per mesh and `key`."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def service(self, host: str, namespace: str = "default") -> Service | None:
        """Find a service by FQDN, `name.ns`, or short name resolved in `namespace` (as Istio does)."""
        for s in self.services:
            if host in (s.hostname, f"{s.name}.{s.namespace}", f"{s.name}.{s.namespace}.svc") or (
                    host == s.name and s.namespace == namespace and not s.from_service_entry):
                return s
        return None

    def ingress_gateway(self) -> Proxy | None:
        """The ingress gateway's proxy (label istio: ingressgateway), when the profile has one."""
        return next((p for p in self.proxies if p.kind == "router" and p.labels.get("istio") == "ingressgateway"),
                    None)

    def proxy(self, name: str) -> Proxy | None:
        """A proxy by pod name, or by deployment name when it has one replica (`reviews-v1`)."""
        exact = [p for p in self.proxies if p.name == name]
        if exact:
            return exact[0]
        by_deployment = [p for p in self.proxies if p.workload.deployment == name]
        return by_deployment[0] if by_deployment else None

    def endpoints(self, service: Service, port: ServicePort) -> list[Endpoint]:
        """The endpoints serving one port of a service: pods its selector picks (at the app's
        target port, addressed by pod IP: traffic enters through the sidecar), or the
        ServiceEntry's own endpoints."""
        if service.from_service_entry:
            return list(service.static_endpoints)
        if not service.selector:
            return []
        by_label: dict[tuple[str, str, str], list[Workload]] = self.memo("workloads by label", self._by_label)
        # The pods carrying the selector's first label, then the rest of the selector checked.
        k, v = next(iter(service.selector.items()))
        return [Endpoint(w.ip, port.target_port, dict(w.labels), w.pod, w.service_account)
                for w in by_label.get((service.namespace, k, v), []) if selects(service.selector, w.labels)]

    def _by_label(self) -> dict[tuple[str, str, str], list[Workload]]:
        out: dict[tuple[str, str, str], list[Workload]] = {}
        for w in self.workloads:
            for k, v in w.labels.items():
                out.setdefault((w.namespace, k, v), []).append(w)
        return out


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selection: every key/value of the selector is in the labels (empty selects all)."""
    return all(labels.get(k) == v for k, v in (selector or {}).items())
