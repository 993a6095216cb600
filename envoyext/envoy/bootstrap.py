"""Pure: (filter artifact, scenario, addresses) -> an Envoy bootstrap as a dict.

Names follow Envoy's: one listener `envoyext` whose HTTP connection manager has stat_prefix
`ingress_http`, route config `local_route`, and one STATIC cluster per scenario cluster under the
scenario's name (`upstream` for the default). Nothing here touches files, sockets or processes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envoyext.artifact import Artifact, lua_code
from envoyext.errors import UserError
from envoyext.scenario import Route, Scenario

STAT_PREFIX = "ingress_http"
T = "type.googleapis.com/"
HCM = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
LUA = T + "envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE = T + "envoy.extensions.filters.http.lua.v3.LuaPerRoute"
WASM = T + "envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER = T + "envoy.extensions.filters.http.router.v3.Router"
STRING_VALUE = T + "google.protobuf.StringValue"
WASM_RUNTIME = "envoy.wasm.runtime.v8"


def plugin_configuration_text(config: Any) -> str | None:
    """The bytes a Wasm plugin receives as its configuration: a string as is, else compact JSON.
    The emulator hands its plugins exactly this too."""
    if config is None:
        return None
    return config if isinstance(config, str) else json.dumps(config, separators=(",", ":"), sort_keys=True)


def plugin_configuration(config: Any) -> dict | None:
    text = plugin_configuration_text(config)
    return None if text is None else {"@type": STRING_VALUE, "value": text}


def filter_config(artifact: Artifact, config: Any, lua_source: str | None = None) -> dict:
    """The filter under test as an entry of HttpConnectionManager.http_filters.

    A Lua filter is inlined, as Istio's EnvoyFilter carries it, with its config appended."""
    if artifact.kind == "lua":
        typed: dict[str, Any] = {"@type": LUA}
        if artifact.has_default_script:
            code = lua_code(lua_source if lua_source is not None else artifact.path.read_text(), config)
            typed["default_source_code"] = {"inline_string": code}
        options = dict(artifact.lua_options or {})
        named = options.pop("source_codes", None)
        options.pop("default_source_code", None)
        typed.update(options)
        if named:  # every script gets the same config, whichever one a route selects
            typed["source_codes"] = {name: {"inline_string": lua_code(Path(ds["filename"]).read_text(), config)}
                                     for name, ds in named.items()}
        return {"name": artifact.filter_name, "typed_config": typed}
    plugin = {
        "name": artifact.name,
        "root_id": artifact.root_id,
        "vm_config": {"vm_id": artifact.vm_id, "runtime": WASM_RUNTIME,
                      "code": {"local": {"filename": str(artifact.path)}}},
        "failure_policy": artifact.failure_policy.envoy,
    }
    cfg = plugin_configuration(config)
    if cfg is not None:
        plugin["configuration"] = cfg
    return {"name": artifact.filter_name, "typed_config": {"@type": WASM, "config": plugin}}


def per_filter_config(artifact: Artifact | None, route: Route) -> dict:
    """A route's per-filter config: typed as given, or LuaPerRoute for a Lua filter."""
    value = route.per_filter_config
    if isinstance(value, dict) and "@type" in value:
        return value
    if artifact is not None and artifact.kind == "lua" and isinstance(value, dict):
        return {"@type": LUA_PER_ROUTE, **value}
    raise UserError("a Wasm filter's per-route config has no type", field=f"routes.{route.name}.per_filter_config",
                    fix="give it an '@type' (Envoy's typed per-filter config for this filter)")


def route_entry(route: Route, artifact: Artifact | None) -> dict:
    match = {k: v for k, v in route.match.items() if k in ("prefix", "path", "connect_matcher")}
    if not match:
        match["prefix"] = "/"
    if "headers" in route.match:
        match["headers"] = [{"name": k, "string_match": {"exact": str(v)}}
                            for k, v in route.match["headers"].items()]
    entry: dict[str, Any] = {"name": route.name, "match": match}
    if route.direct_response is not None:
        d = route.direct_response
        entry["direct_response"] = {"status": d["status"]}
        if d.get("body"):
            entry["direct_response"]["body"] = {"inline_string": d["body"]}
    else:
        action: dict[str, Any] = {"cluster": route.cluster}
        if route.timeout_ms is not None:
            action["timeout"] = f"{route.timeout_ms / 1000:.3f}s"
        if route.upgrade_configs:
            action["upgrade_configs"] = route.upgrade_configs
        entry["route"] = action
    if route.metadata and artifact is not None:
        entry["metadata"] = {"filter_metadata": route.filter_metadata(artifact.filter_name)}
    if route.per_filter_config is not None and artifact is not None:
        entry["typed_per_filter_config"] = {
            artifact.filter_name: per_filter_config(artifact, route)}
    return entry


def cluster(name: str, address: tuple[str, int]) -> dict:
    host, port = address
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }


def http_filters(artifact: Artifact | None, scenario: Scenario, oracle: bool) -> list[dict]:
    if oracle:
        filters = [dict(f) for f in scenario.oracle.http_filters]
    else:
        filters = [filter_config(artifact, scenario.config)]
    return filters + [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]


def build(artifact: Artifact | None, scenario: Scenario, addresses: dict[str, tuple[str, int]],
          *, listen: tuple[str, int] = ("127.0.0.1", 0), admin: tuple[str, int] = ("127.0.0.1", 0),
          oracle: bool = False) -> dict:
    """The whole bootstrap. `oracle` swaps the filter under test for the scenario's native filters."""
    subject = None if oracle else artifact
    virtual_host: dict[str, Any] = {"name": "local", "domains": ["*"],
                                    "routes": [route_entry(r, subject) for r in scenario.routes]}
    if oracle and scenario.oracle.typed_per_filter_config:
        virtual_host["typed_per_filter_config"] = scenario.oracle.typed_per_filter_config
    hcm = {
        "@type": HCM,
        "stat_prefix": STAT_PREFIX,
        "codec_type": "AUTO",
        # Trailers over HTTP/1.1 reach filters only when the codec is told to keep them.
        "http_protocol_options": {"enable_trailers": True},
        "route_config": {"name": "local_route", "virtual_hosts": [virtual_host]},
        "http_filters": http_filters(artifact, scenario, oracle),
    }
    config: dict[str, Any] = {
        "node": {"id": "envoyext", "cluster": "envoyext"},
        # Histograms reach /stats/prometheus only after a flush; let each admin scrape flush.
        "stats_flush_on_admin": True,
        "admin": {"address": {"socket_address": {"address": admin[0], "port_value": admin[1]}}},
        "static_resources": {
            "listeners": [{
                "name": "envoyext",
                "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{"filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [cluster(name, addresses[name]) for name in scenario.all_clusters()],
        },
    }
    if artifact is not None and artifact.stats_tags:
        config["stats_config"] = {"stats_tags": list(artifact.stats_tags), "use_all_default_tags": True}
    return config
