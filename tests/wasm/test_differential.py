"""Emulator vs live Envoy 1.40, case by case, over the scenarios in tests/wasm/scenarios/.

Each `<name>.yaml` runs the C module tests/wasm/modules/<name>.c (plugin name = module name,
root_id "r", vm_id "v") through the emulated runner and the live runner: every case must meet
its own expectations under both, and the two observations must agree field by field
(`envoyext.scenario.compare`). One Envoy per scenario file, stopped when its cases are done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from tests.differential import Differential, scenario_cases

from .conftest import build

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))


def artifact(path: Path) -> Artifact:
    return Artifact("wasm", build(path.stem), path.stem, root_id="r", vm_id="v")


DIFFERENTIAL = Differential(artifact)


@pytest.mark.parametrize("path,name", scenario_cases(FILES))
def test_emulator_matches_live_envoy(path, name):
    DIFFERENTIAL.assert_agree(path, name)
