"""Blame the runner that is wrong: a request the live client cannot send is the scenario's fault
(refused at load), a request Envoy answers by its own codec limits is answered the same way by
the emulated connection manager, and a filter that never returns fails the case alike in both."""

import http.client
from pathlib import Path

import pytest
import yaml

from envoyext.artifact import Artifact
from envoyext.errors import UserError
from envoyext.messages import Request, no_response, request_head
from envoyext.runners import emulated
from envoyext.scenario import check, compare, from_dict, load
from tests.conftest import envoy_pids, run_cli
from tests.differential import Differential

HERE = Path(__file__).parent
NOOP = Artifact("lua", HERE / "envoy" / "golden" / "noop.lua", "noop")
BEFORE_ENVOYS = envoy_pids()  # Envoys this machine ran before these tests (other engineers' too)


def scenario_file(tmp_path: Path, cases: list[dict], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"cases": cases}, allow_unicode=True))
    return path


# -- 1. what the live client cannot send is refused at load, naming the field ------------------------

UNSENDABLE = [  # (request, the field named)
    ({"headers": {"x-a": "a\r\nb"}}, "cases[1].request.headers.x-a"),
    ({"headers": {"x-a": "a\nb"}}, "cases[1].request.headers.x-a"),
    ({"headers": {"x-a": "a\r\n b"}}, "cases[1].request.headers.x-a"),   # obs-fold: a folded line
    ({"headers": {"x-a": "euro \u20ac"}}, "cases[1].request.headers.x-a"),
    ({"headers": {":path": "/x"}}, "cases[1].request.headers.:path"),
    ({"headers": {"x-\u00e9": "1"}}, "cases[1].request.headers.x-\u00e9"),
    ({"headers": {" x": "1"}}, "cases[1].request.headers. x"),
    ({"path": "/a b"}, "cases[1].request.path"),
    ({"path": "/caf\u00e9"}, "cases[1].request.path"),
    ({"path": "/a\x01"}, "cases[1].request.path"),
    ({"authority": "a\r\nx-injected: 1"}, "cases[1].request.authority"),
    ({"authority": "\u20ac.example"}, "cases[1].request.authority"),
    ({"method": "QUERY"}, "cases[1].request.method"),
    ({"method": "get"}, "cases[1].request.method"),
    ({"method": "POST", "trailers": {"x(a)": "1"}}, "cases[1].request.trailers.x(a)"),
    ({"method": "POST", "trailers": {"x-t": "a\x01"}}, "cases[1].request.trailers.x-t"),
    ({"method": "POST", "trailers": {"x-t": "a\r\nb"}}, "cases[1].request.trailers.x-t"),
]


@pytest.mark.parametrize("request_,field", UNSENDABLE)
def test_unsendable_request_is_refused_at_load_naming_the_field(tmp_path, request_, field):
    path = scenario_file(tmp_path, [{"name": "fine"}, {"name": "bad", "request": request_}])
    with pytest.raises(UserError) as e:
        load(path)
    assert e.value.file == str(path) and e.value.field == field and e.value.fix, e.value.one_line()


def test_sendable_requests_still_load():
    """Negative control: what the client sends and Envoy answers (itself or through the filter)
    is a runner's matter, not refused."""
    ok = [{"headers": {"x-a": "a\tb", "x-b": "caf\u00e9", "x(a)": "1", "x a": "1", "x-c": "a\x01\0"}},
          {"method": "PROPFIND", "path": "/a?b#c", "authority": "a b"}, {"path": "*", "method": "OPTIONS"},
          {"method": "POST", "trailers": {"x-t": "caf\u00e9\t1"}}]
    scenario = from_dict({"cases": [{"name": str(i), "request": r} for i, r in enumerate(ok)]}, Path("s.yaml"))
    assert len(scenario.cases) == len(ok)


@pytest.mark.parametrize("request_,field", [u for u in UNSENDABLE if "trailers" not in u[0] and "method" not in u[0]
                                            and "a\r\n b" not in u[0].get("headers", {}).values()])
