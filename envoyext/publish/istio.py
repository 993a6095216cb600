"""Pure builders: a built filter + where it goes -> an EnvoyFilter or a WasmPlugin, as dicts.

EnvoyFilter (networking.istio.io/v1alpha3): the filter's HTTP filter entry (`filter_entry`, the
one rule for how a filter gets its configuration) inserted before the router in the chosen
context's connection managers, the way Istio's docs insert a Lua filter.
WasmPlugin (extensions.istio.io/v1alpha1): the module by URL and sha256, pluginName (root_id),
pluginConfig, phase/priority, failStrategy and the traffic direction as match mode.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from envoyext.artifact import Artifact, FailurePolicy
from envoyext.envoy import filter_entry

Json = dict[str, Any]
Context = Literal["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
# WasmPlugin's match mode for each EnvoyFilter context (extensions.istio.io WorkloadMode).
MODE = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT", "GATEWAY": "CLIENT_AND_SERVER"}


@dataclass(frozen=True)
class Placement:
    """Where a filter goes: which workloads (namespace + labels), which side of their proxies."""
    namespace: str = "default"
    selector: dict[str, str] = field(default_factory=dict)
    context: Context = "SIDECAR_INBOUND"
    phase: str | None = None        # WasmPlugin: AUTHN | AUTHZ | STATS (None: UNSPECIFIED, before the router)
    priority: int | None = None


def resource_name(artifact: Artifact) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in artifact.name.lower()).strip("-.") or "filter"


def envoy_filter(artifact: Artifact, config: Any, where: Placement) -> Json:
    """An EnvoyFilter inserting the filter before the router (Lua inline; Wasm from a local file)."""
    entry = filter_entry.for_artifact(artifact, config)
    spec: Json = {}
    if where.selector:
        spec["workloadSelector"] = {"labels": dict(where.selector)}
    if where.priority is not None:
        spec["priority"] = where.priority
    spec["configPatches"] = [{
        "applyTo": "HTTP_FILTER",
        "match": {"context": where.context,
                  "listener": {"filterChain": {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}}},
        "patch": {"operation": "INSERT_BEFORE", "value": entry},
    }]
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": resource_name(artifact), "namespace": where.namespace}, "spec": spec}


def sha256_of(artifact: Artifact) -> str:
    return hashlib.sha256(artifact.path.read_bytes()).hexdigest()


def wasm_plugin(artifact: Artifact, config: Any, where: Placement, url: str | None = None) -> Json:
    """A WasmPlugin for a Wasm filter; `url` defaults to the local module (file://, with its sha256)."""
    spec: Json = {}
    if where.selector:
        spec["selector"] = {"matchLabels": dict(where.selector)}
    spec["url"] = url or artifact.path.resolve().as_uri()
    if not spec["url"].startswith("oci://") or "@sha256:" not in spec["url"]:
        spec["sha256"] = sha256_of(artifact)
    if artifact.root_id:
        spec["pluginName"] = artifact.root_id
    if config is not None:
        spec["pluginConfig"] = config if isinstance(config, dict) else {"value": config}
    if where.phase:
        spec["phase"] = where.phase
    if where.priority is not None:
        spec["priority"] = where.priority
    spec["failStrategy"] = "FAIL_OPEN" if artifact.failure_policy == FailurePolicy.FAIL_OPEN else "FAIL_CLOSE"
    spec["match"] = [{"mode": MODE[where.context]}]
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": resource_name(artifact), "namespace": where.namespace}, "spec": spec}


def for_artifact(artifact: Artifact, config: Any, where: Placement) -> Json:
    """What publishing this filter emits by default: a WasmPlugin for Wasm, an EnvoyFilter for Lua."""
    if artifact.kind == "wasm":
        return wasm_plugin(artifact, config, where)
    return envoy_filter(artifact, config, where)
