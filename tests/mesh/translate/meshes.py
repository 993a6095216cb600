"""Small meshes for translator tests, built by hand from the Bookinfo fixture's YAML (a stand-in for
`build.mesh` until it lands: only what the listener and route translators read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from envoyext.mesh.model import (
    CLUSTER_DOMAIN,
    ROOT_NAMESPACE,
    AddressPlan,
    Mesh,
    MeshConfig,
    Proxy,
    Resource,
    Service,
    ServicePort,
    Workload,
)

BOOKINFO = Path(__file__).resolve().parent.parent / "testdata" / "bookinfo"
LISTS = {"Gateway": "gateways", "VirtualService": "virtual_services", "DestinationRule": "destination_rules",
         "Sidecar": "sidecars", "ServiceEntry": "service_entries"}


def resources(*texts_or_paths: str | Path) -> list[Resource]:
    out = []
    for item in texts_or_paths:
        text = item.read_text() if isinstance(item, Path) else item
        for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
            meta = doc.get("metadata", {})
            out.append(Resource(doc["kind"], doc.get("apiVersion", ""), meta["name"], meta.get("namespace", "default"),
                                meta, doc.get("spec", {}), str(item)[:80], i))
    return out


def service(name: str, ports: dict[int, str] | None = None, namespace: str = "default", vip: str | None = None,
            selector: dict[str, str] | None = None) -> Service:
    return Service(f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}", name, namespace,
                   tuple(ServicePort(proto.lower(), p, p, proto) for p, proto in (ports or {9080: "HTTP"}).items()),
                   selector=selector if selector is not None else {"app": name}, vip=vip)


def build(docs: list[Resource], config: MeshConfig | None = None, gateway: bool = True) -> Mesh:
    """Services, workloads (one pod per Deployment), sidecars and an ingress gateway pod."""
    plan = AddressPlan()
    services: list[Service] = []
    workloads: list[Workload] = []
    lists: dict[str, list[Resource]] = {v: [] for v in LISTS.values()}
    for r in docs:
        if r.kind == "Service":
            ports = tuple(ServicePort(p.get("name", ""), p["port"], p.get("targetPort", p["port"]),
                                      _protocol(p.get("name", ""))) for p in r.spec["ports"])
            services.append(Service(f"{r.name}.{r.namespace}.svc.{CLUSTER_DOMAIN}", r.name, r.namespace, ports,
                                    selector=r.spec.get("selector", {}), vip=plan.vip(len(services))))
        elif r.kind == "Deployment":
            t = r.spec["template"]
            i = len(workloads)
            workloads.append(Workload(f"{r.name}-0", r.name, r.namespace, dict(t["metadata"]["labels"]),
                                      t["spec"].get("serviceAccountName", "default"),
                                      tuple(p["containerPort"] for c in t["spec"]["containers"]
                                            for p in c.get("ports", [])),
                                      plan.pod_ip(i), plan.app_address(i), plan.capture_address(i)))
        elif r.kind in LISTS:
            lists[LISTS[r.kind]].append(r)
    if gateway:
        i = len(workloads)
        workloads.append(Workload("istio-ingressgateway-0", "istio-ingressgateway", ROOT_NAMESPACE,
                                  {"istio": "ingressgateway", "app": "istio-ingressgateway"},
                                  "istio-ingressgateway-service-account", (8080, 8443), plan.pod_ip(i),
                                  plan.app_address(i), plan.capture_address(i), gateway=True))
        services.append(Service(f"istio-ingressgateway.{ROOT_NAMESPACE}.svc.{CLUSTER_DOMAIN}", "istio-ingressgateway",
                                ROOT_NAMESPACE, (ServicePort("http2", 80, 8080, "HTTP2"),
                                                 ServicePort("https", 443, 8443, "HTTPS")),
                                selector={"istio": "ingressgateway"}, vip=plan.vip(len(services))))
    proxies = [Proxy("router" if w.gateway else "sidecar", w) for w in workloads]
    return Mesh(config or MeshConfig(), services, workloads, proxies, **lists)  # type: ignore[arg-type]


def _protocol(port_name: str) -> str:
    prefix = port_name.split("-")[0].lower()
    known = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "https": "HTTPS", "tls": "TLS", "tcp": "TCP"}
    return known.get(prefix, "HTTP")


def bookinfo(variant: str | None = None, *extra: str, **kw: Any) -> Mesh:
    """Bookinfo: platform + gateway + destination rules (+ routing/<variant>.yaml, + extra YAML)."""
    paths: list[str | Path] = [BOOKINFO / "platform.yaml", BOOKINFO / "gateway.yaml",
                               BOOKINFO / "destination-rules.yaml"]
    if variant:
        paths.append(BOOKINFO / "routing" / f"{variant}.yaml")
    return build(resources(*paths, *extra), **kw)
