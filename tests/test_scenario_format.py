"""What the scenario format can say, run through the emulator and live Envoy 1.40 alike.

Each scenario runs once per runner. Every case must meet its expectations under both runners and
the two observations must agree; the cases named "wrong: ..." are negative controls whose
expectations are false, so both runners must fail them (for the same observed reason).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest
import yaml

from envoyext import project
from envoyext.artifact import Artifact
from envoyext.build.c import compile_wasm
from envoyext.errors import UserError
from envoyext.runners import emulated, live
from envoyext.scenario import STARTUP, check, compare, load
from tests.conftest import run_cli

HERE = Path(__file__).parent / "scenario_format"
CACHE = Path(tempfile.gettempdir()) / "envoyext-wasm-test-modules"


def startup_module() -> Path:
    src = HERE / "startup.c"
    out = CACHE / f"startup-{hashlib.sha256(src.read_bytes()).hexdigest()[:16]}.wasm"
    if not out.exists():
        compile_wasm([src], out)
    return out


def wasm_artifact(**kw) -> Artifact:
    return Artifact("wasm", startup_module(), "startup", root_id="r", vm_id="v", **kw)


def write(tmp_path: Path, doc: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_both(artifact: Artifact, path: Path) -> dict:
    """Both runners over one scenario file: case name -> (case, emulated obs, live obs)."""
    sc = load(path)
    emu = {o.case: o for o in emulated.run_scenario(artifact, sc)}
    real = {o.case: o for o in live.run_scenario(artifact, load(path))}
    return {c.name: (c, emu[c.name], real[c.name]) for c in sc.cases}


def assert_verdicts(runs: dict) -> None:
    """Right cases pass in both runners, "wrong: " ones fail in both; the runners agree."""
    for name, (case, emu, real) in runs.items():
        assert compare(emu, real) == [], f"{name}: the emulator and live Envoy disagree"
        for runner, obs in (("emulated", emu), ("live", real)):
            failed = check(case, obs)
            if name.startswith("wrong: "):
                assert failed, f"{name}: {runner} passes a false expectation"
            else:
                assert failed == [], f"{name}: {runner} misses the expectations"


# ---------------------------------------------------------------------------------------------
# 1. startup: the lines a filter logs while it starts


def test_startup_logs_wasm(tmp_path):
    doc = {"config": {"k": 1}, "startup": {"logs_contain": ["vm started", 'configured {"k":1} root_id=r vm_id=v'],
                                           "logs_absent": "trap"},
           "cases": [{"name": "request", "expect": {"status": 200, "logs_absent": "vm started"}}]}
    runs = run_both(wasm_artifact(), write(tmp_path, doc))
    assert list(runs) == [STARTUP, "request"]
    _, emu, real = runs[STARTUP]
    # Envoy starts the plugin once per worker and on the main thread: each line counts once.
    assert [line.message for line in real.logs] == ["vm started", 'configured {"k":1} root_id=r vm_id=v']
    assert_verdicts(runs)
    wrong = load(write(tmp_path, dict(doc, startup={"logs_contain": "configured {}"}), "wrong.yaml"))
    assert check(wrong.cases[0], emu) and check(wrong.cases[0], real)


def test_startup_logs_lua_top_level(tmp_path):
    """A Lua script's top-level code has no handle to log with: startup logs are empty in both."""
    doc = {"startup": {"logs_absent": "request"},
           "cases": [{"name": "request", "expect": {"logs_contain": "request :authority=example.com"}}]}
    runs = run_both(Artifact("lua", HERE / "probe.lua", "probe"), write(tmp_path, doc))
    assert runs[STARTUP][1].logs == runs[STARTUP][2].logs == []
    assert_verdicts(runs)


def test_startup_is_a_reserved_case_name(tmp_path):
    doc = {"startup": {"logs_contain": "x"}, "cases": [{"name": "startup"}]}
    with pytest.raises(UserError, match=r"cases\[0\]\.name"):
        load(write(tmp_path, doc))


# ---------------------------------------------------------------------------------------------
# 2. CONNECT, with its authority-form target


