"""What one proxy sees and which configuration applies to it: Istio's sidecar scope, in small pure
lookups shared by the listener, route (and cluster) translators.

Hosts are compared as Istio compares them: a name without a dot is a short name, resolved in the
namespace of the resource that wrote it (`reviews` in a VirtualService of `default` is
`reviews.default.svc.cluster.local`); anything with a dot is taken as written; `*` and `*.suffix`
are wildcards (pilot `ResolveShortnameToFQDN`, `host.Name.Matches`).
"""

from __future__ import annotations

import dataclasses

from envoyext.mesh.model import CLUSTER_DOMAIN, ROOT_NAMESPACE, Json, Mesh, Proxy, Resource, Service, selects

HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})


def resolve_host(host: str, namespace: str) -> str:
    """A host as written in a resource of `namespace`, as an FQDN (or wildcard)."""
    if host == "*" or "." in host:
        return host
    return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def host_matches(pattern: str, host: str) -> bool:
    """Does `pattern` (exact, `*`, or `*.suffix`) cover `host`? A wildcard host is covered by a
    wider or equal wildcard."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]                       # ".example.com"
        return host.endswith(suffix) and (not host.startswith("*") or host[1:].endswith(suffix))
    return False


def hosts_intersect(a: str, b: str) -> str | None:
    """The more specific of two hosts when one covers the other (a gateway server host and a
    VirtualService host), else None."""
    if host_matches(a, b):
        return b
    if host_matches(b, a):
        return a
    return None


def _exported(export_to: list[str] | tuple[str, ...], owner_ns: str, viewer_ns: str) -> bool:
    """Istio's exportTo: `*` everyone, `.` the owner's namespace, `~` nobody, else named namespaces."""
    targets = list(export_to) or ["*"]
    return "*" in targets or viewer_ns in targets or ("." in targets and owner_ns == viewer_ns)


def sidecar_resource(mesh: Mesh, proxy: Proxy) -> Resource | None:
    """The Sidecar resource that applies to a sidecar proxy: one in its namespace whose
    workloadSelector selects it, else its namespace's selector-less one, else the root namespace's."""
    ns = [r for r in mesh.sidecars if r.namespace == proxy.namespace]
    for r in ns:
        labels = (r.spec.get("workloadSelector") or {}).get("labels")
        if labels and selects(labels, proxy.labels):
            return r
    for r in ns:
        if not (r.spec.get("workloadSelector") or {}).get("labels"):
            return r
    return next((r for r in mesh.sidecars if r.namespace == ROOT_NAMESPACE
                 and not (r.spec.get("workloadSelector") or {}).get("labels")), None)


def _egress_hosts(mesh: Mesh, proxy: Proxy) -> list[tuple[str, str]] | None:
    """(namespace, dnsName) pairs of the Sidecar's egress hosts; None = everything is in view."""
    if proxy.kind != "sidecar":
        return None
    sidecar = sidecar_resource(mesh, proxy)
    if sidecar is None or not sidecar.spec.get("egress"):
        return None
    out = []
    for egress in sidecar.spec["egress"]:
        for h in egress.get("hosts", []):
            ns, _, dns = h.partition("/")
            out.append((sidecar.namespace if ns == "." else ns, dns))
    return out


def _egress_allows(egress: list[tuple[str, str]] | None, namespace: str, host: str) -> bool:
    if egress is None:
        return True
    return any(ns != "~" and (ns == "*" or ns == namespace) and host_matches(dns, host) for ns, dns in egress)


def services_in_view(mesh: Mesh, proxy: Proxy) -> list[Service]:
    """The services a proxy knows: exported to its namespace and, for a sidecar, allowed by its
    Sidecar resource's egress hosts (`./*`, `istio-system/*`, `*/reviews.default.svc.cluster.local`),
    plus the destinations of the VirtualServices in view (pilot `collectImportedServices`: "infer
    more possible destinations from virtual services"), so a route never names a missing cluster.
    A destination brought in only that way keeps just the ports the routes name, when they all
    name one (`serviceMatchingVirtualServicePorts`)."""
    egress = _egress_hosts(mesh, proxy)
    exported = [s for s in mesh.services if _exported(s.export_to, s.namespace, proxy.namespace)]
    if egress is None:
        return exported
    named = {s.hostname for s in exported if _egress_allows(egress, s.namespace, s.hostname)}
    inferred: dict[str, set[int]] = {}
    for vs in virtual_services_for_mesh(mesh, proxy):
        for host, ports in vs_destinations(vs).items():
            inferred.setdefault(host, set()).update(ports)
    out = []
    for s in exported:
        if s.hostname in named:
            out.append(s)
        elif s.hostname in inferred:
            ports = inferred[s.hostname]
            if ports and 0 not in ports:
                s = dataclasses.replace(s, ports=tuple(p for p in s.ports if p.port in ports))
            out.append(s)
    return out


def vs_destinations(vs: Resource) -> dict[str, set[int]]:
    """Every host a VirtualService sends to (routes, mirrors; http, tls, tcp), as FQDNs, with the
    ports named (0: a destination without a port, so every port)."""
    out: dict[str, set[int]] = {}
    for kind in ("http", "tls", "tcp"):
        for rule in vs.spec.get(kind) or []:
            targets = [r.get("destination") or {} for r in rule.get("route") or []]
            targets += [rule.get("mirror") or {}] + [m.get("destination") or {} for m in rule.get("mirrors") or []]
            for t in targets:
                if t.get("host"):
                    port = int((t.get("port") or {}).get("number") or 0)
                    out.setdefault(resolve_host(t["host"], vs.namespace), set()).add(port)
    return out


