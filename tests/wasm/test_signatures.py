"""Exported callbacks with the wrong signature for the declared ABI: refused by Envoy 1.40, and by
the emulator with Envoy's words.

cpp-host's getFunctions() looks up each callback it may call, typed by the module's ABI version
(envoyext.wasm.abi.MODULE_CALLBACKS / ABI_CALLBACKS); one exported with another signature fails the
VM ("Bad function signature for: ..."), and Envoy refuses the plugin. Each module in
sdk_modules/signatures/ goes through `envoy --mode validate` and the emulator: both must refuse it
for the same first reason, or (the `ok_` ones, negative controls) both accept it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import wasmtime

from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap
from envoyext.envoy.process import envoy_binary
from envoyext.errors import EnvoyRejected
from envoyext.runners import emulated
from envoyext.scenario import from_dict

from .conftest import CACHE

MODULES = sorted((Path(__file__).parent / "sdk_modules" / "signatures").glob("*.wat"))
SIGNATURE_LINE = re.compile(r"\[error\]\[wasm\].*?\] (Bad function signature for: .*)$", re.M)


def build(wat: Path) -> Path:
    out = CACHE / f"signature-{wat.stem}.wasm"
    CACHE.mkdir(parents=True, exist_ok=True)
    out.write_bytes(wasmtime.wat2wasm(wat.read_text()))
    return out


def scenario():
    return from_dict({"cases": [{"name": "one request"}]}, Path("signatures.yaml"))


def envoy_verdict(artifact: Artifact, tmp_path: Path) -> tuple[bool, list[str]]:
    """(accepted, the signature failures Envoy logged, in order) from `envoy --mode validate`."""
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap.build(artifact, scenario(), {"upstream": ("127.0.0.1", 9)})))
    proc = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(config), "--disable-hot-restart",
                           "-l", "error"], capture_output=True, text=True, timeout=120)
    return proc.returncode == 0, SIGNATURE_LINE.findall(proc.stdout + proc.stderr)


@pytest.mark.parametrize("wat", MODULES, ids=[m.stem for m in MODULES])
def test_emulator_refuses_what_envoy_refuses(wat, tmp_path):
    artifact = Artifact("wasm", build(wat), "signatures", root_id="r", vm_id="v")
    accepted, failures = envoy_verdict(artifact, tmp_path)
    if wat.stem.startswith("ok_"):
        assert accepted and not failures
        assert emulated.run_scenario(artifact, scenario())[0].response.status == 200
        return
    assert not accepted and failures, "Envoy 1.40 accepted a module this test says it refuses"
    with pytest.raises(EnvoyRejected) as refused:
        emulated.run_scenario(artifact, scenario())
    message = str(refused.value)
    assert message.startswith(f"{artifact.path}: ") and "\n" not in message
    assert failures[0] in message   # the export, wanted and actual signature, in Envoy's words
    assert "(fix: export it with the signature proxy-wasm ABI" in message
