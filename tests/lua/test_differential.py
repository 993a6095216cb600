"""Emulator vs live Envoy 1.40, case by case, over the scenarios in tests/lua/scenarios/.

Each `<name>.yaml` runs its `<name>.lua` through the emulated runner and the live runner; every
case must satisfy its own expectations under both, and the two observations must agree
(`envoyext.scenario.compare`). One Envoy per scenario file, stopped when the file is done.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from envoyext.artifact import Artifact
from tests.differential import Differential, scenario_cases

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted(f for f in SCENARIOS.glob("*.yaml") if not f.name.endswith(".options.yaml"))


def artifact(path: Path) -> Artifact:
    """`<name>.lua`, with the filter.yaml `lua:` block from `<name>.options.yaml` when there is one
    (source_codes files relative to it, made absolute as the project loader makes them), and
    filter.yaml's `lua_libraries` if that file names them too."""
    options = None
    libraries: tuple[str, ...] = ()
    sidecar = path.with_suffix(".options.yaml")
    if sidecar.exists():
        options = yaml.safe_load(sidecar.read_text())
        libraries = tuple(options.pop("lua_libraries", ()))
        if "source_codes" in options:
            options["source_codes"] = {name: {"filename": str((path.parent / file).resolve())}
                                       for name, file in options["source_codes"].items()}
    return Artifact("lua", path.with_suffix(".lua"), "envoyext.lua", lua_options=options or None,
                    lua_libraries=libraries)


DIFFERENTIAL = Differential(artifact)


@pytest.mark.parametrize("path,name", scenario_cases(FILES))
def test_emulator_matches_live_envoy(path, name):
    DIFFERENTIAL.assert_agree(path, name)
