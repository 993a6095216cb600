"""Fixtures for the Wasm host tests: C test modules compiled once per content (zig cc)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

MODULES = Path(__file__).parent / "modules"
CACHE = Path(tempfile.gettempdir()) / "envoyext-wasm-test-modules"


def build(name: str) -> Path:
    """tests/wasm/modules/<name>.c -> a cached .wasm (reactor, malloc exported, stripped)."""
    src = MODULES / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes() + (MODULES / "host_abi.h").read_bytes()).hexdigest()[:16]
    out = CACHE / f"{name}-{digest}.wasm"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run([sys.executable, "-m", "ziglang", "cc", "--target=wasm32-wasi", "-mexec-model=reactor",
                        "-O2", "-s", f"-I{MODULES}", "-Wl,--export=malloc", str(src), "-o", str(tmp)],
                       check=True, capture_output=True, timeout=300)
        tmp.replace(out)
    return out


@pytest.fixture(scope="session")
def module():
    return build
