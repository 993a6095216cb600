"""What one proxy is served: the translator's output, the post-passes' input and output, what
delivery writes and the runtime starts Envoy with. Its own module so the translator's parts can
name it without importing the translator (`envoyext.mesh.translate` re-exports it)."""

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
