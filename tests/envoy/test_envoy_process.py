"""The Envoy runtime against the real binary: ready, stats, rejects, and no leaks."""

from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap, logs
from envoyext.envoy.client import send
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
        r = send(*envoy.listener, Request(path="/p"))
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
    assert [(l.level, l.message) for l in logs.filter_logs(text)] == [
        ("info", "hello"), ("debug", "two\nlines"), ("warn", "careful")]


SPAWN_FROM_A_THREAD = """
import sys, threading
from pathlib import Path
from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap
from envoyext.envoy.process import EnvoyProcess
from envoyext.scenario import from_dict
sc = from_dict({"cases": [{"name": "-"}]}, Path("t.yaml"))
envoy = EnvoyProcess(bootstrap.build(Artifact("lua", Path(sys.argv[1]), "t-lua"), sc, {"upstream": ("127.0.0.1", 9)}))
thread = threading.Thread(target=envoy.start)
thread.start()
thread.join()
# The thread that started Envoy has exited; Envoy must keep answering.
alive = all(envoy.admin.ready() for _ in range(50)) and envoy.proc.poll() is None
print(envoy.proc.pid, alive, flush=True)
sys.stdin.read()  # until killed
"""


def test_envoy_outlives_the_thread_that_started_it_and_dies_with_the_process(tmp_path):
    import subprocess
    import sys
    import time
    art = lua(tmp_path, "function envoy_on_request(h) end\n")
    proc = subprocess.Popen([sys.executable, "-c", SPAWN_FROM_A_THREAD, str(art.path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid, alive = proc.stdout.readline().split()
        assert alive == "True", "Envoy died with the thread that started it"
        proc.kill()  # SIGKILL: no atexit, no context manager; only the kernel's parent-death signal
        proc.wait(30)
        deadline = time.monotonic() + 30
        while int(pid) in envoy_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert int(pid) not in envoy_pids()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_upstream_losing_its_client_mid_body_prints_nothing(caplog):
    import socket

    from envoyext.upstreams import UpstreamServers, UpstreamSpec
    with UpstreamServers({"upstream": UpstreamSpec()}) as ups:
        s = socket.create_connection(ups.address("upstream"))
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        s.close()  # mid-body: aiohttp's read fails with "Connection lost"
        # A second request on a new connection is answered after the first was handled.
        r = send(*ups.address("upstream"), Request(path="/after"))
        assert r.status == 200
    # aiohttp logs it (with a traceback) at error level; outside pytest that lands on stderr
    assert not [r for r in caplog.records if r.levelno >= 40], caplog.text


def test_envoys_refusal_keeps_the_root_cause():
    """Envoy's summary ('Unable to create Wasm plugin') says nothing; the cause is a VM failure line
    or the plugin's own words at any level (a plugin may refuse its config with a warning)."""
    summary = "[2026-01-01 00:00:00.000][1][critical][main] error initializing configuration 'v.json': " \
              "Unable to create Wasm plugin p\n"
    warned = "[2026-01-01 00:00:00.000][1][warning][wasm] wasm log p p : header must be a string\n"
    vm = ("[2026-01-01 00:00:00.000][1][error][wasm] [source/extensions/common/wasm/wasm.cc:104] "
          "Wasm VM failed Failed to parse corrupted Wasm module\n"
          "[2026-01-01 00:00:00.000][1][error][wasm] [source/extensions/common/wasm/wasm.cc:104] "
          "Wasm VM failed Failed to load Wasm code\n")
    assert logs.first_error(warned + summary) == "Unable to create Wasm plugin p: header must be a string"
    assert logs.first_error(vm + summary) == "Unable to create Wasm plugin p: Failed to parse corrupted Wasm module"
    assert logs.first_error(summary) == "Unable to create Wasm plugin p"
