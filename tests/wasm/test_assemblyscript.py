"""An AssemblyScript filter (@solo-io/proxy-runtime) built with npm, through the emulator and Envoy.

tests/wasm/sdk_modules/assemblyscript/ holds the source and package.json (exact versions); the
module is built into ~/.cache/envoyext/npm/<digest of those files>/ on first use (npm install,
npm run asbuild: a few seconds). AssemblyScript modules differ from C ones: top-level code runs
in the Wasm start section during instantiation, the runtime exports malloc next to its own
__alloc/__retain, WASI comes from `wasi_unstable` (proc_exit for aborts), ABI 0.2.0.

Each case runs in a fresh emulator and a fresh Envoy: context ids (which the runtime logs at
debug level) are per VM, and each of live Envoy's workers has its own VM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.runners import emulated, live
from envoyext.scenario import check, compare, load

SOURCE = Path(__file__).parent / "sdk_modules" / "assemblyscript"
FILES = ["package.json", "assembly/index.ts"]
SCENARIO = SOURCE / "scenario.yaml"


def build() -> Path:
    digest = hashlib.sha256(b"".join((SOURCE / f).read_bytes() for f in FILES)).hexdigest()[:16]
    work = Path.home() / ".cache" / "envoyext" / "npm" / digest
    out = work / "build" / "filter.wasm"
    if out.exists():
        return out
    for f in FILES:
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SOURCE / f, work / f)
    for cmd in (["npm", "install", "--no-audit", "--no-fund"], ["npm", "run", "asbuild"]):
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return out


@pytest.fixture(scope="module")
def module():
    if shutil.which("npm") is None:
        pytest.skip("npm not available")
    return build()


def artifact(path: Path) -> Artifact:
    return Artifact("wasm", path, "as-filter", root_id="as-filter", vm_id="as")


@pytest.mark.parametrize("name", [c.name for c in load(SCENARIO).cases])
def test_assemblyscript_filter_runs_in_emulator_as_in_envoy(module, name):
    full = load(SCENARIO)
    case = next(c for c in full.cases if c.name == name)
    one = dataclasses.replace(full, cases=[case])
    emu = emulated.run_scenario(artifact(module), one)[0]
    real = live.run_scenario(artifact(module), dataclasses.replace(load(SCENARIO), cases=[case]))[0]
    assert check(case, emu) == [], "emulator misses the case's expectations"
    assert check(case, real) == [], "Envoy misses the case's expectations"
    assert compare(emu, real) == [], "emulator and Envoy disagree"
