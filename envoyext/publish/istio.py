"""Pure builders: a built filter + where it goes -> an EnvoyFilter or a WasmPlugin, as dicts.

EnvoyFilter (networking.istio.io/v1alpha3): the filter's HTTP filter entry (`filter_entry`, the
one rule for how a filter gets its configuration) inserted before the router in the chosen
context's connection managers, the way Istio's docs insert a Lua filter, with a non-zero priority
(DEFAULT_PRIORITY unless given): INSERT_BEFORE is a relative operation, and Istio's analyzer flags one
without a priority (IST0151; see publish/analyze.py). A Wasm module is a local file, or with a URL
fetched by Envoy itself (a `remote` code source over a cluster the same EnvoyFilter adds). Per-route
configs become HTTP_ROUTE MERGE patches carrying typed_per_filter_config for the filter.
WasmPlugin (extensions.istio.io/v1alpha1): the module by URL and sha256, pluginName (root_id),
pluginConfig, phase/priority, failStrategy (reload: FAIL_RELOAD), imagePullPolicy, the traffic direction as match mode
(with ports), and selector or targetRefs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from envoyext.artifact import Artifact, FailurePolicy
from envoyext.envoy import filter_entry, xds
from envoyext.errors import UserError

Json = dict[str, Any]
Context = Literal["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
# WasmPlugin's match mode for each EnvoyFilter context (extensions.istio.io WorkloadMode).
MODE = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT", "GATEWAY": "CLIENT_AND_SERVER"}
# An EnvoyFilter's priority when none is given: positive, so it is applied after the filters of the
# default priority 0 (whose filters, inserted before the router too, then come before this one).
DEFAULT_PRIORITY = 10
# The CA bundle a proxy verifies a module server's certificate with (Istio's proxy images, Debian's path).
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
GATEWAY_API = "gateway.networking.k8s.io"
# filter.yaml's failure_policy as a WasmPlugin's failStrategy.
FAIL_STRATEGY = {FailurePolicy.FAIL_CLOSED: "FAIL_CLOSE", FailurePolicy.FAIL_OPEN: "FAIL_OPEN",
                 FailurePolicy.RELOAD: "FAIL_RELOAD"}
# targetRefs kinds and their API groups, as Istio's WasmPlugin and EnvoyFilter take them.
ISTIO_TARGET_KINDS = {"Gateway": GATEWAY_API, "GatewayClass": GATEWAY_API, "Service": ""}


@dataclass(frozen=True)
class TargetRef:
    """A policy target, `--target-ref KIND/NAME` (a bare NAME is a Gateway)."""
    kind: str
    name: str

    @classmethod
    def parse(cls, text: str, option: str = "--target-ref") -> TargetRef:
        kind, _, name = text.rpartition("/")
        kind = kind or "Gateway"
        if not re.fullmatch(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?", kind) or not name or len(name) > 253:
            raise UserError(f"{text!r} is not KIND/NAME", field=option,
                            fix="write e.g. Gateway/bookinfo-gateway or Service/reviews")
        return cls(kind, name)

    def json(self, groups: dict[str, str]) -> Json:
        return {"group": groups.get(self.kind, GATEWAY_API), "kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class Placement:
    """Where a filter goes: which workloads (namespace + labels, or target references), which side of
    their proxies, which ports."""
    namespace: str = "default"
    selector: dict[str, str] = field(default_factory=dict)
    context: Context = "SIDECAR_INBOUND"
    phase: str | None = None        # WasmPlugin: AUTHN | AUTHZ | STATS (None: UNSPECIFIED, before the router)
    priority: int | None = None
    target_refs: tuple[TargetRef, ...] = ()
    ports: tuple[int, ...] = ()     # WasmPlugin match ports; EnvoyFilter listener portNumber (a patch each)
    image_pull_policy: str | None = None   # WasmPlugin: IfNotPresent | Always

    def __post_init__(self) -> None:
        if self.selector and self.target_refs:
            raise UserError("a resource selects workloads by labels or by target references, not both",
                            field="--target-ref", fix="drop --selector or --target-ref (Istio: only one of "
                            "targetRefs or selector can be set)")


@dataclass(frozen=True)
class RouteConfig:
    """A route's config for the filter (scenario `routes[].per_filter_config`), for the route named `route`."""
    route: str
    config: Any
    field: str = "per_filter_config"


def resource_name(artifact: Artifact) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in artifact.name.lower()).strip("-.") or "filter"


def _targets(where: Placement) -> Json:
    if where.target_refs:
        for ref in where.target_refs:
            if ref.kind not in ISTIO_TARGET_KINDS:
                raise UserError(f"Istio targets Gateway, GatewayClass or Service, not {ref.kind}", field="--target-ref",
                                fix="write e.g. Gateway/bookinfo-gateway or Service/reviews")
        return {"targetRefs": [r.json(ISTIO_TARGET_KINDS) for r in where.target_refs]}
    return {}


