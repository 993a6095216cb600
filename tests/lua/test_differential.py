"""Emulator vs live Envoy 1.40, case by case, over the scenarios in tests/lua/scenarios/.

Each `<name>.yaml` runs its `<name>.lua` through the emulated runner and the live runner; every
case must satisfy its own expectations under both, and the two observations must agree
(`envoyext.scenario.compare`). One Envoy per scenario file, stopped when the file is done.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import yaml

from envoyext.artifact import Artifact
from envoyext.runners import emulated, live
from envoyext.scenario import check, compare, load

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted(f for f in SCENARIOS.glob("*.yaml") if not f.name.endswith(".options.yaml"))


def cases():
    for f in FILES:
        for c in load(f).cases:
            yield pytest.param(f, c.name, id=f"{f.stem}:{c.name}")


def artifact(path: Path) -> Artifact:
    """`<name>.lua`, with the filter.yaml `lua:` block from `<name>.options.yaml` when there is one
    (source_codes files relative to it, made absolute as the project loader makes them)."""
    options = None
    sidecar = path.with_suffix(".options.yaml")
    if sidecar.exists():
        options = yaml.safe_load(sidecar.read_text())
        if "source_codes" in options:
            options["source_codes"] = {name: {"filename": str((path.parent / file).resolve())}
                                       for name, file in options["source_codes"].items()}
    return Artifact("lua", path.with_suffix(".lua"), "envoyext.lua", lua_options=options)


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
    if case.only != "emulated":
        assert compare(emu[name], real[name]) == [], "emulator and Envoy disagree"
        assert check(case, real[name]) == [], "Envoy does not meet the case's expectations"
    if case.only != "live":
        assert check(case, emu[name]) == [], "the emulator does not meet the case's expectations"
