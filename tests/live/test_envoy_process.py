"""The Envoy runtime against the real binary: ready, stats, rejects, and no leaks."""

from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap
from envoyext.envoy.process import EnvoyProcess
from envoyext.errors import EnvoyRejected
from envoyext.runners import live
from envoyext.scenario import Request, from_dict
from tests.conftest import envoy_pids

SCENARIO = from_dict({"cases": [{"name": "-"}]}, Path("t.yaml"))


def lua(tmp_path: Path, source: str) -> Artifact:
    p = tmp_path / "f.lua"
    p.write_text(source)
    return Artifact("lua", p, "t-lua")


def test_starts_serves_and_stops(tmp_path):
    art = lua(tmp_path, "function envoy_on_response(h) h:headers():add('x-t', '1') end\n")
    with live.started(art, SCENARIO) as (envoy, ups):
        pid = envoy.proc.pid
        assert envoy.admin.ready()
        r = live.send(*envoy.listener, Request(path="/p"))
        assert r.status == 200 and ("x-t", "1") in r.headers
        assert envoy.admin.stats()["http.ingress_http.downstream_rq_2xx"] == 1
        assert ups.received["upstream"][0].path == "/p"
        assert any(c["name"] == "upstream" for c in envoy.admin.config_dump()["configs"][1]["static_clusters"]
                   for c in [c["cluster"]])
        assert "lua: debug" in envoy.admin.set_log_level("debug", component="lua")
    assert pid not in envoy_pids()


def test_stopped_on_exception(tmp_path):
    art = lua(tmp_path, "function envoy_on_request(h) end\n")
    with pytest.raises(RuntimeError):
        with live.started(art, SCENARIO) as (envoy, _):
            pid = envoy.proc.pid
            raise RuntimeError("boom")
    assert pid not in envoy_pids()


def test_rejected_config_is_one_line_with_envoys_reason(tmp_path):
    art = lua(tmp_path, "error('refuse to load')\n")  # valid syntax, fails when Envoy loads it
    config = bootstrap.build(art, SCENARIO, {"upstream": ("127.0.0.1", 9)})
    with pytest.raises(EnvoyRejected) as e:
        EnvoyProcess(config).start()
    line = e.value.one_line()
    assert "refuse to load" in line and "\n" not in line


def test_filter_logs_are_parsed_by_level():
    text = ("[2026-01-01 00:00:00.000][1][info][lua] script log: hello\n"
            "[2026-01-01 00:00:00.000][1][debug][wasm] wasm log p r vm: two\nlines\n"
            "[2026-01-01 00:00:00.000][1][info][main] unrelated\n"
            "[2026-01-01 00:00:00.000][1][warning][lua] script log: careful\n")
    assert [(l.level, l.message) for l in live.filter_logs(text)] == [
        ("info", "hello"), ("debug", "two\nlines"), ("warn", "careful")]
