"""Data-path cost of every library filter (Lua and C/Wasm) and of the blank template, through live
Envoy, side by side with no filter and with the native Envoy filter, through a direct response and
through a real upstream (envoyext/benchmark.py has the method). Writes bench/results/datapath.json.

    python -m bench.datapath [--runs N] [--duration S] [--kinds cors,fault]

Each kind is measured on one request from its scenarios: the request a filter sees most in
production, one it lets through after doing its whole check (an allowed origin, a same-origin
POST, an authorized request, a request no fault matches, a request within its rate limit). The
native filter is the one the scenario's `oracle:` block names (custom-metrics and blank have none).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from envoyext import benchmark as b
from envoyext import project as proj
from envoyext import scaffold
from envoyext.paths import filters_dir
from envoyext.scenario import Oracle, from_dict

RESULTS = Path(__file__).resolve().parent / "results"

# kind -> (scenario file, case name)
CHOSEN = {
    "cors": ("policy.yaml", "actual request from a prefix origin gets the response headers"),
    "csrf": ("enforce.yaml", "same-origin POST passes"),
    "custom-metrics": ("passthrough.yaml", "GET passes through unchanged"),
    "ext-authz": ("decisions.yaml", "an allowed request goes upstream with the service's chosen headers"),
    "fault": ("abort.yaml", "other requests pass untouched"),
    "ratelimit": ("first_hits.yaml", "a configured value has its own bucket"),
}
BLANK_CASE = "adds the response header"

# A token bucket no benchmark empties: every request takes a token (the whole check), none is refused.
BIG_BUCKET = {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "1s"}


def unlimited(doc: Any) -> Any:
    """`doc` with every token_bucket (the filter's config and the native filter's) made BIG_BUCKET."""
    if isinstance(doc, dict):
        return {k: (dict(BIG_BUCKET) if k == "token_bucket" else unlimited(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [unlimited(v) for v in doc]
    return doc


def native_of(doc: dict) -> Oracle | None:
    o = doc.get("oracle")
    return None if not o else Oracle(o.get("http_filters", []), o.get("typed_per_filter_config", {}), [])


def row(name: str, scenario_path: Path, doc: dict, case_name: str, lua_dir: Path, c_dir: Path,
        *, runs: int, duration: float, note: str = "") -> dict:
    doc = copy.deepcopy(doc)
    if name == "ratelimit":
        doc = unlimited(doc)
        note = "token buckets raised to 10^9 per second (filter and native alike): every request allowed"
    lua_a, c_a = proj.build(proj.load(lua_dir)), proj.build(proj.load(c_dir))
    native = native_of(doc)
    sc = from_dict({k: v for k, v in doc.items() if k != "oracle"}, scenario_path, default_config=c_a.config)
    case = next(c for c in sc.cases if c.name == case_name)
    subjects = [b.Subject("none", lua_a, b.NO_FILTER)]
    if native is not None:
        subjects.append(b.Subject("native", lua_a, native))
    subjects += [b.Subject("lua", lua_a), b.Subject("c", c_a)]
    out: dict[str, Any] = {"kind": name, "scenario": str(scenario_path.relative_to(scenario_path.parents[2]))
                           if "filters" in scenario_path.parts else scenario_path.name,
                           "case": case_name, "note": note, "wasm_bytes": c_a.path.stat().st_size,
                           "request": {"method": case.request.method, "path": case.request.path}, "modes": {}}

    def progress(mode, run, label, s):
        print(f"  {name:<15}{mode:<9}run {run + 1}  {label:<7}{s.rps:>9.0f} req/s  p50 {s.p50_ms:6.2f} ms  "
              f"p99 {s.p99_ms:6.2f} ms  {s.cpu_us_per_request:6.1f} us CPU/req  busy {s.proxy_busy:4.2f}"
              + (f"  errors {s.errors:.0f}" if s.errors else ""), flush=True)

    for mode in b.MODES:
        m = b.measure(subjects, sc, case.request, mode=mode, runs=runs, duration=duration, progress=progress)
        out["modes"][mode] = b.to_json(m)["samples"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.datapath")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--kinds", default="", help="comma-separated kinds (and/or 'blank'); default: all")
    ap.add_argument("--out", type=Path, default=RESULTS / "datapath.json")
    args = ap.parse_args(argv)
    wanted = set(filter(None, args.kinds.split(",")))
    rows = []
    t0 = time.monotonic()
    for kind, (scenario_file, case_name) in CHOSEN.items():
        if wanted and kind not in wanted:
            continue
        kind_dir = filters_dir() / kind
        path = kind_dir / "scenarios" / scenario_file
        rows.append(row(kind, path, yaml.safe_load(path.read_text()), case_name, kind_dir / "lua", kind_dir / "c",
                        runs=args.runs, duration=args.duration))
    if not wanted or "blank" in wanted:
        with tempfile.TemporaryDirectory(prefix="envoyext-bench-blank-") as tmp:
            dirs = {lang: scaffold.render("blank", f"blank-{lang}", lang, Path(tmp) / lang) for lang in ("lua", "c")}
            path = dirs["c"] / "scenarios" / "basic.yaml"
            doc = yaml.safe_load(path.read_text())
            # The Lua blank's config names its own header; each project's filter.yaml config is used.
            rows.append(row("blank", path, doc, BLANK_CASE, dirs["lua"], dirs["c"], runs=args.runs,
                            duration=args.duration, note="templates/blank (`envoyext new blank`)"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "duration_s": args.duration, "rows": rows,
                                    "wrk": f"wrk -t{b.WRK_THREADS} -c{b.WRK_CONNECTIONS} -d{round(args.duration)}s "
                                           "--latency",
                                    "elapsed_s": round(time.monotonic() - t0, 1)}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
