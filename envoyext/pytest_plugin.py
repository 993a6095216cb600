"""pytest fixtures for people who write pytest instead of scenario YAML.

    def test_adds_header(envoy_filter):
        envoy = envoy_filter("path/to/my-filter")          # a project dir, or an Artifact
        r = envoy.request("GET", "/x", headers={"x-a": "1"})
        assert r.status == 200 and ("x-hello", "world") in r.headers
        assert envoy.received()[-1].headers                 # what the echo upstream got

    def test_upstream(echo_upstream):
        host, port = echo_upstream.address("upstream")

Envoy and the upstreams are stopped when the test ends, pass or fail.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from envoyext import scenario as scenario_mod
from envoyext.artifact import Artifact
from envoyext.scenario import UPSTREAM, Request, Response, header_list
from envoyext.upstreams import UpstreamServers, UpstreamSpec


class LiveFilter:
    """A running Envoy with the filter under test, and its test upstreams."""

    def __init__(self, envoy, upstreams: UpstreamServers):
        self.envoy = envoy
        self.upstreams = upstreams
        self.url = envoy.url
        self.admin = envoy.admin

    def request(self, method: str = "GET", path: str = "/", *, headers: dict | None = None,
                body: bytes | str = b"", authority: str = "example.com") -> Response | None:
        from envoyext.envoy.client import send
        rq = Request(method, path, authority, header_list(headers),
                     body.encode() if isinstance(body, str) else body)
        return send(*self.envoy.listener, rq)

    def received(self, cluster: str = UPSTREAM) -> list:
        return list(self.upstreams.received[cluster])

    def logs(self) -> list:
        from envoyext.envoy.logs import filter_logs
        return filter_logs(self.envoy.log_text())

    def stats(self) -> dict[str, int]:
        return self.admin.stats()


def _artifact(target: Any) -> Artifact:
    if isinstance(target, Artifact):
        return target
    from envoyext import project as proj
    return proj.build(proj.load(Path(target)))


@pytest.fixture
def envoy_filter():
    """Factory: envoy_filter(project_dir_or_artifact, config=..., upstream=..., clusters=..., routes=...)."""
    from envoyext.runners import live
    with ExitStack() as stack:
        def start(target, *, config: Any = None, upstream: dict | None = None,
                  clusters: dict | None = None, routes: list | None = None) -> LiveFilter:
            artifact = _artifact(target)
            doc = {"cases": [{"name": "-"}], "upstream": upstream or {}, "clusters": clusters or {}}
            if routes:
                doc["routes"] = routes
            sc = scenario_mod.from_dict(doc, Path("pytest"), default_config=config if config is not None
                                        else artifact.config)
            envoy, ups = stack.enter_context(live.started(artifact, sc))
            return LiveFilter(envoy, ups)
        yield start


@pytest.fixture
def echo_upstream():
    """A real echo server on loopback (cluster name 'upstream'); `.received['upstream']` lists requests."""
    with UpstreamServers({UPSTREAM: UpstreamSpec()}) as ups:
        yield ups
