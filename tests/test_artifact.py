"""The Artifact carries everything filter.yaml says about how the filter runs, each value once."""

from pathlib import Path

from envoyext import project
from envoyext.artifact import Artifact, Attach, FailurePolicy


def lua_project(tmp_path: Path, extra: str = "") -> project.Project:
    (tmp_path / "filter.lua").write_text("function envoy_on_request(h) end\n")
    (tmp_path / "filter.yaml").write_text(f"name: f\nlang: lua\nsources: [filter.lua]\n{extra}")
    return project.load(tmp_path)


def test_failure_policy_is_one_enum_that_knows_envoys_names():
    assert [(p.value, p.envoy) for p in FailurePolicy] == [
        ("fail_closed", "FAIL_CLOSED"), ("fail_open", "FAIL_OPEN"), ("reload", "FAIL_RELOAD")]
    assert Artifact("wasm", Path("m.wasm"), "m", failure_policy="reload").failure_policy is FailurePolicy.RELOAD


def test_failure_policy_defaults_on_the_artifact_and_filter_yaml_overrides_it(tmp_path):
    plain = project.build_artifact(lua_project(tmp_path), tmp_path / "filter.lua")
    assert plain.failure_policy is FailurePolicy.FAIL_CLOSED
    chosen = project.build_artifact(lua_project(tmp_path, "failure_policy: fail_open\n"), tmp_path / "filter.lua")
    assert chosen.failure_policy is FailurePolicy.FAIL_OPEN


def test_attach_moves_from_filter_yaml_onto_the_artifact(tmp_path):
    plain = project.build_artifact(lua_project(tmp_path), tmp_path / "filter.lua")
    assert plain.attach == Attach(position="before", filter="envoy.filters.http.router")
    p = lua_project(tmp_path, "attach: {position: after, filter: envoy.filters.http.cors}\n")
    assert project.build_artifact(p, tmp_path / "filter.lua").attach == Attach("after", "envoy.filters.http.cors")


def test_lua_libraries_move_from_filter_yaml_onto_the_artifact(tmp_path):
    p = lua_project(tmp_path, "lua_libraries: [pw_match]\n")
    assert p.lua_libraries == ("pw_match",)
    assert project.build_artifact(p, tmp_path / "filter.lua").lua_libraries == ("pw_match",)
