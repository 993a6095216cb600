"""A small Python API for testing a Lua filter in process, as Envoy 1.40 would run it.

    from envoyext.lua.api import LuaFilter

    with LuaFilter("filters/auth.lua", clusters={"auth": {"status": 200, "headers": {"x-user": "alice"}}}) as f:
        r = f.request("GET", "/things", headers={"authorization": "Bearer t"})
        assert r.status == 200
        assert r.upstream_header("x-user") == "alice"         # what the upstream received
        assert r.clusters["auth"][0].path == "/check"         # what the callout cluster received
        assert "denied" not in r.log_text
        assert f.stats()["http.ingress_http.lua.errors"] == 0

`LuaFilter(script_or_path, *, code=None, config=None, name=..., routes=None, clusters=None,
upstream=None, lua_config=None, libraries=())`: `script_or_path` is a .lua path (or pass the source as `code=`);
`config` is the filter's JSON config (visible to the script as `envoyext_config`, as in Envoy);
`routes`, `clusters` and `upstream` take the scenario format (YAML-shaped dicts: route metadata,
per_filter_config as LuaPerRoute, canned or echo upstreams); `lua_config` the rest of the Lua
filter proto (`source_codes`, `stat_prefix`, `clear_route_cache`); `libraries` the Lua libraries to
append (filter.yaml's `lua_libraries`, e.g. ["pw_match"]), globals for envoy_on_request/response.

`request(method, path, headers=None, body=b"", trailers=None, authority="example.com")` runs one
request through the emulated Envoy (connection manager, envoy_on_request, route, upstream,
envoy_on_response) and returns an `Exchange`: status, headers, body, upstream (list of Received),
clusters ({name: [Received]}), logs (this request's LogLines), stats (this request's deltas).
Script errors never raise: they are counted and logged, as in Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoyext.artifact import Artifact, check_lua_libraries
from envoyext.emulated.connection_manager import EmulatedEnvoy
from envoyext.lua.emulator import LuaFilterHost
from envoyext.scenario import UPSTREAM, Case, LogLine, Received, Request, first, from_dict, header_list


def _header(headers, name: str) -> str | None:
    return first(headers, name.lower())


@dataclass
class Exchange:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    upstream: list[Received] = field(default_factory=list)
    clusters: dict[str, list[Received]] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A response header (the first value)."""
        return _header(self.headers, name)

    def upstream_header(self, name: str) -> str | None:
        """A header of the last request the upstream received (None if it received none)."""
        return _header(self.upstream[-1].headers, name) if self.upstream else None

    @property
    def log_text(self) -> str:
        return "\n".join(f"{l.level}: {l.message}" for l in self.logs)


class LuaFilter:
    def __init__(self, script: str | Path | None = None, *, code: str | None = None, config: Any = None,
                 name: str = "envoy.filters.http.lua", routes: list[dict] | None = None,
                 clusters: dict[str, dict] | None = None, upstream: dict | None = None,
                 lua_config: dict | None = None, libraries: list[str] | tuple[str, ...] = ()):
        if script is None and code is None:
            raise ValueError("give a script path or code=")
        libraries = check_lua_libraries(libraries, field="libraries")
        path = Path(script) if script is not None else Path(f"<{name}>.lua")
        data: dict[str, Any] = {"cases": []}
        if routes:
            data["routes"] = routes
        if clusters:
            data["clusters"] = clusters
        if upstream:
            data["upstream"] = upstream
        self.scenario = from_dict(data, path.parent / "api.yaml")
        self.env = EmulatedEnvoy(self.scenario)
        self.host = LuaFilterHost(Artifact("lua", path, name, lua_libraries=libraries), config, self.env,
                                  lua_config=lua_config, source=code)

    def __enter__(self) -> "LuaFilter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str = "GET", path: str = "/", headers: dict | list | None = None,
                body: bytes | str = b"", trailers: dict | list | None = None,
                authority: str = "example.com") -> Exchange:
        hs = headers if isinstance(headers, list) else header_list(headers)
        ts = trailers if isinstance(trailers, list) else header_list(trailers)
        raw = body.encode() if isinstance(body, str) else body
        case = Case("api", Request(method, path, authority, hs, raw, ts), {})
        before = self.host.stats()
        self.host.take_logs()
        self.env.take_received()
        resp = self.env.request(self.host, case)
        self.env.clock.advance_ms(1)
        received = self.env.take_received()
        after = self.host.stats()
        return Exchange(resp.status, resp.headers, resp.body, upstream=received.pop(UPSTREAM, []),
                        clusters={k: v for k, v in received.items() if v}, logs=self.host.take_logs(),
                        stats={k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})

    def stats(self) -> dict[str, int]:
        """Cumulative filter stats under Envoy's admin names (http.ingress_http.lua.*)."""
        return self.host.stats()

    def close(self) -> None:
        self.host.close()
