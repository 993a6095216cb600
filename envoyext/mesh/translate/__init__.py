"""Mesh → one Envoy config per proxy, with Istio's names. Pure functions, golden-file tested.

Split as Istio's pilot splits `networking/core`: `listener` (LDS), `route` (RDS), `cluster` (CDS +
EDS), `bootstrap` (the static part each Envoy starts with), then `envoyfilter` patches the result
as a post-pass, the way istiod applies EnvoyFilters after generating.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoyext.mesh.model import Json, Proxy


@dataclass
class ProxyConfig:
    """Everything one proxy is served: the xDS resources istiod would push to it.

    Each list holds Envoy v3 resources as dicts (no "@type" on the resource itself; the delivery
    layer wraps them in DiscoveryResponses). `routes` are RouteConfigurations named as Istio names
    them ("9080", "http.8080"); `endpoints` are ClusterLoadAssignments, one per EDS cluster."""
    proxy: Proxy
    listeners: list[Json] = field(default_factory=list)
    clusters: list[Json] = field(default_factory=list)
    routes: list[Json] = field(default_factory=list)
    endpoints: list[Json] = field(default_factory=list)
