"""WasmPlugin (extensions.istio.io/v1alpha1): place each plugin that reaches a proxy into its HTTP
connection managers, as istiod does while building them (reference §11; `pilot/pkg/model/extensions.go`,
`pilot/pkg/model/wasm.go`, `pilot/pkg/networking/core/extension/`).

- Which plugins: the root namespace reaches every proxy, else the plugin's own namespace; then
  `selector.matchLabels` or `targetRefs`. `match[]` picks traffic: mode CLIENT is sidecar outbound and
  gateways, SERVER sidecar inbound, CLIENT_AND_SERVER / UNDEFINED both (Istio's
  workloadModeForListenerClass: a gateway listener counts as CLIENT); `ports` the inbound chain's port, the
  outbound service port or the gateway listener port.
- Where: by phase, AUTHN before jwt_authn, AUTHZ before RBAC, STATS and UNSPECIFIED before fault (the
  first of Istio's filters after RBAC); within a phase priority descending, root-namespace plugins first,
  then load order.
- What: an inline `envoy.extensions.filters.http.wasm.v3.Wasm` named `extensions.istio.io/wasmplugin/<ns>.<name>`
  (the name releases up to 1.2x serve over ECDS; newer masters say `trafficextension/...~istio-translated-
  wasmplugin`). Inline because envoyext delivers files, not ECDS. PluginConfig: name `<ns>.<name>`,
  root_id = pluginName, configuration = StringValue of the pluginConfig JSON (istiod's protomarshal.ToJSON;
  absent when empty), vm runtime v8, env INLINE → key_values, HOST → host_env_keys, failStrategy →
  failure_policy (FAIL_CLOSE → FAIL_CLOSED, the default, FAIL_OPEN, FAIL_RELOAD).
- Code: `file://` is the local file; `oci://`, `http(s)://` and scheme-less (oci) URLs need a `fetch`
  callback that returns a local path (envoyext.mesh.fetch). A given sha256 is checked against the
  module's bytes, except for an image: there Istio (and the fetcher) compare it with the manifest digest.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path

from envoyext.envoy import filter_entry
from envoyext.errors import UserError, read_bytes
from envoyext.mesh.model import ROOT_NAMESPACE, Json, Mesh, Proxy, Resource
from envoyext.mesh.proxyconfig import ProxyConfig
from envoyext.mesh.translate.envoyfilter import HCM, PHASES, VIRTUAL_INBOUND, listener_context, phase_index, reaches

Fetch = Callable[[str, str | None], Path]
NAME_PREFIX = "extensions.istio.io/wasmplugin/"
FAILURE = {"FAIL_CLOSE": "fail_closed", "FAIL_OPEN": "fail_open", "FAIL_RELOAD": "reload"}
# The traffic each WorkloadMode covers, by patch context (Istio: gateways are CLIENT).
MODES = {"SIDECAR_INBOUND": ("SERVER",), "SIDECAR_OUTBOUND": ("CLIENT",), "GATEWAY": ("CLIENT",)}


def filter_name(res: Resource) -> str:
    return f"{NAME_PREFIX}{res.namespace}.{res.name}"


def _error(res: Resource, message: str, field: str, fix: str) -> UserError:
    return UserError(f"WasmPlugin {res.namespace}/{res.name}: {message}", file=res.file, field=field, fix=fix)


def module_path(res: Resource, fetch: Fetch | None) -> Path:
    """The local .wasm file for the plugin's url, its sha256 checked when the plugin gives one."""
    url = str(res.spec.get("url") or "")
    sha = str(res.spec["sha256"]) if res.spec.get("sha256") else None
    if not url:
        raise _error(res, "no url", "spec.url", "give file:///path/to/plugin.wasm or oci://registry/image:tag")
    if url.startswith("file://"):
        path = Path(url[len("file://"):])
    else:
        if fetch is None:
            raise _error(res, f"cannot fetch {url!r} here (no fetcher given)", "spec.url",
                         "build or pull the module and point url at it with file://")
        try:
            path = fetch(url, sha)
        except UserError as e:
            raise _error(res, e.message, e.field or "spec.url", e.fix or "check the url") from None
        if not url.startswith(("http://", "https://")):
            return path   # oci: the fetcher compared sha256 with the image's manifest digest, as Istio does
    if sha:
        data = read_bytes(path, what="Wasm module")
        got = hashlib.sha256(data).hexdigest()
        if got != str(sha).lower():
            raise _error(res, f"sha256 mismatch: {path} has {got}", "spec.sha256",
                         "update sha256 to the module's digest, or fix the url")
    return path


