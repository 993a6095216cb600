"""Shared helpers for the suite. Every test that starts Envoy stops it; see envoy_children()."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENVOYEXT = [sys.executable, "-m", "envoyext.cli"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*ENVOYEXT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


def envoy_pids() -> set[int]:
    """PIDs of every running envoy process on this machine."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "envoy":
                    out.add(int(d.name))
            except OSError:
                pass
    return out


@pytest.fixture(autouse=True)
def no_envoy_left_behind():
    """Fail any test after which an Envoy it started is still running."""
    before = envoy_pids()
    yield
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and envoy_pids() - before:
        time.sleep(0.05)
    leaked = envoy_pids() - before
    assert not leaked, f"Envoy processes leaked: {sorted(leaked)}"
