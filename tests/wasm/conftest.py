"""Fixtures for the Wasm host tests: C test modules compiled once per content (zig cc)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest

from envoyext.build.c import compile_wasm

MODULES = Path(__file__).parent / "modules"
CACHE = Path(tempfile.gettempdir()) / "envoyext-wasm-test-modules"


def build(name: str) -> Path:
    """tests/wasm/modules/<name>.c -> a cached .wasm (reactor, malloc exported, stripped)."""
    src = MODULES / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes() + (MODULES / "host_abi.h").read_bytes()).hexdigest()[:16]
    out = CACHE / f"{name}-{digest}.wasm"
    if not out.exists():
        # These modules declare the ABI themselves (to pass it bad pointers): no SDK runtime.
        compile_wasm([src], out, include_dirs=[MODULES], cflags=["-Wl,--export=malloc"], sdk_runtime=False)
    return out


@pytest.fixture(scope="session")
def module():
    return build
