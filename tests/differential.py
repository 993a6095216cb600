"""Emulator vs live Envoy on scenario files: the one harness every differential test uses.

Each scenario runs once per runner (cached per file); each case is a test asserting that both
runners meet the case's expectations and that their observations agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.runners import emulated, live
from envoyext.scenario import check, compare, load


def scenario_cases(files: list[Path]) -> list:
    return [pytest.param(f, c.name, id=f"{f.stem}:{c.name}") for f in files for c in load(f).cases]


class Differential:
    def __init__(self, artifact_for: Callable[[Path], Artifact]):
        self.artifact_for = artifact_for
        self._runs: dict[Path, tuple] = {}

    def runs(self, path: Path) -> tuple:
        if path not in self._runs:
            scenario, artifact = load(path), self.artifact_for(path)
            self._runs[path] = (scenario, {o.case: o for o in emulated.run_scenario(artifact, scenario)},
                                {o.case: o for o in live.run_scenario(artifact, load(path))})
        return self._runs[path]

    def assert_agree(self, path: Path, name: str) -> None:
        scenario, emu, real = self.runs(path)
        case = next(c for c in scenario.cases if c.name == name)
        if case.only != "emulated":
            assert check(case, real[name]) == [], "live Envoy misses the case's expectations"
        if case.only != "live":
            assert check(case, emu[name]) == [], "the emulator misses the case's expectations"
        if case.only is None:
            assert compare(emu[name], real[name]) == [], "the emulator and live Envoy disagree"
