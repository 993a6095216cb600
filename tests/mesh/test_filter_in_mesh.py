"""A filter project names a mesh and a workload (filter.yaml `mesh:`), and `envoyext test` runs its
scenarios in that workload's sidecar against live Envoys: the library's CORS filter as Lua on
productpage's inbound side (details-v1, the default sender, calls productpage), and as Wasm (C) on productpage's
outbound side (productpage calls details). Each run is judged case by case; the filter's own
counters are read from the attached sidecar; the proxy's config_dump shows the filter next to
Istio's filters. Negative controls: a wrong expectation fails in the mesh runner; an expectation
the mesh cannot judge is NOT RUN there, never passed; a filter no request reaches is refused,
naming filter.yaml mesh.workload."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoyext import project as project_mod
from envoyext import scenario, testrun
from envoyext.errors import UserError
from envoyext.mesh import filtercase
from envoyext.runners import MESH
from envoyext.runners import mesh as mesh_runner
from envoyext.scenario import Observation

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = Path(__file__).resolve().parents[2] / "examples" / "bookinfo" / "platform.yaml"
ROUTER = "envoy.filters.http.router"

# A body the test upstream's echo would hold; in the mesh a stand-in app answers: NOT RUN there.
ECHO_BODY = {"description": "an expectation on the test upstream's echo body",
             "cases": [{"name": "echo names the path", "request": {"method": "GET", "path": "/echo-me"},
                        "expect": {"status": 200, "body_contains": "/echo-me"}}]}


def project(tmp: Path, lang: str, mesh: dict[str, Any], scenarios: list[str]) -> project_mod.Project:
    """A copy of filters/cors with `mesh:` added to its <lang>/filter.yaml."""
    dest = tmp / "cors"
    shutil.copytree(ROOT / "filters" / "cors", dest, ignore=shutil.ignore_patterns("build", "__pycache__"))
    (dest / lang / "scenarios" / "echo.yaml").write_text(yaml.safe_dump(ECHO_BODY))
    f = dest / lang / "filter.yaml"
    data = yaml.safe_load(f.read_text())
    data["mesh"] = {"resources": [str(PLATFORM)], **mesh}
    data["scenarios"] = scenarios
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return project_mod.load(dest / lang)


def run(proj: project_mod.Project) -> tuple[Any, list[testrun.CaseResult]]:
    artifact = project_mod.build(proj)
    return artifact, testrun.run_project(proj, artifact, runners=(MESH,))


def chain(proj: project_mod.Project, artifact: Any, listener: str) -> list[str]:
    """The HTTP filter names of `listener` in the attached workload's live config_dump."""
    sc = testrun.in_project_mesh(scenario.load(proj.scenario_files[0], default_config=proj.config), proj)
    assert sc.mesh is not None
    mesh_runner.validate(sc)
    current = mesh_runner.attached(artifact, sc, mesh_runner.load_resources(sc.mesh.resources))
    with mesh_runner.started(mesh_runner.build(current)) as rt:
        proxy = mesh_runner.running(rt).proxy(sc.mesh.attach["workload"])
        assert proxy is not None
        dump = rt.admin(proxy.name).config_dump()
    found = [l for l in _walk(dump) if l.get("name") == listener and "filter_chains" in l]
    assert found, f"no listener {listener} in {proxy.name}'s config_dump"
    chains = [[f["name"] for f in hf] for hf in _http_filters(found[0])]
    assert chains
    return chains[0]


