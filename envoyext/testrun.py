"""`envoyext test`: every scenario of a project through the emulator and live Envoy, judged.

Each case is checked against its expectations once per runner; where both runners ran, their
observations are compared too (a disagreement is an emulator bug and fails the case, unless live
Envoy ran more than one worker: the emulator models one, so the differences are reported as the
worker count's); where the scenario names a native `oracle`, the filter's live run is compared
with the native filter's. A case that no runner ran is NOT RUN, never passed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from envoyext import scenario as scenario_mod
from envoyext.artifact import Artifact
from envoyext.errors import UserError
from envoyext.project import Project
from envoyext.runners import EMULATED, LIVE, MESH, NATIVE, Settings, named, oracles_of, runners_for, selectable
from envoyext.scenario import Mismatch, Observation, Scenario

# A case's verdict, its `status` in --json. NOT_RUN: no runner executed it (its `only:` excludes
# every runner of the run); it is never counted as passed.
PASSED, FAILED, NOT_RUN = "passed", "failed", "not_run"


@dataclass
class CaseResult:
    scenario: str
    case: str
    observations: dict[str, Observation] = field(default_factory=dict)   # runner -> what it saw
    failures: dict[str, list[Mismatch]] = field(default_factory=dict)    # runner -> unmet expectations
    disagreements: list[Mismatch] = field(default_factory=list)          # emulated vs live (an emulator bug)
    oracle: list[Mismatch] = field(default_factory=list)                 # filter vs native filter
    workers: int = 1                                                     # live Envoy's worker threads
    # Emulated vs live with workers > 1: the emulator models one worker, so these are the worker
    # count's doing, not an emulator bug; reported, and not failing the case by themselves.
    worker_differences: list[Mismatch] = field(default_factory=list)
    # runner -> why it could not judge this case (a filter's case in its project's mesh whose
    # expectation the mesh cannot answer): that runner's verdict is NOT RUN, never a pass.
    not_run: dict[str, str] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return bool(self.failures)  # some runner observed the case and it was checked

    @property
    def status(self) -> str:
        if not self.ran:
            return NOT_RUN
        failed = any(self.failures.values()) or self.disagreements or self.oracle
        return FAILED if failed else PASSED

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def filter_errors(self) -> dict[str, list[str]]:
        """runner -> the filter's own errors (script errors, VM failures) in that runner's run."""
        out = {}
        for runner, obs in self.observations.items():
            errors = scenario_mod.filter_errors(obs)
            if errors:
                out[runner] = errors
        return out

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario, "case": self.case, "passed": self.passed, "status": self.status,
            "failures": {k: [str(m) for m in v] for k, v in self.failures.items()},
            "disagreements": [str(m) for m in self.disagreements],
            "oracle": [str(m) for m in self.oracle],
            "workers": self.workers,
            "worker_differences": [str(m) for m in self.worker_differences],
            "not_run": dict(self.not_run),
            "filter_errors": self.filter_errors(),
            "observations": {k: v.to_json() for k, v in self.observations.items()},
        }


def exit_code(results: list[CaseResult]) -> int:
    """0 when every case that ran passed and at least one ran; 1 otherwise (a run that executed
    nothing proves nothing, so it is not a pass)."""
    if any(r.status == FAILED for r in results) or not any(r.ran for r in results):
        return 1
    return 0


def run_scenario(artifact: Artifact | None, sc: Scenario, *, runners: tuple[str, ...] = selectable(),
                 runtime: str = "process", validated: bool = False, workers: int = 1) -> list[CaseResult]:
    """`runners`: registry names (envoyext.runners), each run in turn, then the oracles compared
    with them when the scenario names one. `validated`: every runner's validate() already
    accepted this scenario. `workers`: live Envoy's worker threads. The emulator runs (and ticks) a
    Wasm VM per thread as Envoy does, but serves every stream from one worker's state."""
    settings = Settings(runtime=runtime, workers=workers, validated=validated)
    by_runner: dict[str, list[Observation | None]] = {}
    native: list[Observation | None] = [None] * len(sc.cases)
    for name in runners_for(sc, runners):
        runner = named(name)
        by_runner[runner.name] = _guarded(runner.name, sc, partial(runner.run, artifact, sc, settings))
        for oracle in oracles_of(runner.name) if sc.oracle else []:
            native = _guarded(oracle.name, sc, partial(oracle.run, artifact, sc, settings))
    return [_judge(sc, i, by_runner, native[i], workers) for i in range(len(sc.cases))]


def _judge(sc: Scenario, i: int, by_runner: dict[str, list[Observation | None]],
           native: Observation | None, workers: int) -> CaseResult:
    """The verdict on case `i` from every runner's observation of it."""
    case = sc.cases[i]
    r = CaseResult(sc.name, case.name, workers=workers)
    for runner, observations in by_runner.items():
        seen = observations[i]
        reason = _not_judged(sc, runner, i, seen)
        if reason:
            r.not_run[runner] = reason
        elif seen is not None:
            r.observations[runner] = seen
            r.failures[runner] = scenario_mod.check(case, seen)
    if EMULATED in r.observations and LIVE in r.observations:
        differences = scenario_mod.compare(r.observations[EMULATED], r.observations[LIVE])
        if workers > 1:
            r.worker_differences = differences
        else:
            r.disagreements = differences
    if LIVE in r.observations and native is not None and sc.oracle is not None:
        r.observations[NATIVE] = native
        r.oracle = scenario_mod.compare(native, r.observations[LIVE], parts=sc.oracle.compare)
    return r


