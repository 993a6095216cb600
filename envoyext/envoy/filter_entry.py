"""How a filter receives its configuration in Envoy: the Lua and the Wasm HTTP filter entries side
by side, and their per-route configs.

One rule each, used by every config that carries a filter (the single-filter test bootstrap today;
mesh sidecars and published snippets next), and by the Wasm emulator for the bytes it hands a plugin:
- Lua: Envoy's Lua filter has no configuration field, so the JSON configuration is Lua data put in
  front of every script and its declared libraries after it (`artifact.lua_code`), inlined as Istio's
  EnvoyFilter carries it: the default
  script as default_source_code, named scripts as source_codes, the rest of the `lua:` block as is.
  Per route: LuaPerRoute.
- Wasm: the configuration is the plugin's configuration, a StringValue (a string as is, else compact
  JSON), next to root_id, vm_id and failure_policy. Per route: whatever typed config is given.
- Any filter: the per-route FilterConfig `disabled: true` turns it off for the route.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envoyext.artifact import Artifact, FailurePolicy, lua_code
from envoyext.envoy.xds import FILTER_CONFIG, LUA, LUA_PER_ROUTE, STRING_VALUE, WASM, Json, http_filter
from envoyext.errors import UserError

WASM_RUNTIME = "envoy.wasm.runtime.v8"


def plugin_configuration_text(config: Any) -> str | None:
    """The bytes a Wasm plugin receives as its configuration: a string as is, else compact JSON.
    The emulator hands its plugins exactly this too."""
    if config is None:
        return None
    return config if isinstance(config, str) else json.dumps(config, separators=(",", ":"), sort_keys=True)


def lua_filter(name: str, *, default_source: str | None = None, source_codes: dict[str, str] | None = None,
               **options: Any) -> Json:
    """A Lua filter entry with inline scripts (the code as Envoy runs it); `options` are the rest of
    envoy.extensions.filters.http.lua.v3.Lua as Envoy spells them (stat_prefix, clear_route_cache)."""
    typed: Json = {"@type": LUA}
    if default_source is not None:
        typed["default_source_code"] = {"inline_string": default_source}
    typed.update(options)
    if source_codes:
        typed["source_codes"] = {key: {"inline_string": code} for key, code in source_codes.items()}
    return http_filter(name, typed)


def remote_code(url: str, sha256: str, cluster: str, timeout: str = "30s") -> Json:
    """A Wasm VM's code fetched by Envoy (config.core.v3.AsyncDataSource `remote`, a RemoteDataSource):
    `url` over the named `cluster`, checked against `sha256` (required by Envoy for a remote source)."""
    return {"remote": {"http_uri": {"uri": url, "cluster": cluster, "timeout": timeout}, "sha256": sha256}}


def wasm_filter(name: str, module: Path | str, *, plugin_name: str | None = None, root_id: str | None = None,
                vm_id: str | None = None, failure_policy: FailurePolicy | str | None = None,
                config: Any = None, code: Json | None = None) -> Json:
    """A Wasm filter entry running the local `module` in V8 (or `code`, e.g. `remote_code(...)`);
    `failure_policy` as filter.yaml spells it (fail_closed, fail_open, reload), `config` the plugin
    configuration (see above)."""
    plugin: Json = {"name": plugin_name if plugin_name is not None else name}
    if root_id is not None:
        plugin["root_id"] = root_id
    vm_config: Json = {} if vm_id is None else {"vm_id": vm_id}
    vm_config.update(runtime=WASM_RUNTIME, code=code or {"local": {"filename": str(module)}})
    plugin["vm_config"] = vm_config
    if failure_policy is not None:
        plugin["failure_policy"] = FailurePolicy(failure_policy).envoy
    text = plugin_configuration_text(config)
    if text is not None:
        plugin["configuration"] = {"@type": STRING_VALUE, "value": text}
    return http_filter(name, {"@type": WASM, "config": plugin})


def for_artifact(artifact: Artifact, config: Any, lua_source: str | None = None, wasm_code: Json | None = None) -> Json:
    """The built filter as an entry of HttpConnectionManager.http_filters, configured with `config`
    (`lua_source` stands in for the script file's text; `wasm_code` for the local module, e.g. a
    `remote_code`)."""
    if artifact.kind == "lua":
        options = dict(artifact.lua_options or {})
        named = options.pop("source_codes", None) or {}
        options.pop("default_source_code", None)
        default = None
        if artifact.has_default_script:
            source = lua_source if lua_source is not None else artifact.path.read_text()
            default = lua_code(source, config, artifact.lua_libraries)
        # Every script gets the same config, whichever one a route selects.
        scripts = {key: lua_code(Path(ds["filename"]).read_text(), config, artifact.lua_libraries)
                   for key, ds in named.items()}
        return lua_filter(artifact.filter_name, default_source=default, source_codes=scripts, **options)
    return wasm_filter(artifact.filter_name, artifact.path, plugin_name=artifact.name, root_id=artifact.root_id,
                       vm_id=artifact.vm_id, failure_policy=artifact.failure_policy, config=config,
                       code=wasm_code)


def per_route(artifact: Artifact, value: Any, field: str) -> Json:
    """A route's config for the filter: typed as given ("@type"), or LuaPerRoute for a Lua filter;
    `field` names where `value` came from, for the error."""
    if isinstance(value, dict) and "@type" in value:
        return value
    if artifact.kind == "lua" and isinstance(value, dict):
        return {"@type": LUA_PER_ROUTE, **value}
    raise UserError("a Wasm filter's per-route config has no type", field=field,
                    fix="give it an '@type' (Envoy's typed per-filter config for this filter)")


def disabled() -> Json:
    """Per-route config that turns any filter off for the route (envoy.config.route.v3.FilterConfig)."""
    return {"@type": FILTER_CONFIG, "disabled": True}
