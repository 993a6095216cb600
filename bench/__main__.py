"""`python -m bench` (`make bench`): every benchmark, each writing bench/results/<name>.json, then
BENCHMARKS.md and the plots (bench/report.py).

    python -m bench                  the full run (about 10 minutes on 2 cores: 7 interleaved 1 s runs per subject)
    python -m bench --quick          short runs, for development (a few minutes)
    python -m bench --only datapath,scale --runs 7 --duration 2
    python -m bench --report         re-render BENCHMARKS.md from the last results only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback

from bench import report, sections

SECTIONS = ("emulator", "size", "loop", "mesh_up", "scale", "datapath")
RESULTS = report.RESULTS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--quick", action="store_true", help="short runs for development")
    ap.add_argument("--only", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--runs", type=int, default=None, help="data path: runs per subject (default 7; quick 3)")
    ap.add_argument("--duration", type=float, default=None, help="data path: seconds per wrk run (default 1)")
    ap.add_argument("--report", action="store_true", help="only re-render BENCHMARKS.md from bench/results/")
    args = ap.parse_args(argv)
    if args.report:
        print(report.write())
        return 0
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    runs = args.runs or (3 if args.quick else 7)
    duration = args.duration or 1.0
    seconds = 0.5 if args.quick else 2.0
    sizes = [10, 100, 1000] if args.quick else [10, 100, 1000, 2000, 5000]
    RESULTS.mkdir(parents=True, exist_ok=True)
    run_path = RESULTS / "run.json"
    previous = json.loads(run_path.read_text()) if run_path.exists() else {}
    failed = dict(previous.get("failed", {}))

    def datapath() -> dict:
        from bench import datapath as dp
        out = RESULTS / "datapath.json"
        dp.main(["--runs", str(runs), "--duration", str(duration), "--out", str(out)])
        d = json.loads(out.read_text())
        d["command"] = f"python -m bench.datapath --runs {runs} --duration {duration:g}"
        return d

    def scale() -> dict:
        d = sections.scale(sizes)
        d["profile"] = sections.scale_profile(max(sizes))
        return d

    jobs = {"emulator": lambda: sections.emulator(seconds), "size": sections.module_sizes,
            "loop": sections.loop_time, "mesh_up": sections.mesh_up, "scale": scale, "datapath": datapath}
    machine = sections.machine()
    for name in SECTIONS:
        if name not in only:
            continue
        print(f"\n=== {name} ===", flush=True)
        t0 = time.monotonic()
        load = list(os.getloadavg())
        try:
            figures = jobs[name]()
        except Exception as e:  # one broken benchmark does not lose the others' figures
            traceback.print_exc()
            failed[name] = f"{type(e).__name__}: {e}"[:300]
            (RESULTS / f"{name}.json").unlink(missing_ok=True)
            continue
        failed.pop(name, None)
        figures["elapsed_s"] = round(time.monotonic() - t0, 1)
        figures["machine"] = {**machine, "loadavg_at_start": load}
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=1))
        print(f"{name}: {figures['elapsed_s']} s", flush=True)
    command = "make bench" if not argv else "python -m bench " + " ".join(shlex.quote(a) for a in argv)
    run_path.write_text(json.dumps({"machine": machine, "quick": args.quick, "command": command, "failed": failed},
                                   indent=1))
    print(report.write())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