def http_ports(service: Service) -> list[int]:
    return [p.port for p in service.ports if p.protocol.upper() in HTTP_PROTOCOLS]


def gateways_for(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    """Gateway resources whose selector picks this gateway proxy (in any namespace, Istio's default)."""
    if proxy.kind != "router":
        return []
    return [g for g in mesh.gateways if g.spec.get("selector") and selects(g.spec["selector"], proxy.labels)]


def gateway_ref(ref: str, vs_namespace: str) -> str:
    """A VirtualService's `gateways` entry as `ns/name` (a bare name is in the VirtualService's namespace)."""
    return ref if "/" in ref or ref == "mesh" else f"{vs_namespace}/{ref}"


def binds_to_mesh(vs: Resource) -> bool:
    gateways = vs.spec.get("gateways") or []
    return not gateways or "mesh" in gateways


def binds_to_gateway(vs: Resource, gateway: Resource) -> bool:
    refs = [gateway_ref(g, vs.namespace) for g in vs.spec.get("gateways") or []]
    return f"{gateway.namespace}/{gateway.name}" in refs


def vs_hosts(vs: Resource) -> list[str]:
    return [resolve_host(h, vs.namespace) for h in vs.spec.get("hosts", [])]


def virtual_services_for_mesh(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    """VirtualServices that apply to a sidecar: bound to `mesh`, exported to its namespace and, with
    a Sidecar resource, with a host one of its egress hosts covers in the VirtualService's
    namespace (pilot `SelectVirtualServices`). Load order (Istio: creation time)."""
    egress = _egress_hosts(mesh, proxy)
    return [vs for vs in mesh.virtual_services
            if binds_to_mesh(vs)
            and _exported(vs.spec.get("exportTo") or ["*"], vs.namespace, proxy.namespace)
            and (egress is None or any((ns == "*" or ns == vs.namespace) and hosts_intersect(dns, h) is not None
                                       for ns, dns in egress for h in vs_hosts(vs)))]


class HostIndex:
    """VirtualServices by the hosts they route, for many look-ups against one list (a sidecar looks
    up every service in view: scanning every VirtualService each time is quadratic)."""

    def __init__(self, vses: list[Resource]):
        self.exact: dict[str, Resource] = {}
        self.wildcard: list[tuple[Resource, list[str]]] = []
        for vs in vses:
            hosts = vs_hosts(vs)
            for h in hosts:
                self.exact.setdefault(h, vs)
            if any("*" in h for h in hosts):
                self.wildcard.append((vs, hosts))

    def lookup(self, fqdn: str) -> Resource | None:
        """The first VirtualService whose hosts cover `fqdn` (exact host before wildcard, as Istio
        picks the most specific)."""
        if fqdn in self.exact:
            return self.exact[fqdn]
        return next((vs for vs, hosts in self.wildcard if any(host_matches(h, fqdn) for h in hosts)), None)


def virtual_service_for_host(vses: list[Resource] | HostIndex, fqdn: str) -> Resource | None:
    """The VirtualService that routes `fqdn` on a sidecar (see HostIndex.lookup)."""
    return (vses if isinstance(vses, HostIndex) else HostIndex(vses)).lookup(fqdn)


def destination_rule(mesh: Mesh, fqdn: str, proxy_namespace: str) -> Resource | None:
    """The DestinationRule for a host, as Istio picks it: the proxy's namespace, then the host's
    own namespace, then the root namespace; within each, an exact host before a wildcard."""
    service_ns = fqdn.split(".")[1] if fqdn.endswith(f".svc.{CLUSTER_DOMAIN}") else None
    for ns in dict.fromkeys([proxy_namespace, service_ns, ROOT_NAMESPACE]):
        if ns is None:
            continue
        by_host: dict[tuple[str, str], list[Resource]] = mesh.memo("scope: rules by host", lambda: _rules_by_host(mesh))
        exact = [r for r in by_host.get((ns, fqdn), [])
                 if _exported(r.spec.get("exportTo") or ["*"], r.namespace, proxy_namespace)]
        if exact:
            return exact[0]
        wildcards: list[Resource] = mesh.memo("scope: wildcard rules", lambda: [
            r for r in mesh.destination_rules if "*" in r.spec.get("host", "")])
        wild = [r for r in wildcards
                if r.namespace == ns and _exported(r.spec.get("exportTo") or ["*"], r.namespace, proxy_namespace)
                and host_matches(resolve_host(r.spec.get("host", ""), r.namespace), fqdn)]
        if wild:
            return wild[0]
    return None


def _rules_by_host(mesh: Mesh) -> dict[tuple[str, str], list[Resource]]:
    out: dict[tuple[str, str], list[Resource]] = {}
    for r in mesh.destination_rules:
        out.setdefault((r.namespace, resolve_host(r.spec.get("host", ""), r.namespace)), []).append(r)
    return out


def traffic_policy(rule: Resource | None, subset: str, port: int) -> Json:
    """The DestinationRule's effective traffic policy for a subset and port: the subset's policy
    over the top-level one, then the port-level settings for `port` (Istio `MergeSubsetTrafficPolicy`)."""
    if rule is None:
        return {}
    policy: Json = dict(rule.spec.get("trafficPolicy") or {})
    for s in rule.spec.get("subsets") or []:
        if s.get("name") == subset and s.get("trafficPolicy"):
            policy.update(s["trafficPolicy"])
    for level in policy.get("portLevelSettings") or []:
        if (level.get("port") or {}).get("number") == port:
            policy.update({k: v for k, v in level.items() if k != "port"})
    return policy
