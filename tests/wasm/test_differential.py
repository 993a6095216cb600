"""Emulator vs live Envoy 1.40, case by case, over the scenarios in tests/wasm/scenarios/.

Each `<name>.yaml` runs the C module tests/wasm/modules/<name>.c (plugin name = module name,
root_id "r", vm_id "v") through the emulated runner and the live runner: every case must meet
its own expectations under both, and the two observations must agree field by field
(`envoyext.scenario.compare`). One Envoy per scenario file, stopped when its cases are done.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.runners import emulated, live
from envoyext.scenario import check, compare, load

from .conftest import build

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))


def cases():
    for f in FILES:
        for c in load(f).cases:
            yield pytest.param(f, c.name, id=f"{f.stem}:{c.name}")


def artifact(path: Path) -> Artifact:
    return Artifact("wasm", build(path.stem), path.stem, root_id="r", vm_id="v")


@cache
def observations(path: Path):
    scenario = load(path)
    emu = {o.case: o for o in emulated.run_scenario(artifact(path), scenario)}
    real = {o.case: o for o in live.run_scenario(artifact(path), load(path))}
    return scenario, emu, real


@pytest.fixture(scope="module", autouse=True)
def _no_cached_envoy():
    yield
    observations.cache_clear()


@pytest.mark.parametrize("path,name", list(cases()))
def test_emulator_matches_live_envoy(path, name):
    scenario, emu, real = observations(path)
    case = next(c for c in scenario.cases if c.name == name)
    assert check(case, emu[name]) == [], "emulator misses the case's expectations"
    assert check(case, real[name]) == [], "Envoy misses the case's expectations"
    assert compare(emu[name], real[name]) == [], "emulator and Envoy disagree"
