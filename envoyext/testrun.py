"""`envoyext test`: every scenario of a project through the emulator and live Envoy, judged.

Each case is checked against its expectations once per runner; where both runners ran, their
observations are compared too (a disagreement is an emulator bug and fails the case); where the
scenario names a native `oracle`, the filter's live run is compared with the native filter's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from envoyext import scenario as scenario_mod
from envoyext.artifact import Artifact
from envoyext.errors import UserError
from envoyext.project import Project
from envoyext.scenario import Mismatch, Observation, Scenario

LIVE = "live"
EMULATED = "emulated"


@dataclass
class CaseResult:
    scenario: str
    case: str
    observations: dict[str, Observation] = field(default_factory=dict)   # runner -> what it saw
    failures: dict[str, list[Mismatch]] = field(default_factory=dict)    # runner -> unmet expectations
    disagreements: list[Mismatch] = field(default_factory=list)          # emulated vs live
    oracle: list[Mismatch] = field(default_factory=list)                 # filter vs native filter

    @property
    def passed(self) -> bool:
        return not any(self.failures.values()) and not self.disagreements and not self.oracle

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario, "case": self.case, "passed": self.passed,
            "failures": {k: [str(m) for m in v] for k, v in self.failures.items()},
            "disagreements": [str(m) for m in self.disagreements],
            "oracle": [str(m) for m in self.oracle],
            "observations": {k: v.to_json() for k, v in self.observations.items()},
        }


def run_scenario(artifact: Artifact, sc: Scenario, *, runners: tuple[str, ...] = (EMULATED, LIVE),
                 runtime: str = "process", validated: bool = False) -> list[CaseResult]:
    """`validated`: live.validate() already accepted this scenario's configuration."""
    by_runner: dict[str, dict[str, Observation]] = {}
    native: dict[str, Observation] = {}
    if EMULATED in runners:
        from envoyext.runners import emulated
        by_runner[EMULATED] = _guarded(EMULATED, sc, lambda: emulated.run_scenario(artifact, sc))
    if LIVE in runners:
        from envoyext.runners import live
        by_runner[LIVE] = _guarded(LIVE, sc, lambda: live.run_scenario(
            artifact, sc, runtime=runtime, check_config=not validated))
        if sc.oracle:
            native = _guarded("native", sc, lambda: live.run_scenario(
                None, sc, oracle=True, runtime=runtime, check_config=not validated))
    results = []
    for case in sc.cases:
        r = CaseResult(sc.name, case.name)
        for runner, obs in by_runner.items():
            if case.name in obs:
                r.observations[runner] = obs[case.name]
                r.failures[runner] = scenario_mod.check(case, obs[case.name])
        if EMULATED in r.observations and LIVE in r.observations:
            r.disagreements = scenario_mod.compare(r.observations[EMULATED], r.observations[LIVE])
        if LIVE in r.observations and case.name in native:
            r.observations["native"] = native[case.name]
            r.oracle = scenario_mod.compare(native[case.name], r.observations[LIVE], parts=sc.oracle.compare)
        results.append(r)
    return results


def _guarded(runner: str, sc: Scenario, run: Callable[[], list[Observation]]) -> dict[str, Observation]:
    """A runner that breaks (a bug, not bad input) fails its cases with the reason; it does not
    abort the whole test run with a traceback. ENVOYEXT_DEBUG=1 lets it raise."""
    try:
        return {o.case: o for o in run()}
    except UserError:
        raise
    except Exception as e:
        if os.environ.get("ENVOYEXT_DEBUG"):
            raise
        reason = f"{runner} runner failed: {type(e).__name__}: {e}"
        return {c.name: Observation(case=c.name, runner=runner, error=reason) for c in sc.cases}


def run_project(project: Project, artifact: Artifact, *, runners: tuple[str, ...] = (EMULATED, LIVE),
                runtime: str = "process",
                on_result: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    scenarios = [scenario_mod.load(path, default_config=project.config) for path in project.scenario_files]
    for sc in scenarios:  # every bad input is reported before anything runs
        project.check_config(sc.config, sc.path)
        if LIVE in runners:
            from envoyext.runners import live
            live.validate(artifact, sc, project_file=project.file)
            if sc.oracle:
                live.validate(None, sc, oracle=True)
    results = []
    for sc in scenarios:
        for r in run_scenario(artifact, sc, runners=runners, runtime=runtime, validated=LIVE in runners):
            results.append(r)
            if on_result:
                on_result(r)
    return results
