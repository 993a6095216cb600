"""The emulated connection manager and router against real Envoy, around a filter that does
nothing: every difference here is the emulator's fault, whatever the filter."""

from functools import cache
from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.runners import emulated, live
from envoyext.scenario import check, compare, load

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))
NOOP = Path(__file__).parent / "golden" / "noop.lua"


@cache
def runs(path: Path):
    artifact = Artifact("lua", NOOP, "noop")
    sc = load(path)
    return sc, {o.case: o for o in emulated.run_scenario(artifact, sc)}, \
        {o.case: o for o in live.run_scenario(artifact, sc)}


@pytest.mark.parametrize("path,case", [pytest.param(p, c.name, id=f"{p.stem}:{c.name}")
                                       for p in SCENARIOS for c in load(p).cases])
def test_case_agrees_and_meets_expectations(path, case):
    sc, emu, real = runs(path)
    spec = next(c for c in sc.cases if c.name == case)
    assert check(spec, real[case]) == [], "live Envoy"
    assert check(spec, emu[case]) == [], "emulator"
    assert compare(emu[case], real[case]) == []
