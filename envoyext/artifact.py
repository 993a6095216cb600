"""A built filter, ready to load: what every runner (emulated, live, mesh) and publish consume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Artifact:
    kind: Literal["lua", "wasm"]
    path: Path                 # the .lua script or the .wasm module
    name: str                  # filter name; for Wasm also the plugin name
    root_id: str = ""          # Wasm: root context id the plugin is configured under
    vm_id: str = ""            # Wasm: VMs with the same vm_id share shared data and queues
    config: Any = None         # default JSON configuration (a scenario's `config` overrides it)
    # Wasm: what a VM failure does to traffic: fail_closed (503), fail_open (skip the filter) or
    # reload (a fresh VM). Envoy's PluginConfig.failure_policy; Istio's WasmPlugin failStrategy.
    failure_policy: str = "fail_closed"
    # Lua: the rest of Envoy's Lua filter config, in its proto's shape: stat_prefix,
    # clear_route_cache, source_codes {name: {"filename": absolute path}}; default_source_code:
    # False when the filter has none (then `path` is its first named script).
    lua_options: dict | None = None
    # Envoy stats_config.stats_tags: which parts of the filter's stat names become Prometheus labels.
    stats_tags: tuple = ()

    @property
    def fail_open(self) -> bool:
        return self.failure_policy == "fail_open"

    @property
    def has_default_script(self) -> bool:
        """Lua: whether `path` is Envoy's default_source_code. A filter.yaml with no `sources`
        has none: only routes whose LuaPerRoute names a script (or holds one) run any."""
        return (self.lua_options or {}).get("default_source_code", True) is not False

    @property
    def filter_name(self) -> str:
        """The name in the HTTP filter chain (Lua route metadata is looked up under it)."""
        return self.name


# Envoy's Lua filter has no configuration field for the script itself, so a Lua filter's JSON
# configuration is handed over the way Istio users inline it: as Lua data in the script. The
# assignment goes in front of the user's first line, on that same line, so the global is set before
# any of the user's code runs and every line keeps its number. Envoy loads the script with
# luaL_dostring, which names the chunk after its first line: errors read
# `[string "envoyext_config = ..."]:LINE:` in Envoy and the emulator alike (which load this same text).
LUA_CONFIG_GLOBAL = "envoyext_config"


def to_lua(value: Any) -> str:
    """A JSON value as a Lua expression (objects become tables with string keys)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_lua_char(c) for c in value) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def _lua_char(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if c == "\n":
        return "\\n"
    if ord(c) < 32 or ord(c) == 127:
        # Fixed width: a shorter decimal escape would swallow the digits that follow ("\\1" "23").
        return f"\\{ord(c):03d}"
    return c


def lua_code(source: str, config: Any) -> str:
    """The exact script Envoy runs (and the emulator, and publish emit) for this config."""
    if config is None:
        return source
    return f"{LUA_CONFIG_GLOBAL} = {to_lua(config)}; {source}"
