"""A published filter resource (what `envoyext publish` wrote, or any EnvoyFilter/WasmPlugin that
carries one filter) read back as the place a filter's own scenario runs in the mesh.

`envoyext mesh test --filter FILE --scenario S` runs S's cases through the proxy that FILE
selects, with the filter coming from FILE itself and nothing attached by envoyext: what is tested
is what a cluster would apply. From the resource:
- the workload: the one Deployment whose pods its selector (workloadSelector / selector) picks;
- the side: the EnvoyFilter's match context, or the WasmPlugin's match mode (SERVER: inbound,
  CLIENT: outbound);
- the configuration it carries, which must be the scenario's (a scenario that configures the
  filter otherwise would be judged against a filter it did not configure: refused, with the fix).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envoyext.artifact import LUA_CONFIG_GLOBAL, to_lua
from envoyext.errors import UserError
from envoyext.mesh.model import ROOT_NAMESPACE, Mesh, Resource, selects

INBOUND, OUTBOUND = "SIDECAR_INBOUND", "SIDECAR_OUTBOUND"
KINDS = ("EnvoyFilter", "WasmPlugin")
MODE_CONTEXT = {"SERVER": INBOUND, "CLIENT": OUTBOUND}


def the_filter(resources: list[Resource], file: Path) -> Resource:
    """The one EnvoyFilter or WasmPlugin of the published file."""
    found = [r for r in resources if r.kind in KINDS]
    if len(found) != 1 or len(resources) != 1:
        kinds = ", ".join(r.kind for r in resources) or "nothing"
        raise UserError(f"a published filter is one EnvoyFilter or WasmPlugin; this file holds {kinds}", file=file,
                        field="kind", fix="pass the file `envoyext publish -o FILE` wrote (one resource)")
    return found[0]


def context(res: Resource) -> str:
    """Which side of the selected proxies the filter is on."""
    if res.kind == "WasmPlugin":
        modes = {str(m.get("mode") or "CLIENT_AND_SERVER") for m in res.spec.get("match") or [{}]}
        sides = {MODE_CONTEXT.get(m) for m in modes}
        if len(sides) != 1 or None in sides:
            raise _error(res, f"its match mode ({', '.join(sorted(modes))}) puts the filter on both sides",
                         "spec.match[0].mode", "publish for one side: --context SIDECAR_INBOUND or SIDECAR_OUTBOUND")
        return sides.pop()  # type: ignore[return-value]
    contexts = {str((p.get("match") or {}).get("context") or "ANY") for p in res.spec.get("configPatches") or []}
    if len(contexts) != 1 or next(iter(contexts)) not in (INBOUND, OUTBOUND):
        raise _error(res, f"its patches apply in {', '.join(sorted(contexts)) or 'no context'}",
                     "spec.configPatches[0].match.context",
                     "publish for one sidecar side: --context SIDECAR_INBOUND or SIDECAR_OUTBOUND")
    return contexts.pop()


def workload(res: Resource, mesh: Mesh) -> str:
    """The one Deployment the resource selects (its namespace's, or every namespace's from the root)."""
    labels = (res.spec.get("workloadSelector") or {}).get("labels") if res.kind == "EnvoyFilter" \
        else (res.spec.get("selector") or {}).get("matchLabels")
    root = res.namespace == ROOT_NAMESPACE
    chosen = sorted({w.deployment for w in mesh.workloads if not w.gateway
                     and (root or w.namespace == res.namespace) and selects(labels or {}, w.labels)})
    field = "spec.workloadSelector.labels" if res.kind == "EnvoyFilter" else "spec.selector.matchLabels"
    if len(chosen) != 1:
        which = ", ".join(chosen) if chosen else "none"
        raise _error(res, f"selects {len(chosen)} workloads of the mesh ({which}); a scenario's cases go to one",
                     field, "publish with --selector naming one Deployment's labels, e.g. app=productpage")
    return chosen[0]


def check_config(res: Resource, config: Any, scenario_file: Path) -> None:
    """Refuse a scenario whose filter configuration is not the one the resource carries. A scenario
    without `config:` takes whatever the resource carries (the project's default when published)."""
    if config is None:
        return
    carried, field = _carried(res)
    if carried is not None and config == carried:
        return
    raise UserError(f"the scenario configures the filter differently from the published {res.kind} "
                    f"({res.file}, {field})", file=scenario_file, field="config",
                    fix=f"publish the filter for this scenario: envoyext publish --scenario {scenario_file} -o FILE")


def _carried(res: Resource) -> tuple[Any, str]:
    """The configuration the resource hands the filter, as a scenario would write it (None: unknown)."""
    if res.kind == "WasmPlugin":
        cfg = res.spec.get("pluginConfig")
        if isinstance(cfg, dict) and set(cfg) == {"value"}:    # publish wraps a non-object config so
            cfg = cfg["value"]
        return cfg, "spec.pluginConfig"
    for i, patch in enumerate(res.spec.get("configPatches") or []):
        typed = ((patch.get("patch") or {}).get("value") or {}).get("typed_config") or {}
        field = f"spec.configPatches[{i}].patch.value.typed_config"
        if "config" in typed:       # Wasm: the StringValue configuration (filter_entry writes JSON)
            text = ((typed["config"].get("configuration") or {}).get("value"))
            return (_json_or_text(text) if text is not None else None), field
        source = (typed.get("default_source_code") or {}).get("inline_string")
        if isinstance(source, str):
            return _lua_config(source), field + ".default_source_code"
    return None, "spec.configPatches"


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class _LuaConfig:
    """Compares equal to a config whose Lua rendering prefixes the script (artifact.lua_code)."""

    def __init__(self, source: str):
        self.source = source

    def __eq__(self, config: object) -> bool:
        return self.source.startswith(f"{LUA_CONFIG_GLOBAL} = {to_lua(config)}; ")

    __hash__ = None  # type: ignore[assignment]


def _lua_config(source: str) -> Any:
    return _LuaConfig(source) if source.startswith(f"{LUA_CONFIG_GLOBAL} = ") else None


def attach(res: Resource, mesh: Mesh, file: Path) -> dict[str, Any]:
    """The attach block the mesh runner and envoyext.mesh.filtercase read, for this resource."""
    return {"workload": workload(res, mesh), "context": context(res), "file": str(file)}


def _error(res: Resource, message: str, field: str, fix: str) -> UserError:
    return UserError(f"{res.kind} {res.namespace}/{res.name}: {message}", file=res.file, field=field, fix=fix)
