"""Request throughput through live Envoy: each library filter (Lua, C/Wasm) side by side with no
filter and with the native Envoy filter it mirrors, in one run, as ratios.

Each kind's first scenario with an `oracle` supplies the filter config, the native filter and the
request (a kind with no native twin uses its first scenario and shows no native column). The
route answers with a direct response so that Envoy (one worker) is what is measured, not the
Python test upstream; wrk (one thread, 16 connections) drives it from the other core.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from envoyext import project as proj
from envoyext.paths import filters_dir
from envoyext.runners import live
from envoyext.scenario import Oracle, from_dict

DURATION_S = 3
DIRECT = [{"name": "bench", "match": {"prefix": "/"}, "direct_response": {"status": 200, "body": "ok"}}]


def wrk(url: str, headers: list[tuple[str, str]], method: str) -> float:
    args = ["wrk", "-t1", "-c16", f"-d{DURATION_S}s", url]
    for k, v in headers:
        args += ["-H", f"{k}: {v}"]
    if method != "GET":
        script = Path("/tmp/envoyext-wrk.lua")
        script.write_text(f'wrk.method = "{method}"\n')
        args += ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def bench_scenario(kind_dir: Path) -> tuple[Path, dict] | None:
    """The kind's first scenario with a native oracle, else its first scenario."""
    docs = [(p, yaml.safe_load(p.read_text())) for p in sorted((kind_dir / "scenarios").glob("*.yaml"))]
    return next(((p, d) for p, d in docs if d.get("oracle")), docs[0] if docs else None)


def measure(artifact, doc: dict, path: Path, *, oracle: Oracle | None) -> float:
    data = {k: v for k, v in doc.items() if k != "oracle"}
    data["routes"] = DIRECT
    sc = from_dict(data, path, default_config=artifact.config if artifact else None)
    sc.oracle = oracle
    case = sc.cases[0]
    with live.started(artifact, sc, oracle=oracle is not None, concurrency=1) as (envoy, _):
        url = f"{envoy.url}{case.request.path}"
        headers = [("host", case.request.authority), *case.request.headers]
        return wrk(url, headers, case.request.method)


def main() -> int:
    if not shutil.which("wrk"):
        print("live filter throughput: skipped (wrk not installed; `make bench` installs it)")
        return 0
    print(f"Live Envoy throughput, 1 worker, wrk -t1 -c16 -d{DURATION_S}s (requests/s; ratios to no filter "
          "and to the native filter, same run)")
    print(f"{'filter':<16}{'none':>9}{'native':>9}{'lua':>9}{'c/wasm':>9}{'lua/none':>10}{'c/none':>8}"
          f"{'lua/nat':>9}{'c/nat':>7}{'.wasm KiB':>10}")
    for kind_dir in sorted(p for p in filters_dir().iterdir() if p.is_dir()):
        found = bench_scenario(kind_dir)
        if not found or not (kind_dir / "lua").is_dir() or not (kind_dir / "c").is_dir():
            continue
        path, doc = found
        lua_p, c_p = proj.load(kind_dir / "lua"), proj.load(kind_dir / "c")
        lua_a, c_a = proj.build(lua_p), proj.build(c_p)
        none = measure(lua_a, doc, path, oracle=Oracle([], {}, []))
        lua = measure(lua_a, doc, path, oracle=None)
        c = measure(c_a, doc, path, oracle=None)
        size = c_a.path.stat().st_size / 1024
        if "oracle" in doc:
            o = doc["oracle"]
            native = measure(lua_a, doc, path, oracle=Oracle(o.get("http_filters", []),
                                                             o.get("typed_per_filter_config", {}), []))
            vs_native = f"{native:>9.0f}", f"{lua / native:>9.2f}{c / native:>7.2f}"
        else:  # no native twin (custom-metrics)
            vs_native = f"{'-':>9}", f"{'-':>9}{'-':>7}"
        print(f"{kind_dir.name:<16}{none:>9.0f}{vs_native[0]}{lua:>9.0f}{c:>9.0f}{lua / none:>10.2f}"
              f"{c / none:>8.2f}{vs_native[1]}{size:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