def _not_judged(sc: Scenario, runner: str, i: int, seen: Observation | None) -> str | None:
    """Why the mesh runner cannot judge a filter's case in its project's mesh (envoyext.mesh.filtercase)."""
    if runner != MESH or seen is None or sc.mesh is None or sc.mesh.attach is None:
        return None
    from envoyext.mesh import filtercase
    return filtercase.not_judged(sc, sc.cases[i], seen)


def _by_case(sc: Scenario, runner: str, observations: list[Observation]) -> list[Observation | None]:
    """Observations lined up with `sc.cases` by position (None: a case `only:` keeps from this
    runner). Runners observe the cases they run, in order; pairing by name could drop a case."""
    pending = iter(observations)
    lined_up = [next(pending, None) if named(runner).runs(case.only) else None for case in sc.cases]
    for i, (case, obs) in enumerate(zip(sc.cases, lined_up)):
        if obs is not None and obs.case != case.name:  # a runner that skipped a case must not shift the rest
            lined_up[i] = Observation(case=case.name, runner=runner,
                                      error=f"{runner} runner observed '{obs.case}' in place of this case")
    return lined_up


def _guarded(runner: str, sc: Scenario, run: Callable[[], list[Observation]]) -> list[Observation | None]:
    """A runner that breaks (a bug, not bad input) fails its cases with the reason; it does not
    abort the whole test run with a traceback. ENVOYEXT_DEBUG=1 lets it raise."""
    try:
        return _by_case(sc, runner, run())
    except UserError:
        raise
    except Exception as e:
        if os.environ.get("ENVOYEXT_DEBUG"):
            raise
        reason = f"{runner} runner failed: {type(e).__name__}: {e}"
        ran = [c for c in sc.cases if named(runner).runs(c.only)]
        return _by_case(sc, runner, [Observation(case=c.name, runner=runner, error=reason) for c in ran])


def in_project_mesh(sc: Scenario, project: Project) -> Scenario:
    """A filter's own scenario, also to be run in the project's mesh (filter.yaml `mesh:`): the
    emulator and the single live Envoy run it as always, the mesh runner with the filter attached to
    the named workload and each case sent as the block says (by default, inbound: from the first
    other workload to the workload's service; outbound: from the workload to the first other service).
    What an expectation means there, and which cases the mesh reports NOT RUN: envoyext.mesh.filtercase."""
    if project.mesh is None or sc.mesh is not None:
        return sc
    from envoyext.scenario import MeshSpec
    m = project.mesh
    sc.mesh = MeshSpec(resources=list(m["resources"]), workloads={},
                       attach={"workload": m["workload"], "context": m.get("context", "SIDECAR_INBOUND"),
                               "file": project.file},
                       source=m.get("from"), target=m.get("to"))
    return sc


def in_published_mesh(sc: Scenario, resources: list[Path], published_file: Path) -> Scenario:
    """A filter's own scenario run in the mesh of `resources` with the filter the published file
    carries (`envoyext mesh test --filter`): nothing is attached by envoyext, so what runs is what
    a cluster would apply. Its cases go where envoyext.mesh.published reads the resource to sit."""
    from envoyext.mesh import published
    from envoyext.runners.mesh import build, load_resources
    from envoyext.scenario import MeshSpec
    if sc.mesh is not None:
        raise UserError("a mesh scenario names its own resources; --filter runs a filter's own scenario",
                        file=sc.path, field="mesh", fix="pass the published file with -f instead of --filter")
    if not resources:
        raise UserError("no mesh to run the published filter in", field="-f",
                        fix="pass the mesh's resources, e.g. -f examples/bookinfo/platform.yaml")
    res = published.the_filter(load_resources([published_file]), published_file)
    published.check_config(res, sc.config, sc.path)
    everything = [*resources, published_file]
    sc.mesh = MeshSpec(resources=everything, workloads={},
                       attach=published.attach(res, build(load_resources(everything)), published_file))
    return sc


def run_project(project: Project, artifact: Artifact, *, runners: tuple[str, ...] = selectable(),
                runtime: str = "process", workers: int | None = None,
                on_result: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    """`workers`: live Envoy's worker threads from the command line; it overrides a scenario's
    `workers`, which overrides filter.yaml's (default 1, what the emulator models)."""
    scenarios = [in_project_mesh(scenario_mod.load(path, default_config=project.config), project)
                 for path in project.scenario_files]
    for sc in scenarios:  # every bad input is reported before anything runs
        project.check_config(sc.config, sc.path)
        for name in runners_for(sc, runners):
            for runner in [named(name), *(oracles_of(named(name).name) if sc.oracle else [])]:
                if runner.validate:
                    runner.validate(artifact, sc, project.file)
    results = []
    for sc in scenarios:
        chosen = workers or sc.workers or project.workers
        for r in run_scenario(artifact, sc, runners=runners, runtime=runtime, validated=True, workers=chosen):
            results.append(r)
            if on_result:
                on_result(r)
    return results
