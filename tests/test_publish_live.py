"""A Wasm module published by URL is fetched by live Envoy itself: the `remote` code source and the
cluster `envoyext publish --url` emits (plain Envoy form; the EnvoyFilter carries the same two), with
the module served over HTTP on loopback. The filter then answers as it does from a local file.
Negative control: a wrong sha256 leaves no module, and the filter fails closed (503)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from envoyext import project
from envoyext.artifact import Artifact
from envoyext.envoy.identity import ProxyIdentity
from envoyext.envoy.process import EnvoyProcess
from envoyext.publish import plain

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[project.Project, Artifact, str]]:
    dest = tmp_path_factory.mktemp("cors") / "cors"
    shutil.copytree(ROOT / "filters" / "cors", dest, ignore=shutil.ignore_patterns("build", "__pycache__"))
    proj = project.load(dest / "c")
    artifact = project.build(proj)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(artifact.path.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proj, artifact, f"http://127.0.0.1:{server.server_address[1]}/{artifact.path.name}"
    finally:
        server.shutdown()
        thread.join(5)


def _get(config: dict) -> tuple[int, dict[str, str]]:
    with EnvoyProcess(config, identity=ProxyIdentity(listener="publish")) as envoy:
        request = urllib.request.Request(envoy.url + "/x", headers={"Origin": "https://app.example.com"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)


def test_envoy_fetches_the_published_module_by_url(served) -> None:
    proj, artifact, url = served
    snip = plain.snippet(artifact, proj.config, url)
    assert snip["clusters"][0]["name"].startswith("envoyext_wasm_127.0.0.1_")
    status, headers = _get(plain.bootstrap(snip))
    assert status == 200 and headers.get("access-control-allow-origin") == "https://app.example.com"


def test_negative_control_a_wrong_sha256_fails_closed(served) -> None:
    proj, artifact, url = served
    snip = plain.snippet(artifact, proj.config, url)
    snip["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["remote"]["sha256"] = "0" * 64
    status, headers = _get(plain.bootstrap(snip))
    assert status == 503 and "access-control-allow-origin" not in headers
