"""A built filter, ready to load: what every runner (emulated, live, mesh) and publish consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from envoyext.envoy.xds import ROUTER_NAME
from envoyext.errors import UserError


class FailurePolicy(str, Enum):
    """Wasm: what a VM failure does to traffic (filter.yaml's `failure_policy`; Envoy's
    PluginConfig.failure_policy, Istio's WasmPlugin failStrategy)."""
    FAIL_CLOSED = "fail_closed"   # every request is answered 503
    FAIL_OPEN = "fail_open"       # the filter is skipped
    RELOAD = "reload"             # a fresh VM serves the next stream

    def __str__(self) -> str:
        return self.value  # as filter.yaml spells it, in messages and f-strings

    @property
    def envoy(self) -> str:
        """Its name in Envoy's config (envoy.extensions.wasm.v3.FailurePolicy)."""
        return {"fail_closed": "FAIL_CLOSED", "fail_open": "FAIL_OPEN", "reload": "FAIL_RELOAD"}[self.value]


@dataclass(frozen=True)
class Attach:
    """Where the filter goes in an HTTP filter chain (filter.yaml's `attach`): before or after the
    named filter, or first or last. What publishing (EnvoyFilter patches, WasmPlugin phases) places
    it by; the test bootstrap puts it before the router."""
    position: Literal["before", "after", "first", "last"] = "before"
    filter: str = ROUTER_NAME


@dataclass(frozen=True)
class Artifact:
    kind: Literal["lua", "wasm"]
    path: Path                 # the .lua script or the .wasm module
    name: str                  # filter name; for Wasm also the plugin name
    root_id: str = ""          # Wasm: root context id the plugin is configured under
    vm_id: str = ""            # Wasm: VMs with the same vm_id share shared data and queues
    config: Any = None         # default JSON configuration (a scenario's `config` overrides it)
    failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED   # Wasm: what a VM failure does to traffic
    attach: Attach = field(default_factory=Attach)              # where it goes in an HTTP filter chain
    # Lua: the rest of Envoy's Lua filter config, in its proto's shape: stat_prefix,
    # clear_route_cache, source_codes {name: {"filename": absolute path}}; default_source_code:
    # False when the filter has none (then `path` is its first named script).
    lua_options: dict[str, Any] | None = None
    # Envoy stats_config.stats_tags: which parts of the filter's stat names become Prometheus labels.
    stats_tags: tuple[dict[str, Any], ...] = ()
    # Lua: the libraries (envoyext/sdk/<name>.lua) lua_code appends to every script of the filter.
    lua_libraries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # filter.yaml's spelling ("fail_open") is accepted wherever an Artifact is made.
        object.__setattr__(self, "failure_policy", FailurePolicy(self.failure_policy))

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


# Lua libraries: envoyext/sdk/<name>.lua, each a chunk that returns its module table. Envoy takes
# a Lua filter as one inline script (no require, no files), so a filter's declared libraries are
# appended to the script itself.
LUA_LIBRARY_DIR = Path(__file__).resolve().parent / "sdk"


def lua_library_names() -> list[str]:
    return sorted(p.stem for p in LUA_LIBRARY_DIR.glob("*.lua"))


def check_lua_libraries(names: Any, *, file: Path | None = None, field: str = "lua_libraries") -> tuple[str, ...]:
    """The declared library names, or a UserError naming the first unknown one (`field[i]`)."""
    available = lua_library_names()
    for i, name in enumerate(names):
        if name not in available:
            raise UserError(f"unknown Lua library {name!r}", file=file, field=f"{field}[{i}]",
                            fix=f"use one of: {', '.join(available)}")
    return tuple(names)


def lua_code(source: str, config: Any, libraries: tuple[str, ...] | list[str] = ()) -> str:
    """The exact script Envoy runs (and the emulator, and publish emit) for this config and these
    libraries. Each library becomes a global after the user's code, so every user line keeps its
    number (in errors too); being defined after the script's top level ran, a library's global is
    there only for functions that run per request (envoy_on_request/envoy_on_response), never for
    the script's top level: build what needs it on first use."""
    if config is not None:
        source = f"{LUA_CONFIG_GLOBAL} = {to_lua(config)}; {source}"
    for name in libraries:
        body = (LUA_LIBRARY_DIR / f"{name}.lua").read_text()
        source += f"\n{name} = (function()\n{body}\nend)()\n"
    return source