def test_connect_without_a_connect_route(tmp_path):
    """Envoy 1.40 runs the filter (no :path), finds no route (only connect_matcher routes match
    CONNECT) and answers 404, closing the connection."""
    doc = {"cases": [
        {"name": "connect", "request": {"method": "CONNECT", "authority": "example.com:443"},
         "expect": {"status": 404, "headers": {"connection": "close"}, "upstream": {"called": False},
                    "logs_contain": "request :authority=example.com:443 :method=CONNECT :scheme=http",
                    "logs_absent": ":path="}},
        {"name": "wrong: connect is forwarded", "request": {"method": "CONNECT", "authority": "example.com:443"},
         "expect": {"status": 200, "logs_contain": ":path=example.com:443"}},
        {"name": "a GET still works", "expect": {"status": 200, "logs_contain": ":path=/"}},
    ]}
    assert_verdicts(run_both(Artifact("lua", HERE / "probe.lua", "probe"), write(tmp_path, doc)))


CONNECT_ROUTES = [
    {"name": "tunnel", "match": {"connect_matcher": {}, "headers": {"x-mode": "tunnel"}},
     "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]},
    {"name": "tunnel-down", "match": {"connect_matcher": {}, "headers": {"x-mode": "down"}}, "cluster": "gone",
     "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]},
    {"name": "no-upgrade", "match": {"connect_matcher": {}, "headers": {"x-mode": "refuse"}}},
    {"name": "default", "match": {"prefix": "/"}},
]


def connect_case(name: str, mode: str, expect: dict) -> dict:
    return {"name": name, "request": {"method": "CONNECT", "authority": "example.com:443",
                                      "headers": {"x-mode": mode}}, "expect": expect}


@pytest.mark.parametrize("kind", ["lua", "wasm"])
def test_connect_routes(tmp_path, kind):
    """Measured on Envoy 1.40: a connect_matcher route with connect_config answers 200 itself and
    tunnels over TCP (nothing reaches the upstream as HTTP; no framing headers); a dead cluster
    gives the router's 503; a connect route without a CONNECT upgrade is refused with 403 before
    any filter decodes (the filter sees only the reply)."""
    lua = kind == "lua"

    def logs(contain: str | None = None, absent: str | None = None) -> dict:
        out = {"logs_contain": contain} if lua and contain else {}
        return {**out, "logs_absent": absent} if lua and absent else out
    doc = {"clusters": {"gone": {"down": True}}, "routes": CONNECT_ROUTES, "cases": [
        connect_case("tunnel", "tunnel", {
            "status": 200, "body": "", "headers_absent": ["content-length", "transfer-encoding", "connection"],
            "upstream": {"called": False}, **logs("request :authority=example.com:443 :method=CONNECT", ":path=")}),
        connect_case("tunnel to a dead cluster", "down", {
            "status": 503, "body_contains": "remote connection failure", "headers": {"connection": "close"}}),
        connect_case("route without the upgrade", "refuse", {
            "status": 403, "body": "", "headers": {"connection": "close"}, **logs("response 403", "request ")}),
        connect_case("wrong: the tunnel is refused", "tunnel", {"status": 403}),
        {"name": "a GET still works", "expect": {"status": 200, **logs(":path=/")}},
    ]}
    artifact = Artifact("lua", HERE / "probe.lua", "probe") if lua else wasm_artifact()
    assert_verdicts(run_both(artifact, write(tmp_path, doc)))


def test_connect_sent_on_upstream_is_not_emulated(tmp_path):
    """Without connect_config Envoy sends the CONNECT on to the upstream, and the test upstreams
    are no CONNECT proxies: the emulator says it cannot run the case instead of inventing one."""
    doc = {"routes": [{"match": {"connect_matcher": {}}, "upgrade_configs": [{"upgrade_type": "CONNECT"}]},
                      {"match": {"prefix": "/"}}],
           "cases": [{"name": "forwarded", "request": {"method": "CONNECT", "authority": "example.com:443"}},
                     {"name": "get", "expect": {"status": 200}}]}
    sc = load(write(tmp_path, doc))
    forwarded, get = emulated.run_scenario(Artifact("lua", HERE / "probe.lua", "probe"), sc)
    assert "only: live" in forwarded.error and check(sc.cases[1], get) == []


def test_connect_request_has_no_path(tmp_path):
    doc = {"cases": [{"name": "c", "request": {"method": "CONNECT", "path": "/x"}}]}
    with pytest.raises(UserError, match=r"cases\[0\]\.request\.path: a CONNECT request has no path"):
        load(write(tmp_path, doc))


# ---------------------------------------------------------------------------------------------
# 4. Route metadata: Envoy's full Metadata, any namespace


METADATA_ROUTES = [
    {"name": "own", "match": {"prefix": "/own"}, "metadata": {"filter_metadata": {
        "probe": {"who": "own"}, "envoy.filters.http.lua": {"who": "canonical"}}}},
    {"name": "canonical", "match": {"prefix": "/canonical"}, "metadata": {"filter_metadata": {
        "envoy.filters.http.lua": {"who": "canonical"}, "other.filter": {"who": "other"}}}},
    {"name": "other", "match": {"prefix": "/other"}, "metadata": {"filter_metadata": {
        "other.filter": {"who": "other"}}}},
    {"name": "short", "match": {"prefix": "/short"}, "metadata": {"who": "short form"}},
    {"name": "default", "match": {"prefix": "/"}},
]


def test_lua_reads_its_own_namespace_then_envoys(tmp_path):
    def case(path, who):
        return {"name": f"{path} reads {who}", "request": {"path": path},
                "expect": {"logs_contain": f"metadata who={who}"}}
    doc = {"routes": METADATA_ROUTES, "cases": [
        case("/own", "own"), case("/canonical", "canonical"), case("/other", "nil"),
        case("/short", "short form"), case("/", "nil"),
        {"name": "wrong: another filter's namespace", "request": {"path": "/other"},
         "expect": {"logs_contain": "metadata who=other"}}]}
    assert_verdicts(run_both(Artifact("lua", HERE / "probe.lua", "probe"), write(tmp_path, doc)))


def _hex_pairs(pairs: list[tuple[bytes, bytes]]) -> str:
    """proxy-wasm's serialized pairs, the encoding of a map property."""
    head = len(pairs).to_bytes(4, "little") + b"".join(
        len(k).to_bytes(4, "little") + len(v).to_bytes(4, "little") for k, v in pairs)
    return (head + b"".join(k + b"\0" + v + b"\0" for k, v in pairs)).hex()


def test_wasm_reads_route_metadata_of_any_namespace(tmp_path):
    """Values and one-key maps: a whole map's entry order is protobuf's hash order in Envoy."""
    double_2 = bytes.fromhex("0000000000000040")  # 2.0, little-endian: Struct numbers are doubles
    routes = [
        {"name": "one", "match": {"prefix": "/one"}, "metadata": {"filter_metadata": {"only": {"k": "v"}}}},
        {"name": "md", "match": {"prefix": "/"}, "metadata": {"filter_metadata": {
            "envoy.filters.http.lua": {"who": "lua"}, "ns": {"k": "v", "n": 2}}}}]
    whole = "0a120a046f6e6c79120a0a080a016b12031a0176"  # Metadata{filter_metadata{"only": {"k": "v"}}}

    def case(name, want, hexval):
        return {"name": name, "request": {"headers": {"x-md": want}},
                "expect": {"logs_contain": f"md {want} status=0 hex={hexval}"}}
    doc = {"routes": routes, "cases": [
        case("a string", "ns/k", b"v".hex()),
        case("a number is a double", "ns/n", double_2.hex()),
        case("a namespace with dots", "envoy.filters.http.lua/who", b"lua".hex()),
        # Envoy walks the map in the reverse of the config's key order (measured)
        case("a Struct is a map", "envoy.filters.http.lua", _hex_pairs([(b"who", b"lua")])),
        {"name": "an absent key", "request": {"headers": {"x-md": "ns/zz"}},
         "expect": {"logs_contain": "md ns/zz status=1 hex="}},
        {"name": "the whole Metadata proto", "request": {"path": "/one", "headers": {"x-md": "*"}},
         "expect": {"logs_contain": f"md * status=0 hex={whole}"}},
        {"name": "wrong: a value from another key", "request": {"headers": {"x-md": "ns/k"}},
         "expect": {"logs_contain": f"md ns/k status=0 hex={b'lua'.hex()}"}},
    ]}
    assert_verdicts(run_both(wasm_artifact(), write(tmp_path, doc)))


def test_metadata_full_form_stands_alone(tmp_path):
    doc = {"routes": [{"match": {"prefix": "/"}, "metadata": {"filter_metadata": {}, "team": "x"}}],
           "cases": [{"name": "c"}]}
    with pytest.raises(UserError, match=r"routes\[0\]\.metadata\.team"):
        load(write(tmp_path, doc))


# ---------------------------------------------------------------------------------------------
# 3. Envoy's Lua filter config: no default_source_code, only per-route scripts


def lua_project(tmp_path: Path) -> Path:
    root = tmp_path / "perroute"
    (root / "scenarios").mkdir(parents=True)
    (root / "named.lua").write_text(
        'function envoy_on_request(h) h:headers():add("x-script", "named " .. envoyext_config.tag) end\n')
    (root / "filter.yaml").write_text(yaml.safe_dump({
        "name": "perroute", "lang": "lua", "config": {"tag": "t1"},
        "lua": {"stat_prefix": "edge", "source_codes": {"named": "named.lua"}}}))
    inline = 'function envoy_on_request(h) h:headers():add("x-script", "inline") end'
    write(root / "scenarios", {
        "routes": [
            {"name": "by-name", "match": {"prefix": "/named"}, "per_filter_config": {"name": "named"}},
            {"name": "inline", "match": {"prefix": "/inline"},
             "per_filter_config": {"source_code": {"inline_string": inline}}},
            {"name": "off", "match": {"prefix": "/off"}, "per_filter_config": {"disabled": True}},
            {"name": "default", "match": {"prefix": "/"}}],
        "cases": [
            {"name": "a named script", "request": {"path": "/named"},
             "expect": {"upstream": {"headers": {"x-script": "named t1"}},
                        "stats": {"http.ingress_http.lua.edge.executions": 1}}},
            {"name": "an inline per-route script", "request": {"path": "/inline"},
             "expect": {"upstream": {"headers": {"x-script": "inline"}}}},
            {"name": "disabled", "request": {"path": "/off"}, "expect": {"upstream": {"headers_absent": ["x-script"]}}},
            {"name": "no default script runs nothing", "request": {"path": "/"},
             "expect": {"upstream": {"headers_absent": ["x-script"]}}},
            {"name": "wrong: the default route runs a script", "request": {"path": "/"},
             "expect": {"upstream": {"headers": {"x-script": "named t1"}}}},
        ]}, "perroute.yaml")
    return root


def test_lua_filter_without_default_source_code(tmp_path):
    root = lua_project(tmp_path)
    p = project.load(root)
    artifact = project.build(p)
    assert not artifact.has_default_script
    from envoyext.envoy import filter_entry
    sc = load(p.scenario_files[0], default_config=p.config)
    typed = filter_entry.for_artifact(artifact, sc.config)["typed_config"]
    assert "default_source_code" not in typed and set(typed["source_codes"]) == {"named"}
    emu = {o.case: o for o in emulated.run_scenario(artifact, sc)}
    real = {o.case: o for o in live.run_scenario(artifact, sc)}
    runs = {c.name: (c, emu[c.name], real[c.name]) for c in sc.cases}
    assert_verdicts(runs)


def test_lua_project_needs_a_script(tmp_path):
    (tmp_path / "filter.yaml").write_text(yaml.safe_dump({"name": "x", "lang": "lua", "lua": {"stat_prefix": "a"}}))
    with pytest.raises(UserError, match="sources: a Lua filter has exactly one .lua source"):
        project.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# 5. envoyext emulate reads the project's filter.yaml


def wasm_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "build").mkdir(parents=True)
    module = root / "build" / "proj.wasm"
    module.write_bytes(startup_module().read_bytes())
    (root / "filter.yaml").write_text(yaml.safe_dump({
        "name": "proj", "lang": "wasm", "module": "build/proj.wasm", "root_id": "from-yaml",
        "vm_id": "vm-yaml", "config": {"from": "yaml"}, "failure_policy": "fail_open"}))
    return root


def emulate(*args: str) -> dict:
    r = run_cli("emulate", *args, "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["results"][0]


def test_emulate_reads_filter_yaml_next_to_the_build_dir(tmp_path):
    root = wasm_project(tmp_path)
    expected = 'configured {"from":"yaml"} root_id=from-yaml vm_id=vm-yaml'
    scenario = write(tmp_path, {"startup": {"logs_contain": expected}, "cases": [{"name": "c"}]})
    result = emulate(str(root / "build" / "proj.wasm"), "--scenario", str(scenario))
    assert result["passed"], result["failures"]
    # --vm-id, --root-id and --config override filter.yaml's
    result = emulate(str(root / "build" / "proj.wasm"), "--scenario", str(scenario), "--vm-id", "cli-vm",
                     "--root-id", "cli-root", "--config", '{"from":"cli"}')
    assert not result["passed"]  # negative control: the scenario expects filter.yaml's values
    logs = result["observations"]["emulated"]["logs"]
    assert 'info: configured {"from":"cli"} root_id=cli-root vm_id=cli-vm' in logs


def test_emulate_takes_project_dir(tmp_path):
    root = wasm_project(tmp_path)
    elsewhere = tmp_path / "f.wasm"
    elsewhere.write_bytes(startup_module().read_bytes())
    scenario = write(tmp_path, {"startup": {"logs_contain": "root_id=from-yaml vm_id=vm-yaml"},
                                "cases": [{"name": "c"}]})
    assert emulate(str(elsewhere), "--scenario", str(scenario), "--project", str(root))["passed"]
    assert not emulate(str(elsewhere), "--scenario", str(scenario))["passed"]  # no project: root_id ""


def test_emulate_refuses_an_artifact_of_another_language(tmp_path):
    root = wasm_project(tmp_path)
    scenario = write(tmp_path, {"cases": [{"name": "c"}]})
    r = run_cli("emulate", str(HERE / "probe.lua"), "--scenario", str(scenario), "--project", str(root))
    assert r.returncode == 2 and "filter.yaml: lang:" in r.stderr and "Traceback" not in r.stderr


def test_lua_library_loads_with_require(tmp_path):
    """Envoy's Lua filter has no library-path option; its LuaJIT has `require`, searching
    package.path (default relative to Envoy's working directory): a script that puts its library
    directory on package.path loads it in both runners (measured on Envoy 1.40)."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "greeting.lua").write_text('return {text = "hello from a library"}\n')
    script = tmp_path / "uses_lib.lua"
    script.write_text(f'package.path = "{tmp_path}/lib/?.lua;" .. package.path\n'
                      'local greeting = require("greeting")\n'
                      'function envoy_on_request(h) h:headers():add("x-greeting", greeting.text) end\n')
    doc = {"cases": [{"name": "library", "expect": {"upstream": {"headers": {"x-greeting": "hello from a library"}}}},
                     {"name": "wrong: another text", "expect": {"upstream": {"headers": {"x-greeting": "hi"}}}}]}
    assert_verdicts(run_both(Artifact("lua", script, "uses-lib"), write(tmp_path, doc)))


def test_emulate_takes_lua_options_from_filter_yaml(tmp_path):
    """The Lua project without a default script: emulate runs its build with filter.yaml's `lua:`
    block (source_codes, stat_prefix) and config; without the project the same scenario fails."""
    root = lua_project(tmp_path)
    assert run_cli("build", str(root)).returncode == 0
    scenario = root / "scenarios" / "perroute.yaml"
    r = run_cli("emulate", str(root / "build" / "perroute.lua"), "--scenario", str(scenario), "--json")
    results = {x["case"]: x["passed"] for x in json.loads(r.stdout)["results"]}
    assert results == {"a named script": True, "an inline per-route script": True, "disabled": True,
                       "no default script runs nothing": True, "wrong: the default route runs a script": False}
    alone = tmp_path / "alone.lua"
    alone.write_text((root / "build" / "perroute.lua").read_text())
    r = run_cli("emulate", str(alone), "--scenario", str(scenario), "--json")
    assert not json.loads(r.stdout)["results"][0]["passed"]  # no source_codes: the named route runs nothing


def test_artifact_for_takes_every_run_setting_of_filter_yaml(tmp_path):
    root = wasm_project(tmp_path)
    module = root / "build" / "proj.wasm"
    a = project.artifact_for(module, project.beside(module))
    assert (a.name, a.root_id, a.vm_id, a.failure_policy, a.config) == (
        "proj", "from-yaml", "vm-yaml", "fail_open", {"from": "yaml"})
    assert project.artifact_for(module, None).failure_policy == "fail_closed"  # control: no project
    assert project.artifact_for(module, project.beside(module), vm_id="x").vm_id == "x"
