"""The Docker runtime: its compose file is generated (and checked) everywhere; it runs only
where a Docker engine answers."""

import os
import sys
from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap
from envoyext.envoy.docker import IMAGE, compose_file, engine_available
from envoyext.scenario import Request, check, from_dict

SCENARIO = from_dict({"cases": [{"name": "-"}]}, Path("t.yaml"))


def test_compose_file_runs_the_pinned_image_with_the_bootstrap(tmp_path):
    art = Artifact("wasm", tmp_path / "mods" / "f.wasm", "f")
    config = bootstrap.build(art, SCENARIO, {"upstream": ("127.0.0.1", 9)})
    doc = compose_file(config, tmp_path / "work")
    svc = doc["services"]["envoy"]
    assert svc["image"] == IMAGE == "envoyproxy/envoy:v1.40.0"
    assert svc["network_mode"] == "host"  # reaches loopback upstreams
    work = (tmp_path / "work").resolve()
    assert f"{work}:{work}" in svc["volumes"]
    assert f"{(tmp_path / 'mods').resolve()}:{(tmp_path / 'mods').resolve()}:ro" in svc["volumes"]
    assert svc["command"][:3] == ["envoy", "-c", f"{work}/envoy.json"]
    assert "--admin-address-path" in svc["command"]


def test_docker_runtime_plumbing_with_a_stand_in_docker(tmp_path, monkeypatch):
    """No engine here: tests/envoy/fake_docker.py, as `docker`, runs the compose file's command with the
    real Envoy binary, which proves the command line, mounts and readiness wait are right."""
    from envoyext.envoy.process import envoy_binary
    from envoyext.runners import live
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = Path(__file__).parent / "fake_docker.py"
    (bin_dir / "docker").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$@"\n')
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("ENVOYEXT_ENVOY", str(envoy_binary()))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert engine_available()
    script = tmp_path / "f.lua"
    script.write_text("function envoy_on_response(h) h:headers():add('x-d', '1') h:logInfo('seen') end\n")
    sc = from_dict({"cases": [{"name": "a", "expect": {"headers": {"x-d": "1"}, "logs_contain": "seen"}},
                              {"name": "b", "expect": {"logs_contain": "seen"}}]}, Path("t.yaml"))
    observations = live.run_scenario(Artifact("lua", script, "d"), sc, runtime="docker")
    assert [check(c, o) for c, o in zip(sc.cases, observations)] == [[], []]  # logs read per case


@pytest.mark.skipif(not engine_available(), reason="no Docker engine")
def test_docker_runtime_serves_a_lua_filter(tmp_path):
    from envoyext.envoy.client import send
    from envoyext.runners import live
    script = tmp_path / "f.lua"
    script.write_text("function envoy_on_response(h) h:headers():add('x-d', '1') end\n")
    with live.started(Artifact("lua", script, "d"), SCENARIO, runtime="docker") as (envoy, _):
        r = send(*envoy.listener, Request(path="/"))
        assert ("x-d", "1") in r.headers