def _walk(x: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(x, dict):
        out.append(x)
        for v in x.values():
            out += _walk(v)
    elif isinstance(x, list):
        for v in x:
            out += _walk(v)
    return out


def _http_filters(listener: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [d["http_filters"] for d in _walk(listener) if "http_filters" in d]


def _by_case(results: list[testrun.CaseResult]) -> dict[str, str]:
    return {r.case: r.status for r in results}


def _wrong(results: list[testrun.CaseResult], proj: project_mod.Project, case: str, expect: dict) -> list:
    """A case's mesh observation judged against another expectation (a negative control)."""
    for path in proj.scenario_files:
        sc = scenario.load(path, default_config=proj.config)
        for c in sc.cases:
            if c.name == case:
                wrong = copy.deepcopy(c)
                wrong.expect = expect
                seen = next(r for r in results if r.case == case).observations[MESH]
                return scenario.check(wrong, seen)
    raise AssertionError(case)


@pytest.fixture(scope="module")
def lua_inbound(tmp_path_factory):
    proj = project(tmp_path_factory.mktemp("lua"), "lua", {"workload": "productpage-v1"},
                   ["../scenarios/policy.yaml", "scenarios/*.yaml"])
    artifact, results = run(proj)
    return proj, artifact, results


@pytest.fixture(scope="module")
def wasm_outbound(tmp_path_factory):
    proj = project(tmp_path_factory.mktemp("c"), "c",
                   {"workload": "productpage-v1", "context": "SIDECAR_OUTBOUND", "to": "details:9080"},
                   ["../scenarios/policy.yaml", "scenarios/*.yaml"])
    artifact, results = run(proj)
    return proj, artifact, results


def test_lua_filter_runs_in_the_inbound_sidecar(lua_inbound):
    proj, _, results = lua_inbound
    status = _by_case(results)
    failed = {r.case: [str(m) for ms in r.failures.values() for m in ms] for r in results if r.status == "failed"}
    assert failed == {}
    assert sum(s == "passed" for s in status.values()) >= 10, status
    # The stats cases read the filter's counters from productpage's sidecar, where it ran.
    assert status["allowed and disallowed origins are counted"] == "passed"
    seen = next(r for r in results if r.case == "allowed and disallowed origins are counted").observations[MESH]
    assert seen.stats["http.ingress_http.lua.cors.origin_valid"] == 2
    assert seen.stats["http.ingress_http.downstream_rq_total"] == 2   # productpage's inbound HCM, renamed
    assert seen.proxy.startswith("details-v1")  # the default sender: the first other workload by name


def test_wasm_filter_runs_in_the_outbound_sidecar(wasm_outbound):
    _, _, results = wasm_outbound
    failed = {r.case: [str(m) for ms in r.failures.values() for m in ms] for r in results if r.status == "failed"}
    assert failed == {}
    assert sum(r.status == "passed" for r in results) >= 8
    seen = next(r for r in results if r.case == "actual request from a prefix origin gets the response headers")
    obs = seen.observations[MESH]
    assert obs.proxy.startswith("productpage-v1")          # the attached workload sends
    assert {rx.proxy.rsplit("-", 1)[0] for rx in obs.upstream} == {"details-v1"}


def test_a_body_from_the_test_upstream_is_not_run_in_the_mesh(lua_inbound, wasm_outbound):
    for _, _, results in (lua_inbound, wasm_outbound):
        r = next(r for r in results if r.case == "echo names the path")
        assert r.status == "not_run" and not r.passed
        assert "stand-in app answered" in r.not_run[MESH]


def test_negative_control_a_wrong_expectation_fails_in_the_mesh(lua_inbound, wasm_outbound):
    proj, _, results = lua_inbound
    assert _wrong(results, proj, "preflight from an allowed origin is answered locally", {"status": 204})
    assert _wrong(results, proj, "allowed and disallowed origins are counted",
                  {"stats": {"http.ingress_http.lua.cors.origin_valid": 3}})
    proj, _, results = wasm_outbound
    assert _wrong(results, proj, "actual request from a prefix origin gets the response headers",
                  {"headers": {"access-control-allow-origin": "https://nobody.example"}})


def test_the_filter_sits_next_to_istios_filters_in_the_live_config_dump(lua_inbound, wasm_outbound):
    proj, artifact, _ = lua_inbound
    names = chain(proj, artifact, "virtualInbound")
    # INSERT_BEFORE the router, as publish emits it: after Istio's fault, cors and stats filters.
    assert names == ["envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats", artifact.name, ROUTER]
    proj, artifact, _ = wasm_outbound
    names = chain(proj, artifact, "0.0.0.0_9080")
    # A WasmPlugin without a phase (UNSPECIFIED), named and placed as Istio places it: before fault.
    assert names == [f"extensions.istio.io/wasmplugin/default.{artifact.name}", "envoy.filters.http.fault",
                     "envoy.filters.http.cors", "istio.stats", ROUTER]


def test_negative_control_a_filter_no_request_reaches_names_mesh_workload(tmp_path):
    proj = project(tmp_path, "lua", {"workload": "reviews-v1", "to": "productpage:9080"}, ["../scenarios/policy.yaml"])
    artifact = project_mod.build(proj)
    with pytest.raises(UserError) as e:
        testrun.run_project(proj, artifact, runners=(MESH,))
    assert e.value.field == "mesh.workload" and "filter.yaml" in str(e.value)
    assert "\n" not in str(e.value)
    # And at run time: a case none of whose requests passed the attached side fails, saying so.
    sc = testrun.in_project_mesh(scenario.load(proj.scenario_files[0], default_config=proj.config), proj)
    assert sc.mesh is not None
    mesh = mesh_runner.build(mesh_runner.load_resources(sc.mesh.resources))
    obs = filtercase.as_filter_sees(Observation(case="c", runner=MESH, proxy="productpage-v1-0"), mesh,
                                    sc.mesh.attach)
    assert obs.error and "mesh.workload" in obs.error and "reviews-v1" in obs.error


def test_negative_control_outbound_from_another_workload_is_refused(tmp_path):
    proj = project(tmp_path, "lua", {"workload": "productpage-v1", "context": "SIDECAR_OUTBOUND",
                                     "from": "reviews-v1"}, ["../scenarios/policy.yaml"])
    with pytest.raises(UserError) as e:
        testrun.run_project(proj, project_mod.build(proj), runners=(MESH,))
    assert e.value.field == "mesh.workload"


def test_cases_the_mesh_cannot_judge_are_named_before_running():
    """Library scenarios whose expectations the mesh cannot answer, each with its reason."""
    authz = scenario.load(ROOT / "filters" / "ext-authz" / "scenarios" / "decisions.yaml")
    assert all("clusters the scenario defines" in str(filtercase.not_run(authz, c)) for c in authz.cases)
    csrf = scenario.load(ROOT / "filters" / "csrf" / "scenarios" / "enforce.yaml")
    same = next(c for c in csrf.cases if c.name == "same-origin POST passes")
    assert "names its authority (shop.example.com)" in str(filtercase.not_run(csrf, same))
    cross = next(c for c in csrf.cases if c.name == "DELETE without Origin or Referer is refused")
    assert filtercase.not_run(csrf, cross) is None   # judged in the mesh


def test_envoyext_test_shows_emulated_live_and_mesh_verdicts(tmp_path):
    from click.testing import CliRunner

    from envoyext.cli import main
    proj = project(tmp_path, "lua", {"workload": "productpage-v1"},
                   ["../scenarios/no_forward.yaml", "scenarios/echo.yaml"])
    out = CliRunner().invoke(main, ["test", str(proj.root)])
    lines = out.output.splitlines()
    assert out.exit_code == 0, out.output
    assert "PASS no_forward › suffix match ignores case  [emulated live mesh]" in lines, out.output
    # The echo body is judged by the emulator and live Envoy, and NOT RUN in the mesh, with the reason.
    assert any(l.startswith("PASS echo") and l.endswith("[emulated live mesh: not run]") for l in lines), out.output
    assert any("mesh: not run: expects a body from the test upstream's echo" in l for l in lines), out.output
