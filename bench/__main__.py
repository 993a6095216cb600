"""`python -m bench`: every benchmark, one after the other, each printing its own figures."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = ["wasm_bench.py", "lua_bench.py", "live_filters.py", "loop_time.py"]


def main() -> int:
    failed = 0
    for name in BENCHES:
        script = HERE / name
        if not script.exists():
            continue
        print(f"\n=== {name} ===", flush=True)
        failed |= subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