def module_url(url: str, option: str = "--url") -> tuple[str, str, int]:
    """An http(s) URL a proxy fetches a module from: (scheme, host, port)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or not parts.path.strip("/"):
        raise UserError(f"{url!r} is not an http(s) URL of a module", field=option,
                        fix="give the module's address, e.g. https://filters.example.com/my-filter.wasm")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def remote_cluster_name(host: str, port: int) -> str:
    """The cluster Envoy fetches a module through: plain letters, digits, '.', '_' and '-' (no Istio
    `outbound|...` name, which only exists where a ServiceEntry makes it)."""
    return f"envoyext_wasm_{re.sub(r'[^A-Za-z0-9.-]', '_', host)}_{port}"


def remote_module(artifact: Artifact, url: str) -> tuple[Json, Json]:
    """(the Wasm VM's remote code source, the cluster it is fetched through) for a module served at `url`."""
    scheme, host, port = module_url(url)
    cluster = remote_cluster_name(host, port)
    tls = xds.upstream_tls(host, SYSTEM_CA) if scheme == "https" else None
    return (filter_entry.remote_code(url, sha256_of(artifact), cluster),
            xds.dns_cluster(cluster, host, port, transport_socket=tls))


def route_patches(artifact: Artifact, routes: Sequence[RouteConfig], context: Context) -> list[Json]:
    """One HTTP_ROUTE MERGE patch per route: the filter's per-route config, matched by route name."""
    out = []
    for r in routes:
        typed = filter_entry.per_route(artifact, r.config, field=r.field)
        value = {"typed_per_filter_config": {artifact.filter_name: typed}}
        out.append({"applyTo": "HTTP_ROUTE",
                    "match": {"context": context, "routeConfiguration": {"vhost": {"route": {"name": r.route}}}},
                    "patch": {"operation": "MERGE", "value": value}})
    return out


def envoy_filter(artifact: Artifact, config: Any, where: Placement, url: str | None = None,
                 routes: Sequence[RouteConfig] = ()) -> Json:
    """An EnvoyFilter inserting the filter before the router (Lua inline; Wasm from a local file, or
    fetched from `url` through a cluster it adds), with per-route configs for `routes`."""
    code, cluster = remote_module(artifact, url) if url and artifact.kind == "wasm" else (None, None)
    entry = filter_entry.for_artifact(artifact, config, wasm_code=code)
    spec: Json = {}
    if where.selector:
        spec["workloadSelector"] = {"labels": dict(where.selector)}
    spec.update(_targets(where))
    spec["priority"] = where.priority if where.priority is not None else DEFAULT_PRIORITY
    patches: list[Json] = []
    for port in where.ports or (None,):
        listener: Json = {} if port is None else {"portNumber": port}
        listener["filterChain"] = {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}
        patches.append({"applyTo": "HTTP_FILTER", "match": {"context": where.context, "listener": listener},
                        "patch": {"operation": "INSERT_BEFORE", "value": entry}})
    if cluster is not None:
        # ANY: one copy per proxy (a sidecar's outbound side, a gateway); the filter reaches it from any listener.
        patches.append({"applyTo": "CLUSTER", "match": {"context": "ANY"},
                        "patch": {"operation": "ADD", "value": cluster}})
    patches.extend(route_patches(artifact, routes, where.context))
    spec["configPatches"] = patches
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": resource_name(artifact), "namespace": where.namespace}, "spec": spec}


def sha256_of(artifact: Artifact) -> str:
    return hashlib.sha256(artifact.path.read_bytes()).hexdigest()


def wasm_plugin(artifact: Artifact, config: Any, where: Placement, url: str | None = None) -> Json:
    """A WasmPlugin for a Wasm filter; `url` defaults to the local module (file://, with its sha256)."""
    spec: Json = {}
    if where.selector:
        spec["selector"] = {"matchLabels": dict(where.selector)}
    spec.update(_targets(where))
    spec["url"] = url or artifact.path.resolve().as_uri()
    if not spec["url"].startswith("oci://") or "@sha256:" not in spec["url"]:
        spec["sha256"] = sha256_of(artifact)
    if where.image_pull_policy:
        spec["imagePullPolicy"] = where.image_pull_policy
    if artifact.root_id:
        spec["pluginName"] = artifact.root_id
    if config is not None:
        spec["pluginConfig"] = config if isinstance(config, dict) else {"value": config}
    if where.phase:
        spec["phase"] = where.phase
    if where.priority is not None:
        spec["priority"] = where.priority
    spec["failStrategy"] = FAIL_STRATEGY[artifact.failure_policy]
    match: Json = {"mode": MODE[where.context]}
    if where.ports:
        match["ports"] = [{"number": p} for p in where.ports]
    spec["match"] = [match]
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": resource_name(artifact), "namespace": where.namespace}, "spec": spec}


def for_artifact(artifact: Artifact, config: Any, where: Placement) -> Json:
    """What publishing this filter emits by default: a WasmPlugin for Wasm, an EnvoyFilter for Lua."""
    if artifact.kind == "wasm":
        return wasm_plugin(artifact, config, where)
    return envoy_filter(artifact, config, where)
