"""The command line as a user meets it: scaffold, build, test, and every kind of bad input
answered with one line, exit code 2, no traceback."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ENVOYEXT, envoy_pids, run_cli


def scaffold(tmp_path: Path, lang: str, kind: str = "blank", name: str | None = None) -> Path:
    name = name or f"t-{lang}"
    r = run_cli("new", kind, name, "--lang", lang, "--dir", tmp_path / name)
    assert r.returncode == 0, r.stderr
    return tmp_path / name


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("lang", ["lua", "c"])
def test_blank_filter_passes_live_and_emulated(tmp_path, lang):
    project = scaffold(tmp_path, lang)
    r = run_cli("test", project, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(r.stdout)["results"]
    assert results and all(x["passed"] for x in results)
    assert all(set(x["observations"]) == {"emulated", "live"} for x in results)


def test_failing_expectation_exits_1_with_a_diff(tmp_path):
    project = scaffold(tmp_path, "lua")
    (project / "scenarios" / "bad.yaml").write_text(
        "cases: [{name: wrong status, request: {path: /}, expect: {status: 418}}]\n")
    r = run_cli("test", project, "--only", "live")
    assert r.returncode == 1
    assert "FAIL bad › wrong status" in r.stdout and "expected: 418" in r.stdout and "got:      200" in r.stdout


def test_lua_syntax_error(tmp_path):
    project = scaffold(tmp_path, "lua")
    (project / "filter.lua").write_text("function envoy_on_request(h)\n  h:headers(:add('x')\nend\n")
    assert_one_line_error(run_cli("test", project), "filter.lua:2")


def test_c_compile_error(tmp_path):
    project = scaffold(tmp_path, "c")
    src = project / "filter.c"
    src.write_text(src.read_text().replace("return PW_CONTINUE;", "return PW_CONTINUE", 1))
    r = run_cli("build", project)
    assert_one_line_error(r, "filter.c:")
    assert not (project / "build" / "t-c.wasm").exists()  # nothing half-written


def test_wrong_field_in_filter_yaml(tmp_path):
    project = scaffold(tmp_path, "lua")
    spec = project / "filter.yaml"
    spec.write_text(spec.read_text().replace("lang: lua", "lang: lua\nsoruces: [x.lua]"))
    assert_one_line_error(run_cli("test", project), "filter.yaml", "soruces", "unknown field")


def test_config_envoy_rejects(tmp_path):
    # The C template rejects a configuration without 'header'/'value' (on_configure returns false);
    # Envoy then refuses the plugin, and that refusal is what the user sees.
    project = scaffold(tmp_path, "c")
    (project / "scenarios" / "config.yaml").write_text("config: {nope: 1}\ncases: [{name: a}]\n")
    assert_one_line_error(run_cli("test", project, "--only", "live"), "scenarios/config.yaml", "Envoy rejects",
                          "Unable to create Wasm plugin t-c", "configuration needs string fields")


def test_lua_script_envoy_rejects_at_load(tmp_path):
    project = scaffold(tmp_path, "lua")
    (project / "filter.lua").write_text("error('not today')\n")
    assert_one_line_error(run_cli("test", project, "--only", "live"), "not today")


def test_unknown_kind_and_existing_target(tmp_path):
    assert_one_line_error(run_cli("new", "nosuch", "x", "--dir", tmp_path / "x"), "unknown filter kind", "blank")
    scaffold(tmp_path, "lua", name="dup")
    assert_one_line_error(run_cli("new", "blank", "dup", "--dir", tmp_path / "dup"), "already exists")


def test_sigint_mid_run_leaves_no_envoy(tmp_path):
    project = scaffold(tmp_path, "lua")
    (project / "scenarios" / "slow.yaml").write_text(
        "cases:\n  - {name: first, request: {path: /}}\n  - {name: slow, wait_ms: 20000, request: {path: /}}\n")
    before = envoy_pids()
    proc = subprocess.Popen([*ENVOYEXT, "test", str(project), "--only", "live"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (envoy_pids() - before) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = envoy_pids() - before
        assert started, "Envoy never started"
        time.sleep(0.5)  # inside the slow case now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert not (started & envoy_pids())


def test_doctor_reports_every_part():
    r = run_cli("doctor")
    assert r.returncode == 0, r.stdout
    for part in ("envoy: 1.40.0", "envoy Lua filter: loads", "envoy V8 Wasm runtime: loads", "LuaJIT", "zig",
                 "Istio CRD schemas: Istio 1.30.3, 15 CRDs"):
        assert part in r.stdout


def test_run_serves_until_interrupted(tmp_path):
    project = scaffold(tmp_path, "lua")
    proc = subprocess.Popen([*ENVOYEXT, "run", str(project)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.split("listening on ")[1].strip()
        import urllib.request
        with urllib.request.urlopen(url + "/x") as resp:
            assert resp.headers["x-t-lua"] == "hello"
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0


@pytest.mark.parametrize("lang,suffix", [("lua", "lua"), ("c", "wasm")])
def test_emulate_runs_one_scenario_in_the_emulator_alone(tmp_path, lang, suffix):
    project = scaffold(tmp_path, lang)
    assert run_cli("build", project).returncode == 0
    artifact = project / "build" / f"t-{lang}.{suffix}"
    args = ["emulate", artifact, "--scenario", project / "scenarios" / "basic.yaml", "--json"]
    if lang == "c":
        args += ["--config", '{"header": "x-t-c", "value": "hello"}', "--root-id", "t-c"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(r.stdout)["results"]
    assert results and all(x["passed"] and set(x["observations"]) == {"emulated"} for x in results)
    r = run_cli("emulate", artifact, "--scenario", project / "scenarios" / "nope.yaml")
    assert_one_line_error(r, "nope.yaml", "file not found")


def test_config_prints_the_bootstrap(tmp_path):
    import yaml

    from envoyext.envoy import xds
    from envoyext.envoy.identity import TEST_PROXY
    project = scaffold(tmp_path, "lua")
    r = run_cli("config", project)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    hcm = xds.hcm_of(xds.listener_named(doc, TEST_PROXY.listener))
    assert [f["name"] for f in hcm["http_filters"]] == ["t-lua", "envoy.filters.http.router"]


def test_envoy_refusing_a_scenario_names_the_scenario_before_anything_runs(tmp_path):
    project = scaffold(tmp_path, "lua")
    (project / "scenarios" / "zz.yaml").write_text(
        "routes: [{match: {prefix: /}, per_filter_config: {bogus: 1}}]\ncases: [{name: a}]\n")
    r = run_cli("test", project)
    assert_one_line_error(r, "scenarios/zz.yaml", "Envoy rejects", "no such field: 'bogus'", "typed_per_filter_config")
    assert "PASS" not in r.stdout  # validated up front: the good scenario did not run first


def test_wasm_per_route_config_needs_a_type(tmp_path):
    project = scaffold(tmp_path, "c")
    (project / "scenarios" / "zz.yaml").write_text(
        "routes: [{name: r1, match: {prefix: /}, per_filter_config: {a: 1}}]\ncases: [{name: a}]\n")
    assert_one_line_error(run_cli("test", project), "scenarios/zz.yaml", "routes.r1.per_filter_config", "@type")


def _fake_envoy(tmp_path: Path, script: str) -> dict:
    fake = tmp_path / "fake-envoy"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    return {**os.environ, "NO_COLOR": "1", "ENVOYEXT_ENVOY": str(fake)}


@pytest.mark.parametrize("script,says", [
    ('echo "envoy  version: 0123/1.39.2/Clean/RELEASE/BoringSSL"\n', "1.39.2 at"),
    ("exit 1\n", "exited 1"),
])
def test_doctor_refuses_an_envoy_that_is_not_1_40_or_fails(tmp_path, script, says):
    r = subprocess.run([*ENVOYEXT, "doctor"], capture_output=True, text=True, env=_fake_envoy(tmp_path, script))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("MISSING envoy:") and says in first, r.stdout
    assert "ok   envoy" not in r.stdout


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_killed_run_leaves_work_dirs_that_the_next_run_removes(tmp_path):
    import tempfile
    project = scaffold(tmp_path, "lua")
    kept = Path(tempfile.mkdtemp(prefix=f"envoyext-envoy-{os.getpid()}-"))  # a live owner's: never touched
    proc = subprocess.Popen([*ENVOYEXT, "run", str(project)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        assert "listening on" in proc.stdout.readline()
        left = list(Path(tempfile.gettempdir()).glob(f"envoyext-*-{proc.pid}-*"))
        assert left, "the run's work dir is named for its process"
        envoys = envoy_pids()
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(30)
        assert all(d.exists() for d in left)
        deadline = time.monotonic() + 30  # its Envoy dies with it (parent-death signal)
        while envoys & envoy_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        r = run_cli("build", project)
        assert r.returncode == 0, r.stderr
        assert not any(d.exists() for d in left)
        assert kept.is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()
        kept.rmdir()


def test_a_killed_builds_temp_file_is_removed_by_the_next_build(tmp_path):
    project = scaffold(tmp_path, "lua")
    build = project / "build"
    build.mkdir(exist_ok=True)
    dead = build / f".t-lua.lua.{_dead_pid()}.abcd1234.tmp"
    alive = build / f".t-lua.lua.{os.getpid()}.efgh5678.tmp"  # a build still running: left alone
    dead.write_text("half")
    alive.write_text("half")
    assert run_cli("build", project, "--force").returncode == 0
    assert not dead.exists() and alive.exists()


def test_builds_racing_on_one_project_never_collide(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from envoyext import project as proj
    p = proj.load(scaffold(tmp_path, "lua"))
    with ThreadPoolExecutor(8) as pool:  # before: one fixed .tmp name, so one build renamed another's away
        list(pool.map(lambda _: proj.build(p, force=True), range(200)))
    assert [f.name for f in p.build_dir.iterdir()] == ["t-lua.lua"]


def test_a_trapping_wasm_filter_prints_no_backtrace(tmp_path):
    project = scaffold(tmp_path, "c")
    src = project / "filter.c"
    src.write_text(src.read_text().replace("return PW_CONTINUE;", "__builtin_trap();", 1))
    r = run_cli("test", project, "--only", "emulated")
    assert r.returncode == 1 and "FAIL" in r.stdout
    assert r.stderr == ""  # wasmtime's backtrace no longer spills; the verdict has the failure


def test_runners_go_by_their_registry_names_and_unit_is_a_hidden_alias(tmp_path):
    project = scaffold(tmp_path, "lua")
    r = run_cli("test", project, "--only", "unit", "--json")  # what scripts before issue 9 pass
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(r.stdout)["results"]
    assert results and all(set(x["observations"]) == {"emulated"} for x in results)
    assert {o["runner"] for x in results for o in x["observations"].values()} == {"emulated"}
    shown = run_cli("test", "--help").stdout
    assert "[emulated|live|mesh]" in shown and "unit" not in shown
