"""Fixtures for the build-step and C SDK tests; helpers live in sdk_minihost.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from envoyext.build import c
from tests.build.sdk_minihost import PROBE_C, SMOKE_C, STRICT, MiniHost


@pytest.fixture(scope="session")
def wasm_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wasm")


@pytest.fixture(scope="session")
def smoke_wasm(wasm_dir) -> Path:
    return c.compile_wasm([SMOKE_C], wasm_dir / "sdk_smoke.wasm", cflags=STRICT)


@pytest.fixture(scope="session")
def probe_wasm(wasm_dir) -> Path:
    return c.compile_wasm([PROBE_C], wasm_dir / "sdk_probe.wasm", cflags=STRICT)


@pytest.fixture
def minihost(probe_wasm):
    return lambda **kw: MiniHost(probe_wasm, **kw)


def _my_envoys() -> set[int]:
    """Running envoy processes that this test process started (its children)."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() != "envoy":
                continue
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid():
            out.add(int(d.name))
    return out


@pytest.fixture(autouse=True)
def no_envoy_left_behind():
    """Overrides the suite-wide check, which counts every envoy on the machine and so fails
    whenever anything else runs Envoy meanwhile: here only our own children count."""
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _my_envoys():
        time.sleep(0.05)
    leaked = _my_envoys()
    assert not leaked, f"Envoy processes leaked: {sorted(leaked)}"