def wasm_entry(res: Resource, fetch: Fetch | None) -> Json:
    """The HTTP filter entry istiod would build for this WasmPlugin (inline instead of ECDS)."""
    spec = res.spec
    if str(spec.get("type") or "HTTP") not in ("HTTP", "UNSPECIFIED_PLUGIN_TYPE"):
        raise _error(res, f"type {spec.get('type')} is not supported (HTTP plugins only)", "spec.type",
                     "use an HTTP plugin (type: HTTP)")
    fail = str(spec.get("failStrategy") or "FAIL_CLOSE")
    if fail not in FAILURE:
        raise _error(res, f"unknown failStrategy {fail!r}", "spec.failStrategy",
                     "use FAIL_CLOSE, FAIL_OPEN or FAIL_RELOAD")
    entry = filter_entry.wasm_filter(filter_name(res), module_path(res, fetch),
                                     plugin_name=f"{res.namespace}.{res.name}", root_id=spec.get("pluginName") or None,
                                     failure_policy=FAILURE[fail],
                                     config=spec.get("pluginConfig") or None)
    env = (spec.get("vmConfig") or {}).get("env") or []
    if env:
        values = {e["name"]: str(e.get("value", "")) for e in env if e.get("valueFrom", "INLINE") == "INLINE"}
        host = [e["name"] for e in env if e.get("valueFrom") == "HOST"]
        variables: Json = {}
        if host:
            variables["host_env_keys"] = host
        if values:
            variables["key_values"] = values
        entry["typed_config"]["config"]["vm_config"]["environment_variables"] = variables
    return entry


def _traffic_matches(res: Resource, context: str, port: int) -> bool:
    """match[]: any selector whose mode covers this traffic and whose ports (if any) include `port`."""
    selectors = res.spec.get("match") or []
    if not selectors:
        return True
    for sel in selectors:
        mode = str(sel.get("mode") or "UNDEFINED")
        if mode not in ("UNDEFINED", "CLIENT_AND_SERVER") and mode not in MODES[context]:
            continue
        ports = [int(p.get("number") or 0) for p in sel.get("ports") or []]
        if not ports or port in ports:
            return True
    return False


def plugins_for(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    """The WasmPlugins reaching `proxy`, in placement order within a phase: priority descending, the
    root namespace's first, then load order."""
    chosen = [(-int(r.spec.get("priority") or 0), r.namespace != ROOT_NAMESPACE, i, r)
              for i, r in enumerate(mesh.wasm_plugins)
              if reaches(mesh, r, proxy, (r.spec.get("selector") or {}).get("matchLabels"), "targetRefs")]
    return [r for *_, r in sorted(chosen, key=lambda t: t[:3])]


def _phase(res: Resource) -> str:
    phase = str(res.spec.get("phase") or "UNSPECIFIED_PHASE")
    return "UNSPECIFIED" if phase == "UNSPECIFIED_PHASE" else phase


def _place(hcm: Json, entries: list[tuple[str, Json]]) -> None:
    filters = list(hcm.get("http_filters") or [])
    for phase in PHASES:
        batch = [copy.deepcopy(e) for p, e in entries if p == phase]
        if batch:
            i = phase_index(filters, phase)
            filters = filters[:i] + batch + filters[i:]
    hcm["http_filters"] = filters


def _listener_port(listener: Json) -> int:
    return int(((listener.get("address") or {}).get("socket_address") or {}).get("port_value") or 0)


def apply(mesh: Mesh, config: ProxyConfig, fetch: Fetch | None = None) -> ProxyConfig:
    """`config` with every WasmPlugin that reaches its proxy placed in its HTTP connection managers (a
    new ProxyConfig). `fetch(url, sha256)` returns a local file for an oci:// or http(s):// url."""
    plugins = plugins_for(mesh, config.proxy)
    if not plugins:
        return config  # nothing to place: no copy (a 1,000-service sidecar's config is megabytes)
    out = copy.deepcopy(config)
    entries = {r.key: (_phase(r), wasm_entry(r, fetch)) for r in plugins}
    for lis in out.listeners:
        context = listener_context(config.proxy, lis)
        if context is None:
            continue
        chains = list(lis.get("filter_chains") or [])
        if isinstance(lis.get("default_filter_chain"), dict):
            chains.append(lis["default_filter_chain"])
        for fc in chains:
            port = int((fc.get("filter_chain_match") or {}).get("destination_port") or 0) \
                if lis.get("name") == VIRTUAL_INBOUND else _listener_port(lis)
            chosen = [entries[r.key] for r in plugins if _traffic_matches(r, context, port)]
            if not chosen:
                continue
            for f in fc.get("filters") or []:
                if f.get("name") == HCM and isinstance(f.get("typed_config"), dict):
                    _place(f["typed_config"], chosen)
    return out
