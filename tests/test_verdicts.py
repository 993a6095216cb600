"""Verdicts a team can trust, through the real CLI and real Envoy: no false pass (duplicate case
names, cases no runner ran, script errors and traps in passing cases), the filter's own lines with
a failure, an emulated-vs-live comparison without per-request noise, and live Envoy's worker count
chosen (default one, what the emulator models) and blamed correctly when it is more."""

import json
import textwrap
from pathlib import Path

from tests.conftest import run_cli


def lua_project(tmp_path: Path, script: str, scenarios: dict[str, str], extra: str = "") -> Path:
    """A Lua filter project: filter.yaml, filter.lua and scenarios/<name>.yaml."""
    root = tmp_path / "p"
    (root / "scenarios").mkdir(parents=True)
    (root / "filter.yaml").write_text(f"name: p\nlang: lua\nsources: [filter.lua]\n{extra}")
    (root / "filter.lua").write_text(textwrap.dedent(script))
    for name, text in scenarios.items():
        (root / "scenarios" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


def results_of(r) -> dict:
    assert "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout)


PASS_THROUGH = """
function envoy_on_request(h)
  h:logInfo("request to " .. h:headers():get(":path"))
end
"""


# ---------------------------------------------------------------------------------------------
# 1. No false pass


def test_duplicate_case_names_are_refused_at_load(tmp_path):
    project = lua_project(tmp_path, PASS_THROUGH, {"dup": """
        cases:
          - {name: same, request: {path: /}, expect: {status: 418}}
          - {name: same, request: {path: /}, expect: {status: 200}}
        """})
    r = run_cli("test", project)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "dup.yaml" in lines[0] and "cases[1].name" in lines[0] and "cases[0]" in lines[0]
    assert "fix:" in lines[0]
    assert r.stdout == ""  # refused before anything ran


def test_distinct_names_let_the_failing_case_fail(tmp_path):
    """Negative control for the duplicate check: the same cases, named apart, give one FAIL."""
    project = lua_project(tmp_path, PASS_THROUGH, {"dup": """
        cases:
          - {name: first, request: {path: /}, expect: {status: 418}}
          - {name: second, request: {path: /}, expect: {status: 200}}
        """})
    r = run_cli("test", project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL dup › first" in r.stdout and "PASS dup › second" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "1 passed, 1 failed"


ONLY = {"only": """
    cases:
      - {name: everywhere, request: {path: /}, expect: {status: 200}}
      - {name: live only, only: live, request: {path: /}, expect: {status: 418}}
      - {name: emulated only, only: emulated, request: {path: /}, expect: {status: 418}}
    """}


def test_a_case_no_runner_ran_is_not_run_never_passed(tmp_path):
    project = lua_project(tmp_path, PASS_THROUGH, ONLY)
    r = run_cli("test", project, "--only", "emulated")
    assert r.returncode == 1, r.stdout + r.stderr  # 'emulated only' ran and failed
    assert "NOT RUN only › live only" in r.stdout
    assert "PASS only › live only" not in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "1 passed, 1 failed, 1 not run"
    doc = results_of(run_cli("test", project, "--only", "live", "--json"))
    status = {x["case"]: (x["status"], x["passed"]) for x in doc["results"]}
    assert status == {"everywhere": ("passed", True), "live only": ("failed", False),
                      "emulated only": ("not_run", False)}
    assert doc["summary"] == {"passed": 1, "failed": 1, "not_run": 1}


def test_not_run_cases_beside_passing_ones_exit_0(tmp_path):
    project = lua_project(tmp_path, PASS_THROUGH, {"only": """
        cases:
          - {name: everywhere, request: {path: /}, expect: {status: 200}}
          - {name: live only, only: live, request: {path: /}, expect: {status: 418}}
        """})
    r = run_cli("test", project, "--only", "emulated")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "1 passed, 0 failed, 1 not run"


def test_a_run_where_nothing_ran_is_not_a_pass(tmp_path):
    project = lua_project(tmp_path, PASS_THROUGH, {"only": """
        cases:
          - {name: live only, only: live, request: {path: /}, expect: {status: 200}}
        """})
    r = run_cli("test", project, "--only", "emulated")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NOT RUN only › live only" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("0 passed, 0 failed, 1 not run (nothing ran")
    # The emulator-only command says the same of a case only live Envoy runs.
    r = run_cli("emulate", project / "filter.lua", "--scenario", project / "scenarios" / "only.yaml")
    assert r.returncode == 1 and "NOT RUN only › live only" in r.stdout, r.stdout + r.stderr


FAILS_ON_HEADER = """
function envoy_on_request(h)
  h:logInfo("checking")
  if h:headers():get("x-boom") then error("boom from the script") end
end
"""


def test_a_passing_case_shows_the_script_errors_it_hid(tmp_path):
    project = lua_project(tmp_path, FAILS_ON_HEADER, {"errors": """
        cases:
          - {name: clean, request: {path: /}, expect: {status: 200}}
          - {name: script error, request: {path: /, headers: {x-boom: "1"}}, expect: {status: 200}}
        """})
    r = run_cli("test", project)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    hidden = out[out.index("PASS errors › script error"):]
    for runner in ("emulated", "live"):
        assert f"warning: the filter failed in {runner}:" in hidden
    assert hidden.count("boom from the script") == 2
    clean = out[out.index("PASS errors › clean"):out.index("PASS errors › script error")]
    assert "warning" not in clean  # negative control: a case without errors shows none
    doc = results_of(run_cli("test", project, "--json"))
    errors = {x["case"]: x["filter_errors"] for x in doc["results"]}
    assert errors["clean"] == {}
    assert set(errors["script error"]) == {"emulated", "live"}
    assert all("boom from the script" in e[0] for e in errors["script error"].values())


def test_a_passing_case_shows_a_wasm_trap(tmp_path):
    r = run_cli("new", "blank", "t", "--lang", "c", "--dir", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    project = tmp_path / "t"
    src = project / "filter.c"
    logs_path = '        pw_logf(PW_LOG_INFO, "t: request to %s", path);\n'
    assert logs_path in src.read_text()
    src.write_text(src.read_text().replace(
        logs_path, logs_path + '        if (strcmp(path, "/trap") == 0) __builtin_trap();\n'))
    (project / "scenarios" / "trap.yaml").write_text(
        "cases:\n"
        "  - {name: calm, request: {path: /}}\n"
        "  - {name: traps, request: {path: /trap}, expect: {status: 503}}\n")
    doc = results_of(run_cli("test", project, "--json"))
    by_case = {x["case"]: x for x in doc["results"]}
    assert by_case["traps"]["passed"], by_case["traps"]
    errors = by_case["traps"]["filter_errors"]
    assert set(errors) == {"emulated", "live"}, errors
    assert all("Wasm VM failed" in e[0] and "proxy_on_request_headers" in e[0] for e in errors.values())
    assert by_case["calm"]["filter_errors"] == {}


def test_a_failing_case_shows_the_filters_last_log_lines(tmp_path):
    project = lua_project(tmp_path, """
        function envoy_on_request(h)
          for i = 1, 12 do h:logInfo("step " .. i) end
          h:logErr("giving up")
        end
        """, {"fails": "cases: [{name: wrong, request: {path: /}, expect: {status: 418}}]\n"})
    r = run_cli("test", project)
    assert r.returncode == 1, r.stdout + r.stderr
    for runner in ("emulated", "live"):
        assert f"{runner} filter log (last 10):" in r.stdout
    assert r.stdout.count("error: giving up") == 2 and r.stdout.count("info: step 12") == 2
    assert "step 4\n" in r.stdout and "step 3\n" not in r.stdout  # the last ten lines only


# ---------------------------------------------------------------------------------------------
# 3. Differential comparison without noise


ECHOES_PER_REQUEST_VALUES = """
function envoy_on_request(h)
  local id = h:headers():get("x-request-id")
  local peer = h:streamInfo():downstreamRemoteAddress()
  h:logInfo("request " .. id .. " from " .. peer .. " at " .. os.date("!%a, %d %b %Y %H:%M:%S GMT"))
  h:respond({[":status"] = "200", ["x-seen-id"] = id, ["x-peer"] = peer}, "id=" .. id .. " peer=" .. peer)
end
"""


def test_per_request_values_do_not_make_the_emulator_disagree(tmp_path):
    project = lua_project(tmp_path, ECHOES_PER_REQUEST_VALUES, {"noise": """
        cases:
          - {name: echoes ids and ports, request: {path: /}, expect: {status: 200, body_contains: "id="}}
        """})
    r = run_cli("test", project, "--json")
    doc = results_of(r)
    [result] = doc["results"]
    assert result["disagreements"] == [] and result["passed"], result
    logs = {k: o["logs"] for k, o in result["observations"].items()}
    assert logs["emulated"] != logs["live"]  # the raw lines do differ: request ids and ports


def test_a_real_difference_still_disagrees_and_shows_masked(tmp_path):
    """Negative control: the emulator's listener is 127.0.0.1:10000, live Envoy's an ephemeral
    port (never 10000); a script that acts on it makes a difference that is not a per-request
    value. Masking must not hide it; the diff shows the ids masked."""
    project = lua_project(tmp_path, """
        function envoy_on_request(h)
          local id = h:headers():get("x-request-id")
          local emulated = h:streamInfo():downstreamLocalAddress() == "127.0.0.1:10000"
          h:logInfo("request " .. id .. (emulated and " in the emulator" or " in Envoy"))
        end
        """, {"real": "cases: [{name: differs, request: {path: /}, expect: {status: 200}}]\n"})
    r = run_cli("test", project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "EMULATOR DISAGREES WITH LIVE ENVOY (an emulator bug):" in r.stdout
    diff = r.stdout[r.stdout.index("EMULATOR DISAGREES"):]
    assert "request <uuid> in the emulator" in diff and "request <uuid> in Envoy" in diff


# ---------------------------------------------------------------------------------------------
# 3. Live Envoy's worker count


COUNTS_IN_A_GLOBAL = """
-- A global lives in one Lua state; Envoy keeps one state per worker.
served = 0
function envoy_on_request(h)
  served = served + 1
  h:respond({[":status"] = "200", ["x-served"] = tostring(served)}, "")
end
"""
# 20 connections: with two workers, all of them landing on one worker has odds of 2 in 2^20.
COUNT = """
cases:
  - name: one state sees every request
    repeat: 20
    expect: {status: 200, headers: {x-served: "20"}}
"""


def test_one_worker_by_default_so_per_worker_state_agrees(tmp_path):
    project = lua_project(tmp_path, COUNTS_IN_A_GLOBAL, {"count": COUNT})
    doc = results_of(run_cli("test", project, "--json"))
    [result] = doc["results"]
    assert result["workers"] == 1
    assert result["passed"] and result["disagreements"] == [], result


def test_more_workers_are_named_not_blamed_on_the_emulator(tmp_path):
    project = lua_project(tmp_path, COUNTS_IN_A_GLOBAL, {"count": COUNT})
    r = run_cli("test", project, "--workers", "2")
    assert r.returncode == 1, r.stdout + r.stderr  # live, with 2 workers, does not meet the expectation
    assert "EMULATOR DISAGREES" not in r.stdout
    assert "differs with 2 workers (the emulator models one worker): headers" in r.stdout
    assert "depend on the worker count: headers.x-served" in r.stdout


def test_workers_precedence_cli_over_scenario_over_filter_yaml(tmp_path):
    project = lua_project(tmp_path, PASS_THROUGH, {
        "a_default": "cases: [{name: a, request: {path: /}}]\n",
        "b_scenario": "workers: 1\ncases: [{name: b, request: {path: /}}]\n"}, extra="workers: 2\n")
    doc = results_of(run_cli("test", project, "--only", "live", "--json"))
    assert {x["case"]: x["workers"] for x in doc["results"]} == {"a": 2, "b": 1}
    doc = results_of(run_cli("test", project, "--only", "live", "--json", "--workers", "3"))
    assert {x["case"]: x["workers"] for x in doc["results"]} == {"a": 3, "b": 3}


def test_bad_worker_counts_are_one_line_errors(tmp_path):
    project = lua_project(tmp_path, PASS_THROUGH, {"s": "workers: 0\ncases: [{name: a}]\n"})
    r = run_cli("test", project)
    assert r.returncode == 2 and "workers" in r.stderr and "Traceback" not in r.stderr, r.stderr
    (project / "scenarios" / "s.yaml").write_text("cases: [{name: a}]\n")
    (project / "filter.yaml").write_text("name: p\nlang: lua\nsources: [filter.lua]\nworkers: many\n")
    r = run_cli("test", project)
    assert r.returncode == 2 and "workers" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_observations_pair_with_cases_by_position_not_name():
    """A scenario built in Python (no loader to refuse it) with two cases of one name keeps both."""
    from envoyext import runners, testrun
    from envoyext import scenario as S
    sc = S.from_dict({"cases": [{"name": "x"}, {"name": "y", "only": "live"}, {"name": "z"}]}, Path("s.yaml"))
    sc.cases[2].name = "x"
    seen = [S.Observation("x", "emulated", S.Response(418, [], b"")), S.Observation("x", "emulated", None)]
    paired = testrun._by_case(sc, runners.EMULATED, seen)
    assert paired == [seen[0], None, seen[1]]


def test_a_runner_that_skipped_a_case_does_not_shift_the_others():
    """Pairing by position checks names: an observation of another case is an error, not a pass."""
    from envoyext import runners, testrun
    from envoyext import scenario as S
    sc = S.from_dict({"cases": [{"name": "a"}, {"name": "b"}]}, Path("s.yaml"))
    paired = testrun._by_case(sc, runners.EMULATED, [S.Observation("b", "emulated", S.Response(200, [], b""))])
    assert paired[0].error and "'b'" in paired[0].error and paired[1] is None


def test_worker_differences_fail_only_with_one_worker():
    """Negative control: with one worker, the same emulated-vs-live difference is an emulator bug."""
    from envoyext import runners, testrun
    from envoyext import scenario as S
    sc = S.from_dict({"cases": [{"name": "x"}]}, Path("s.yaml"))
    by_runner = {runners.EMULATED: [S.Observation("x", "emulated", S.Response(200, [("x-n", "2")], b""))],
                 runners.LIVE: [S.Observation("x", "live", S.Response(200, [("x-n", "1")], b""))]}
    one = testrun._judge(sc, 0, by_runner, None, workers=1)
    assert one.status == testrun.FAILED and [m.where for m in one.disagreements] == ["headers"]
    two = testrun._judge(sc, 0, by_runner, None, workers=2)
    assert two.status == testrun.PASSED and two.disagreements == []
    assert [m.where for m in two.worker_differences] == ["headers"]


# Counts, once per VM, the VMs whose timer fires: Envoy runs one on the main thread and one per
# worker, so the count follows the worker count in live Envoy and must in the emulator too.
COUNTS_TICKING_VMS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proxy_wasm.h"

static bool counted = false;  /* one per VM: each VM has its own memory */

bool pw_on_configure(pw_root *root, const char *json, size_t len) {
    pw_set_tick_period_ms(10);
    return true;
}

void pw_on_tick(pw_root *root) {
    while (!counted) {  /* compare-and-swap: VMs on other threads count too */
        char *value = NULL;
        size_t len = 0;
        uint32_t cas = 0;
        int n = pw_get_shared_data("ticking_vms", &value, &len, &cas) == PW_OK ? atoi(value) : 0;
        free(value);
        char next[16];
        snprintf(next, sizeof next, "%d", n + 1);
        counted = pw_set_shared_data("ticking_vms", next, strlen(next), cas) == PW_OK;
    }
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    char *value = NULL;
    size_t len = 0;
    pw_get_shared_data("ticking_vms", &value, &len, NULL);
    const char *count = value ? value : "0";
    pw_header reply[] = {{"x-ticking-vms", 13, count, strlen(count)}};
    pw_respond(200, NULL, reply, 1);
    free(value);
    return PW_PAUSE;
}
"""


def test_the_emulator_runs_as_many_wasm_vms_as_live_envoy(tmp_path):
    """Main thread + one worker by default; main thread + two with `workers: 2`. Both runners
    agree on either (a 300 ms wait lets every VM's 10 ms timer fire)."""
    project = tmp_path / "ticks"
    (project / "scenarios").mkdir(parents=True)
    (project / "filter.yaml").write_text("name: ticks\nlang: c\nsources: [filter.c]\nroot_id: ticks\n")
    (project / "filter.c").write_text(COUNTS_TICKING_VMS)
    case = "cases: [{{name: vms, wait_ms: 300, expect: {{status: 200, headers: {{x-ticking-vms: '{}'}}}}}}]\n"
    (project / "scenarios" / "one.yaml").write_text(case.format(2))
    (project / "scenarios" / "two.yaml").write_text("workers: 2\n" + case.format(3))
    doc = results_of(run_cli("test", project, "--json"))
    for result in doc["results"]:
        assert result["passed"], result
        assert result["disagreements"] == result["worker_differences"] == [], result
    assert [r["workers"] for r in doc["results"]] == [1, 2]
