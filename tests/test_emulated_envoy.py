"""The emulated connection manager and router against real Envoy, around a filter that does
nothing: every difference here is the emulator's fault, whatever the filter."""

from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from tests.differential import Differential, scenario_cases

HERE = Path(__file__).parent
DIFFERENTIAL = Differential(lambda path: Artifact("lua", HERE / "envoy" / "golden" / "noop.lua", "noop"))


@pytest.mark.parametrize("path,name", scenario_cases(sorted((HERE / "scenarios").glob("*.yaml"))))
def test_case_agrees_and_meets_expectations(path, name):
    DIFFERENTIAL.assert_agree(path, name)
