"""The inner loop's wall time: `envoyext test` on a freshly scaffolded blank C filter.

cold: an empty compiler cache (zig builds wasi-libc once per machine) and no build;
first: a new project on a warm compiler cache; warm: nothing changed since the last run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENVOYEXT = [sys.executable, "-m", "envoyext.cli"]


def timed(args, env=None) -> float:
    t = time.perf_counter()
    subprocess.run([*ENVOYEXT, *map(str, args)], check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold_env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(tmp / "zig-cache"),
                    "ZIG_LOCAL_CACHE_DIR": str(tmp / "zig-local")}
        for name in ("cold", "first"):
            subprocess.run([*ENVOYEXT, "new", "blank", name, "--lang", "c", "--dir", str(tmp / name)],
                           check=True, capture_output=True)
        cold = timed(["test", tmp / "cold"], env=cold_env)
        first = timed(["test", tmp / "first"])
        warm = min(timed(["test", tmp / "first"]) for _ in range(3))
        size = (tmp / "first" / "build" / "first.wasm").stat().st_size
    print("envoyext test, blank C filter (emulator + live Envoy, 3 cases):")
    print(f"  cold (empty compiler cache): {cold:6.2f} s")
    print(f"  first build, warm cache:     {first:6.2f} s")
    print(f"  warm (up to date):           {warm:6.2f} s")
    print(f"  blank .wasm size:            {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
