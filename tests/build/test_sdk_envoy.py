"""Real Envoy (V8) loads and runs a filter written with the C SDK — through the project's own
bootstrap and live runner, and the emulator beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.envoy import logs
from envoyext.errors import EnvoyRejected
from envoyext.runners import emulated, live
from envoyext.scenario import check, compare, from_dict

CONFIG = {"header": "x-sdk", "value": "hello", "deny_path": "/deny", "auth_path": "/auth", "auth_cluster": "authz"}
SCENARIO = {
    "config": CONFIG,
    "clusters": {"authz": {"rules": [{"when": {"path": "/check"}, "reply": {"status": 200, "body": "allowed"}},
                                     {"reply": {"status": 404, "body": "wrong path"}}]}},
    "cases": [
        {"name": "configured header, per-stream state, request mutation", "request": {"path": "/hello"},
         "expect": {"status": 200, "headers": {"x-sdk": "hello", "x-sdk-path-len": "6"},
                    "upstream": {"headers": {"x-sdk-request": "seen"}},
                    "stats": {"wasmcustom.sdk_smoke_requests": 1}}},
        {"name": "local reply", "request": {"path": "/deny"},
         "expect": {"status": 403, "body": "denied by sdk_smoke\n", "headers": {"x-denied-by": "sdk_smoke"},
                    "upstream": {"called": False}}},
        # The paused request resumes after the filter's HTTP call answers (the SDK makes the
        # stream the effective context for the answer).
        {"name": "http call resumes the request", "request": {"path": "/auth"},
         "expect": {"status": 200, "clusters": {"authz": {"count": 1, "path": "/check"}},
                    "upstream": {"headers": {"x-auth-status": "200", "x-auth-body": "allowed"}}}},
    ],
}


def artifact(path: Path) -> Artifact:
    return Artifact("wasm", path, "sdk_smoke", root_id="sdk_smoke")


def test_envoy_runs_the_filter_as_the_emulator_does(smoke_wasm):
    sc = from_dict(SCENARIO, Path("sdk_smoke.yaml"))
    real = live.run_scenario(artifact(smoke_wasm), sc)
    emu = emulated.run_scenario(artifact(smoke_wasm), sc)
    for case, r, e in zip(sc.cases, real, emu):
        assert check(case, r) == [], case.name
        assert compare(e, r) == [], case.name


def test_configure_logs_through_the_sdk(smoke_wasm):
    sc = from_dict({**SCENARIO, "cases": [{"name": "-"}]}, Path("sdk_smoke.yaml"))
    with live.started(artifact(smoke_wasm), sc) as (envoy, _):
        assert "sdk_smoke: configured x-sdk=hello" in [line.message for line in logs.filter_logs(envoy.log_text())]


def test_validation_really_loads_and_configures_the_module(smoke_wasm, tmp_path):
    """Envoy's validate mode loads the module and runs on_configure: a corrupt module and a
    configuration the filter rejects (pw_on_configure returns false) both fail, with the reason."""
    sc = from_dict(SCENARIO, Path("sdk_smoke.yaml"))
    live.validate(artifact(smoke_wasm), sc)
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm" + os.urandom(64))
    with pytest.raises(EnvoyRejected, match="Unable to create Wasm plugin"):
        live.validate(artifact(junk), sc)
    with pytest.raises(EnvoyRejected, match="sdk_smoke: configuration is not a JSON object"):
        live.validate(artifact(smoke_wasm), from_dict({**SCENARIO, "config": "not json"}, Path("s.yaml")))