def test_what_is_refused_at_load_is_what_http_client_refuses(request_, field):
    """The load-time rule is the live client's own: http.client raises on every one of these
    (the method list and trailers are Envoy's rules, and obs-fold is refused by choice)."""
    rq = from_dict({"cases": [{"name": "x"}]}, Path("s.yaml")).cases[0].request
    for key, value in request_.items():
        setattr(rq, key, value if key != "headers" else list(value.items()))
    conn = http.client.HTTPConnection("127.0.0.1", 9)  # never connects: nothing is sent
    with pytest.raises((ValueError, UnicodeEncodeError, http.client.InvalidURL)):
        conn.putrequest(rq.method, rq.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", rq.authority)
        for k, v in rq.headers:
            conn.putheader(k, v)


def test_cli_answers_an_unsendable_request_in_one_line_exit_2(tmp_path):
    path = scenario_file(tmp_path, [{"name": "bad", "request": {"headers": {"x-a": "a\r\nb"}}}])
    r = run_cli("emulate", NOOP.path, "--scenario", path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cases[0].request.headers.x-a" in lines[0] and "fix:" in lines[0], r.stderr


# -- 2. Envoy's codec limits, answered alike by both runners ------------------------------------------

def head_of(size: int) -> dict:
    """A request whose head (request line, header lines, CRLFs) is exactly `size` bytes, in
    header lines short enough for the test upstream (which refuses lines over 8190 bytes)."""
    base, n = len(request_head(Request())), 8
    overhead = len("x-b0: \r\n")
    sizes = [(size - base) // n - overhead] * n
    sizes[0] += size - base - sum(s + overhead for s in sizes)
    rq = {"headers": {f"x-b{i}": "v" * s for i, s in enumerate(sizes)}}
    assert len(request_head(Request(headers=[(k, v) for k, v in rq["headers"].items()]))) == size
    return rq


def headers_lines(count: int) -> dict:
    """A request with `count` header lines, host included."""
    return {"headers": {f"x-h{i}": "v" for i in range(count - 1)}}


TOO_LARGE = {"status": 431, "body": "Request Header Fields Too Large", "upstream": {"called": False},
             "headers": {"content-type": "text/plain", "connection": "close"},
             "stats": {"http.ingress_http.downstream_cx_protocol_error": 1, "http.ingress_http.lua.executions": 0}}
LIMIT_CASES = [
    {"name": "head of exactly 60 KiB passes", "request": head_of(60 * 1024), "expect": {"status": 200}},
    {"name": "head one byte over 60 KiB", "request": head_of(60 * 1024 + 1), "expect": TOO_LARGE},
    {"name": "100 header lines pass", "request": headers_lines(100), "expect": {"status": 200}},
    {"name": "a 50 KiB header line reaches the upstream", "request": {"headers": {"x-big": "v" * 50 * 1024}},
     "expect": {"status": 200, "upstream": {"called": True}}},
    {"name": "101 header lines", "request": headers_lines(101), "expect": TOO_LARGE},
]


@pytest.fixture(scope="module")
def limits(tmp_path_factory) -> tuple[Path, Differential]:
    return scenario_file(tmp_path_factory.mktemp("limits"), LIMIT_CASES), Differential(lambda _: NOOP)


@pytest.mark.parametrize("name", [c["name"] for c in LIMIT_CASES])
def test_codec_limit_answered_alike_by_emulator_and_envoy(limits, name):
    path, differential = limits
    differential.assert_agree(path, name)


def test_codec_limit_negative_control(tmp_path):
    """A wrong expectation on a refused request fails in the emulator (the model is not vacuous)."""
    refused = [c for c in LIMIT_CASES if c["expect"] is TOO_LARGE]
    wrong = [{**c, "expect": {"status": 200, "upstream": {"called": True}}} for c in refused]
    scenario = load(scenario_file(tmp_path, wrong))
    observations = emulated.run_scenario(NOOP, scenario)
    for case, obs in zip(scenario.cases, observations):
        where = {m.where for m in check(case, obs)}
        assert where == {"status", "upstream.called"}, (case.name, where)


# -- 3. a filter that never returns: no response in either runner, and they agree ---------------------

LOOP_TIMEOUT_MS = 1500
LOOP_CASES = [
    {"name": "before", "expect": {"status": 200}},
    {"name": "endless loop", "request": {"headers": {"x-loop": "1", "x-probe": "loop"}, "timeout_ms": LOOP_TIMEOUT_MS},
     "expect": {"status": 200}},
    {"name": "after", "expect": {"status": 200}},
]
LUA_LOOP = 'function envoy_on_request(h)\n  if h:headers():get("x-loop") then while true do end end\nend\n'


def probe_module() -> Artifact:
    from tests.wasm.conftest import build
    return Artifact("wasm", build("probe"), "probe", root_id="r", vm_id="v")


@pytest.fixture(scope="module", params=["lua", "wasm"])
def loops(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"loop-{request.param}")
    if request.param == "lua":
        (tmp / "loop.lua").write_text(LUA_LOOP)
        artifact = Artifact("lua", tmp / "loop.lua", "loop")
    else:
        artifact = probe_module()
    differential = Differential(lambda _: artifact)
    return differential.runs(scenario_file(tmp, LOOP_CASES))


def test_endless_loop_fails_alike_in_both_runners(loops):
    scenario, emu, real = loops
    case = scenario.cases[1]
    for obs in (emu[case.name], real[case.name]):
        assert obs.error == f"{no_response(LOOP_TIMEOUT_MS)}", (obs.runner, obs.error)
        assert [m.where for m in check(case, obs)] == ["run"]   # the case fails, with that reason
    assert compare(emu[case.name], real[case.name]) == []       # not an emulator bug


def test_cases_after_an_endless_loop_run_on_a_filter_that_answers(loops):
    scenario, emu, real = loops
    for case in (scenario.cases[0], scenario.cases[2]):
        assert check(case, emu[case.name]) == [] and check(case, real[case.name]) == [], case.name
        assert compare(emu[case.name], real[case.name]) == [], case.name


def test_no_response_in_one_runner_only_is_still_a_disagreement(loops):
    """Negative control: the agreement rule needs both runners without a response."""
    scenario, emu, real = loops
    looped, answered = emu["endless loop"], real["after"]
    assert [m.where for m in compare(looped, answered)] == ["run"]
    assert [m.where for m in compare(answered, looped)] == ["run"]


def test_no_envoy_outlives_a_worker_spinning_in_a_filter(loops):
    """Envoy's worker spins in the loop for good; stopping it (SIGTERM, then SIGKILL) still works."""
    assert not envoy_pids() - BEFORE_ENVOYS, "an Envoy outlived its run"


def test_lua_loop_that_catches_the_deadline_error_is_still_stopped(tmp_path):
    """A script that pcall()s its loop and loops on still gets no response (emulator only: live
    Envoy spins the same way as for any endless loop, covered above)."""
    (tmp_path / "loop.lua").write_text(
        'function envoy_on_request(h)\n  if h:headers():get("x-loop") then\n'
        '    while true do pcall(function() while true do end end) end\n  end\nend\n')
    cases = [{"name": "caught loop", "request": {"headers": {"x-loop": "1"}, "timeout_ms": 300}},
             {"name": "next", "expect": {"status": 200}}]
    scenario = load(scenario_file(tmp_path, cases))
    looped, after = emulated.run_scenario(Artifact("lua", tmp_path / "loop.lua", "loop"), scenario)
    assert looped.error == no_response(300) and after.error is None


SLOW_CASES = [  # the upstream answers after 3 s and the route has no timeout of its own
    {"name": "waits long enough", "request": {"timeout_ms": 10000}, "expect": {"status": 200, "body": "late"}},
    {"name": "gives up first", "request": {"timeout_ms": 1000}, "expect": {"status": 200}},
    {"name": "next", "request": {"path": "/fast"}, "expect": {"status": 200}},
]


def test_a_response_slower_than_the_case_timeout_is_no_response_in_both(tmp_path):
    """The emulator counts virtual time to the response against the same timeout the live client waits."""
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump({
        "clusters": {"slow": {"status": 200, "body": "late", "delay_ms": 3000}},
        "routes": [{"match": {"prefix": "/fast"}}, {"match": {"prefix": "/"}, "cluster": "slow", "timeout_ms": 0}],
        "cases": SLOW_CASES}))
    scenario, emu, real = Differential(lambda _: NOOP).runs(path)
    waits, gives_up, after = scenario.cases
    for obs in (emu, real):
        assert check(waits, obs[waits.name]) == [], obs[waits.name]       # negative control: it does arrive
        assert obs[gives_up.name].error == no_response(1000)
        assert check(after, obs[after.name]) == []
    assert all(compare(emu[c.name], real[c.name]) == [] for c in scenario.cases)


def test_envoyext_test_fails_an_endless_loop_without_blaming_the_emulator(tmp_path):
    """End to end: the case fails in both runners with the same reason; no 'emulator bug'."""
    project = tmp_path / "spin"
    assert run_cli("new", "blank", "spin", "--lang", "lua", "--dir", project).returncode == 0
    (project / "filter.lua").write_text(LUA_LOOP)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    scenario_file(project / "scenarios", LOOP_CASES[1:2], "loop.yaml")
    r = run_cli("test", project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "EMULATOR DISAGREES" not in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stdout.count(f"no response within {LOOP_TIMEOUT_MS} ms") >= 2, r.stdout   # once per runner
