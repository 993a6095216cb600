"""The Lua filter host for the emulated Envoy (`envoyext.emulated`).

`LuaFilterHost` is one `envoy.filters.http.lua` filter configuration: the default script (the
artifact, with the scenario's JSON config set as `envoyext_config = ...` on its first line by
artifact.lua_code, its declared libraries appended, exactly as the live bootstrap inlines it),
named `source_codes`, and the
per-route `LuaPerRoute` configs of the scenario's routes, each in its own LuaJIT state.
`LuaStreamFilter` runs one stream through it as Envoy's Lua filter does: envoy_on_request over
the request, envoy_on_response over the response (local replies included), script errors counted
and logged and the stream let through.

The rest of the Lua filter proto (`source_codes`, `stat_prefix`, `clear_route_cache`) comes from
`filter.yaml`'s `lua:` block as `Artifact.lua_options`; `lua_config` overrides it (tests, the Python
API). Every named script gets the JSON config as the default one does, exactly as
`envoyext.envoy.filter_entry.for_artifact` inlines them for live Envoy. A filter without a default
script (`default_source_code` absent) runs only the scripts routes select.

Lua states and workers: Envoy keeps one lua_State per script per worker (the live runner starts
as many workers as `workers` says, 1 by default), so globals a script keeps between streams are
per worker, and which worker a connection lands on is the kernel's choice. The emulator keeps one
state per script, as if every connection landed on the same worker: with more workers, a script
whose behaviour depends on globals carried across streams (caches, counters in Lua variables) can
see fewer streams per state live than here. Stats
(`handle:stats()`, errors, executions) are process-wide in Envoy and here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envoyext.artifact import Artifact, lua_code
from envoyext.emulated.router import CONNECT_FAILURE_BODY, DEFAULT_ROUTE_TIMEOUT_MS, TIMEOUT_BODY
from envoyext.emulated.stream import Envoy, LocalReply, Stream
from envoyext.envoy.facts import disabled_by_route
from envoyext.errors import UserError
from envoyext.lua.host import Callouts, LuaScript, StatsStore, wire
from envoyext.scenario import LUA_FILTER_NAMESPACE, LogLine, Response, first

# What Envoy's async client hands a Lua httpCall when the cluster fails (observed on 1.40: these
# arrive through onSuccess as the router's local replies; "upstream failure" is only for resets).
CALLOUT_FAILURES = {
    "connection_failure": (503, CONNECT_FAILURE_BODY),
    "timeout": (504, TIMEOUT_BODY),
    "reset": (503, b"upstream failure"),
}


def read_source(spec: Any, base: Path | None, where: str) -> str:
    """A DataSource ({inline_string} or {filename}) -> code."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        if "inline_string" in spec:
            return spec["inline_string"]
        if "filename" in spec:
            p = Path(spec["filename"])
            if not p.is_absolute() and base is not None:
                p = base / p
            try:
                return p.read_text()
            except OSError as e:
                raise UserError(f"cannot read Lua source {p}: {e.strerror}", field=where) from e
    raise UserError("expected a DataSource with inline_string or filename", field=where)


def as_read(headers, body: bytes) -> bytes:
    """A response body as the downstream HTTP/1 client reads it. A script that rewrites body
    chunks after the headers went on (bodyChunks() + setBytes) leaves their content-length as it
    was: Envoy's codec writes every byte, the client stops at the length (observed: a 5-byte local
    reply rewritten to 28 bytes arrives as its first 5). A body made shorter than the length leaves
    the client waiting for the rest; the emulator cannot show that hang and passes the short body
    on. (Requests differ: the upstream connection is not open yet, so the new length goes out.)"""
    length = first(headers, "content-length")
    if length is not None and length.isdigit() and len(body) > int(length):
        return body[:int(length)]
    return body


def ssl_table(script: LuaScript, tls: dict[str, Any]):
    """The SSL object's facts (envoyext.envoy.peer_tls.connection_facts) as the runtime's
    SslConnection reads them: strings, numbers, booleans, plain arrays of strings, and the parsed
    subject as a table of its own."""
    def convert(v: Any):
        if isinstance(v, str):
            return wire(v)
        if isinstance(v, dict):
            return script.lua.table_from({wire(k): convert(x) for k, x in v.items()})
        if isinstance(v, (list, tuple)):
            return script.lua.table_from([convert(x) for x in v])
        return v
    return convert(tls)


