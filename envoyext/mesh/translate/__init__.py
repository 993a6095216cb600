"""Mesh → one Envoy config per proxy, with Istio's names. Pure functions, golden-file tested.

Split as Istio's pilot splits `networking/core`: `listener` (LDS), `route` (RDS), `cluster` (CDS +
EDS), `bootstrap` (the static part each Envoy starts with), then `envoyfilter` patches the result
as a post-pass, the way istiod applies EnvoyFilters after generating.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from envoyext.mesh.model import Json, Mesh
from envoyext.mesh.proxyconfig import ProxyConfig

__all__ = ["ProxyConfig", "inline_endpoints", "translate"]


def translate(mesh: Mesh, *, telemetry: bool = True, xds_dir: str = "xds", only: list[str] | None = None,
              fetch: Callable[[str, str | None], Any] | None = None, eds: bool = False,
              security: bool = True, jwks: Callable[[str, str], str | None] | None = None) -> dict[str, ProxyConfig]:
    """Every proxy's config, keyed by proxy name. Pure: the same mesh gives the same dicts.

    Istio's `istio.stats` filter, tracing and access logs come from `mesh.telemetry` when that
    module is present (without it the chains have no stats filter); `telemetry=False` leaves them
    out (golden tests). `xds_dir` is where each proxy's RDS/EDS files are, relative to its Envoy's
    working directory. `only`: just these proxies (by name). `eds`: endpoints in EDS files, one
    per cluster, as istiod serves them; by default they are folded into their clusters instead
    (STATIC, same names and endpoints), because Envoy opens one inotify instance per watched file
    and Linux allows 128 per user: the EDS files of a Bookinfo-sized mesh already exceed that.
    `fetch` gets a WasmPlugin's module from an oci:// or http(s):// url (see extensions.apply).
    `security`: mTLS as Istio does it (tls.py: PeerAuthentication's inbound chains, auto-mTLS and
    DestinationRule TLS on clusters, Gateway TLS servers), with certificates from file-based SDS
    under each proxy's `sds/` (the runtime writes them, sds.provision); `False` leaves every hop
    plaintext, as a mesh without sidecar certificates (golden tests of routing alone).
    RequestAuthentication becomes jwt_authn in the same chains as RBAC; `jwks(uri, issuer)` gets
    a `jwksUri`'s key set, as istiod fetches and inlines it (None: such rules admit no token).

    Then the post-passes, in Istio's order: WasmPlugins placed in the chains as they are built,
    EnvoyFilters patched over the result."""
    from envoyext.mesh.translate import authn_jwt, cluster, envoyfilter, extensions, listener, route, tls

    stats, hcm_extra = _telemetry_hooks(mesh) if telemetry else ({}, {})
    upstream_tls = tls.upstream_tls(mesh) if security else None
    inbound_tls = tls.inbound_tls(mesh) if security else None
    gateway_tls = tls.gateway_listeners if security else None
    authn = functools.partial(authn_jwt.filters, resolve=jwks)
    out = {}
    for proxy in mesh.proxies:
        if only is not None and proxy.name not in only:
            continue
        clusters, endpoints = cluster.for_proxy(mesh, proxy, xds_dir, upstream_tls=upstream_tls)
        routes = route.for_proxy(mesh, proxy)
        if security and proxy.kind == "router":
            routes += tls.gateway_routes(mesh, proxy)
        config = ProxyConfig(
            proxy=proxy,
            listeners=listener.for_proxy(mesh, proxy, xds_dir=xds_dir, stats=stats.get(proxy.name),
                                         hcm_extra=hcm_extra.get(proxy.name), inbound_tls=inbound_tls,
                                         gateway_tls=gateway_tls, authn=authn),
            clusters=list(clusters), routes=routes,
            endpoints=tls.endpoint_tls_modes(mesh, list(endpoints)) if security else list(endpoints))
        if not eds:
            config = inline_endpoints(config)
        config = extensions.apply(mesh, config, fetch)
        out[proxy.name] = envoyfilter.apply(mesh, config)
    return out


def inline_endpoints(config: ProxyConfig) -> ProxyConfig:
    """`config` with each EDS cluster's endpoints put into the cluster (type STATIC)."""
    assignments = {e["cluster_name"]: e for e in config.endpoints}
    clusters = []
    for c in config.clusters:
        if c.get("type") == "EDS":
            c = {k: v for k, v in c.items() if k != "eds_cluster_config"}
            c["type"] = "STATIC"
            c["load_assignment"] = assignments.get(c["name"], {"cluster_name": c["name"], "endpoints": []})
        clusters.append(c)
    return ProxyConfig(proxy=config.proxy, listeners=config.listeners, clusters=clusters, routes=config.routes,
                       endpoints=[])


def _optional(module: str) -> Any:
    """A module another part of the work provides, or None while it is not there yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return None


def _telemetry_hooks(mesh: Mesh) -> tuple[dict[str, Callable[[str], Json]], dict[str, Json]]:
    """Per proxy: the `istio.stats` filter builder (by reporter) and the HCM fields (tracing,
    access_log) the telemetry module gives, if it exists."""
    telemetry = _optional("envoyext.mesh.telemetry")
    if telemetry is None:
        return {}, {}
    stats: dict[str, Callable[[str], Json]] = {}
    extra: dict[str, Json] = {}
    for proxy in mesh.proxies:
        if hasattr(telemetry, "stats_filter"):
            stats[proxy.name] = functools.partial(telemetry.stats_filter, mesh, proxy)
        fields: Json = {}
        tracing = telemetry.tracing(mesh, proxy) if hasattr(telemetry, "tracing") else None
        if tracing:
            fields["tracing"] = tracing
        if hasattr(telemetry, "access_log"):
            logs = telemetry.access_log(mesh)
            if logs:
                fields["access_log"] = logs
        extra[proxy.name] = fields
    return stats, extra