class LuaFilterHost:
    def __init__(self, artifact: Artifact, config: Any, env: Envoy, lua_config: dict | None = None,
                 source: str | None = None):
        self.env = env
        self.filter_name = artifact.filter_name
        cfg = lua_config if lua_config is not None else (artifact.lua_options or {})
        stat_prefix = cfg.get("stat_prefix") or ""
        # The filter's stats live under "http.<HCM stat prefix>.lua.[<stat_prefix>.]" (Envoy 1.40 admin /stats).
        self.stat_prefix = f"{env.identity.hcm_stats}lua." + (f"{stat_prefix}." if stat_prefix else "")
        self.clear_route_cache = cfg.get("clear_route_cache", True)
        self.store = StatsStore(self.stat_prefix)
        self.callouts = Callouts(self._has_cluster, self._call, lambda: env.clock.ns // 1000, self.store)
        self.logs: list[LogLine] = []
        self.scripts: list[LuaScript] = []
        path = Path(artifact.path)
        self.default: LuaScript | None = None  # default_source_code absent: routes select scripts
        if source is not None or artifact.has_default_script:
            code = source if source is not None else path.read_text()
            self.default = self._load(lua_code(code, config, artifact.lua_libraries), str(path))
        base = Path(getattr(env.scenario, "path", ".")).parent
        self.named = {name: self._load(lua_code(read_source(spec, base, f"config.source_codes.{name}"), config,
                                                artifact.lua_libraries), name)
                      for name, spec in (cfg.get("source_codes") or {}).items()}
        # LuaPerRoute per route, resolved (and inline sources loaded) at configuration time.
        self.per_route: dict[str, tuple[LuaScript | None, dict]] = {}
        for route in env.scenario.routes:
            pfc = route.per_filter_config
            if pfc is None:
                continue
            if not isinstance(pfc, dict):
                raise UserError("per_filter_config for a Lua filter must be a LuaPerRoute mapping",
                                field=f"routes.{route.name}.per_filter_config")
            context = pfc.get("filter_context") or {}
            # LuaPerRoute {disabled: true} (the filter stays in the chain, idle) or Envoy's generic
            # FilterConfig {disabled: true} (left out of the chain): either way no script runs.
            if pfc.get("disabled") or disabled_by_route(pfc):
                script = None
            elif pfc.get("name"):
                # An unknown name runs nothing (perLuaCodeSetup returns null).
                script = self.named.get(pfc["name"])
            elif pfc.get("source_code") is not None:
                script = self._load(read_source(pfc["source_code"], base,
                                                f"routes.{route.name}.per_filter_config.source_code"),
                                    f"route {route.name}")
            else:
                script = self.default
            self.per_route[route.name] = (script, context)
        self._route_md: dict[tuple[int, str], Any] = {}

    def _load(self, code: str, source: str) -> LuaScript:
        script = LuaScript(code, self.callouts, source=source)
        self.scripts.append(script)
        return script

    # -- callouts -----------------------------------------------------------------------------------
    def _has_cluster(self, name: str) -> bool:
        return name in self.env.clusters

    def _call(self, ctx: "LuaStreamFilter", cluster, headers, body, timeout_ms, asynchronous):
        result = ctx.stream.call_cluster(cluster, headers, body, timeout_ms or None)
        if result.response is not None:
            r: Response = result.response
            # The router in front of the async client adds this one (observed).
            return r.status, list(r.headers) + [("x-envoy-upstream-service-time", "0")], r.body
        status, fail_body = CALLOUT_FAILURES.get(result.failure, CALLOUT_FAILURES["reset"])
        return status, [("content-length", str(len(fail_body))), ("content-type", "text/plain")], fail_body

    # -- FilterHost ----------------------------------------------------------------------------------
    def set_response_timeout(self, timeout_ms: int) -> None:
        """The scenario runner's per-case timeout: how long one call into a script may run."""
        for script in self.scripts:
            script.deadline_ms = timeout_ms

    def new_stream(self, stream: Stream) -> "LuaStreamFilter":
        return LuaStreamFilter(self, stream)

    def advance(self, env) -> None:
        pass  # Lua filters have no timers

    def take_logs(self) -> list[LogLine]:
        out, self.logs = self.logs, []
        return out

    def stats(self) -> dict[str, int]:
        errors = executions = 0
        for s in self.scripts:
            e, x = s.counters()
            errors += e
            executions += x
        out = self.store.values()
        out[self.stat_prefix + "errors"] = errors
        out[self.stat_prefix + "executions"] = executions
        return out

    def histograms(self) -> dict[str, list[float]]:
        """Every value recorded so far in each `handle:stats():histogram()`, by admin /stats name
        (a histogram created but never recorded into is listed with no values, as admin lists it)."""
        return {k: list(v) for k, v in self.store.histograms.items()}

    def close(self) -> None:
        self.scripts.clear()

    # -- per stream --------------------------------------------------------------------------------
    def script_for(self, route) -> tuple[LuaScript | None, dict]:
        """Filter::getPerLuaCodeSetup: the route's LuaPerRoute, else the default script."""
        if route is not None and route.name in self.per_route:
            return self.per_route[route.name]
        return self.default, {}

    def route_metadata(self, script: LuaScript, route) -> Any:
        """handle:metadata(): the route's filter_metadata under the filter's name, else under
        "envoy.filters.http.lua" (Envoy 1.40's order, measured)."""
        if route is None:
            return None
        key = (id(script), route.name)
        if key not in self._route_md:
            namespaces = route.filter_metadata(self.filter_name)
            md = namespaces.get(self.filter_name, namespaces.get(LUA_FILTER_NAMESPACE))
            self._route_md[key] = script.to_lua(md) if md else None
        return self._route_md[key]


class LuaStreamFilter:
    """One stream through the Lua filter."""

    def __init__(self, host: LuaFilterHost, stream: Stream):
        self.host = host
        self.stream = stream
        self.script: LuaScript | None = None
        self.lstream = None
        self.resolved = False
        self.drain = False

    def _setup(self, stream: Stream) -> None:
        if self.resolved:
            return
        self.resolved = True
        self.route = stream.route
        self.script, self.context = self.host.script_for(self.route)

    def stream_facts(self, script: LuaScript):
        """What streamInfo(), metadata() and connection() report, asked for once per stream."""
        # The route as it is now: a cleared route cache is selected again (the script stays the one
        # chosen when the request began, as Envoy keeps the filter's per-route config).
        stream = self.stream
        route = stream.route
        return ("HTTP/1.1", stream.downstream_local_address, stream.downstream_address, "",
                route.name if route is not None else "", self.host.route_metadata(script, route),
                script.to_lua(self.context) if self.context else None,
                # connection():ssl(): the downstream's Ssl::ConnectionInfo (envoyext.envoy.peer_tls), nil without TLS
                ssl_table(script, stream.tls) if stream.tls is not None else None)

    def request_headers(self) -> list[tuple[str, str]]:
        """The request's headers as the router sent them (handle:requestHeaders() in the response
        path): the router adds x-envoy-expected-rq-timeout-ms to the map itself (observed)."""
        stream = self.stream
        headers = list(stream.request_headers)
        route = stream.route if stream.routed else None
        if route is not None and route.direct_response is None:
            timeout = route.timeout_ms if route.timeout_ms is not None else DEFAULT_ROUTE_TIMEOUT_MS
            if timeout:
                headers.append(("x-envoy-expected-rq-timeout-ms", str(timeout)))
        return headers

    def _run(self, function: str, headers, body: bytes, trailers, split: bool = True):
        """One direction through the script (None when it has no such function), keeping what any
        run leaves for the filter: the Lua stream for the other direction, log lines, a drain."""
        res = self.script.run(function, self, self.lstream, headers, body or None, trailers or None, split)
        if res is not None:
            self.lstream = res.stream
            if res.logs:
                proxy = self.host.env.identity.name
                self.host.logs.extend(LogLine(level, msg, proxy) for level, msg in res.logs)
            self.drain = self.drain or res.drain
        return res

    def decode(self, stream: Stream) -> LocalReply | None:
        self._setup(stream)
        if self.script is None or not self.script.has_request:
            return None
        res = self._run("envoy_on_request", stream.request_headers, stream.request_body, stream.request_trailers)
        if res is None:
            return None
        if res.headers is not None:
            stream.request_headers = res.headers
        if res.body is not None:
            stream.request_body = res.body
        if res.trailers is not None:
            stream.request_trailers = res.trailers
        if res.clear_route == 2 or (res.clear_route and self.host.clear_route_cache):
            stream.clear_route_cache()
        if res.reply_status is not None:
            headers = [(k, v) for k, v in res.reply_headers if k != ":status"]
            body = res.reply_body or b""
            if body:
                # sendLocalReply sets content-length itself; the emulated Envoy does the same.
                headers = [(k, v) for k, v in headers if k != "content-length"]
            return LocalReply(res.reply_status, body, headers, details="lua_response")
        if res.override_strict and stream.route is not None and stream.route.direct_response is None:
            # setUpstreamOverrideHost(host, true): the router finds no such host in the test
            # cluster (its one endpoint is on an ephemeral port no script can know) and answers.
            stream.routed = True
            return LocalReply(503, b"no healthy upstream", details="no_healthy_upstream")
        return None

    def encode(self, stream: Stream) -> LocalReply | None:
        """Never replaces the response: respond() is for the request path only (Envoy 1.40)."""
        self._encode(stream)
        if self.drain:
            # drainConnectionUponCompletion(): the connection manager says so last, after every
            # filter and after date/server (observed, local replies too).
            stream.response_headers = list(stream.response_headers) + [("connection", "close")]
        return None

    def _encode(self, stream: Stream) -> None:
        self._setup(stream)
        if self.script is None or not self.script.has_response:
            return
        # A local reply's body is one chunk; an upstream's comes through the HTTP/1 codec.
        res = self._run("envoy_on_response", stream.response_headers, stream.response_body,
                        stream.response_trailers, not stream.local_reply)
        if res is None:
            return
        if res.headers is not None:
            stream.response_headers = res.headers
        if res.body is not None:
            stream.response_body = as_read(stream.response_headers, res.body)
        if res.trailers is not None:
            stream.response_trailers = res.trailers

    def complete(self, stream: Stream) -> None:
        pass


__all__ = ["LuaFilterHost", "LuaStreamFilter", "first"]
