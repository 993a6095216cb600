"""The benchmarks other than the data path, each a function returning its figures as a dict (with
the command that reproduces it). `python -m bench` runs them and writes bench/results/<name>.json."""

from __future__ import annotations

import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOYEXT = [sys.executable, "-m", "envoyext.cli"]
BOOKINFO = ROOT / "examples" / "bookinfo"


def child_env(extra: dict | None = None) -> dict:
    """This checkout's envoyext first on the path for every child process, whatever is installed."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **(extra or {}), "PYTHONPATH": path}


def machine() -> dict:
    """nproc, the CPU model, Envoy's version, this Python and the load average when measured."""
    from envoyext.envoy.process import envoy_version
    model = ""
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = m.group(1).strip() if m else ""
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model or platform.processor() or "unknown",
            "envoy": envoy_version(), "python": platform.python_version(), "kernel": platform.release(),
            "loadavg_at_start": list(os.getloadavg()), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# ---------------------------------------------------------------- emulator speed

def emulator(seconds: float) -> dict:
    """Wasm and Lua emulated request cycles/s on one core, and the Wasm ratio to the naive call path."""
    code = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
from bench import wasm_bench, lua_bench
print(json.dumps({{"wasm": wasm_bench.figures({seconds}), "lua": lua_bench.figures({seconds})}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=child_env()).stdout
    import json
    figures = json.loads(out.strip().splitlines()[-1])
    figures["command"] = f"python bench/wasm_bench.py {seconds:g}; python bench/lua_bench.py {seconds:g}"
    return figures


# ---------------------------------------------------------------- loop time

def _timed(args: list, env: dict | None = None, cwd: Path | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run([*ENVOYEXT, *map(str, args)], capture_output=True, text=True, env=child_env(env), cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"envoyext {' '.join(map(str, args))} failed: {proc.stdout[-400:]} {proc.stderr[-400:]}")
    return time.perf_counter() - t


def _loop(tmp: Path, name: str, lang: str, env: dict | None) -> dict:
    d = tmp / name
    steps = {"new": _timed(["new", "blank", name, "--lang", lang, "--dir", d], env)}
    steps["build"] = _timed(["build", d], env)
    steps["test"] = _timed(["test", d], env)
    steps["total"] = sum(steps.values())
    return {k: round(v, 2) for k, v in steps.items()}


def loop_time() -> dict:
    """`envoyext new` + `build` + `test` of a blank filter, C and Lua: cold (empty compiler cache, a
    new project), warm (a new project on a warm cache), and `test` again with nothing changed."""
    out: dict = {"command": "python -m bench --only loop"}
    with tempfile.TemporaryDirectory(prefix="envoyext-loop-") as t:
        tmp = Path(t)
        cold_env = {"ZIG_GLOBAL_CACHE_DIR": str(tmp / "zig-cache"), "ZIG_LOCAL_CACHE_DIR": str(tmp / "zig-local")}
        for lang in ("c", "lua"):
            out[lang] = {"cold": _loop(tmp, f"cold-{lang}", lang, cold_env),
                         "warm": _loop(tmp, f"warm-{lang}", lang, None)}
            out[lang]["rerun_test"] = round(min(_timed(["test", tmp / f"warm-{lang}"]) for _ in range(2)), 2)
    out["envoy_start_to_ready"] = envoy_start_to_ready()
    return out


def envoy_start_to_ready(n: int = 5) -> dict:
    """Envoy from exec to /ready LIVE with a one-listener bootstrap (no filter), at warning level."""
    import dataclasses

    from envoyext.benchmark import NO_FILTER, bench_identity
    from envoyext.envoy import bootstrap
    from envoyext.envoy.process import EnvoyProcess
    from envoyext.scenario import from_dict
    sc = from_dict({"cases": [{"name": "x", "request": {"path": "/"}}]}, ROOT / "bench.yaml")
    sc = dataclasses.replace(sc, oracle=NO_FILTER)
    config = bootstrap.build(None, sc, {"upstream": ("127.0.0.1", 9)}, identity=bench_identity(), oracle=True)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with EnvoyProcess(config, identity=bench_identity(), concurrency=1, check_config=False):
            times.append(time.perf_counter() - t)
    times.sort()
    return {"median_s": round(times[len(times) // 2], 3), "min_s": round(times[0], 3), "max_s": round(times[-1], 3),
            "n": n}


def mesh_up(timeout: float = 300) -> dict:
    """`envoyext mesh up` for Bookinfo (platform, gateway, destination rules) to its "ready" line."""
    files = ["platform.yaml", "gateway.yaml", "destination-rules.yaml"]
    with tempfile.TemporaryDirectory(prefix="envoyext-meshup-") as t:
        args = [*ENVOYEXT, "mesh", "up", "--workdir", str(Path(t) / "mesh")]
        for f in files:
            args += ["-f", str(BOOKINFO / f)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=t,
                                env=child_env(), start_new_session=True)
        said = []
        try:
            for line in proc.stdout:
                said.append(line)
                m = re.match(r"mesh up: (\d+) proxies ready in ([\d.]+) s", line)
                if m:
                    wall = time.perf_counter() - t0
                    return {"proxies": int(m.group(1)), "reported_s": float(m.group(2)), "wall_s": round(wall, 2),
                            "command": "envoyext mesh up " + " ".join(f"-f examples/bookinfo/{f}" for f in files)}
                if time.perf_counter() - t0 > timeout:
                    break
            raise RuntimeError("mesh up never became ready: " + "".join(said)[-600:])
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------- translator scale

def scale(sizes: list[int]) -> dict:
    """bench/mesh_scale.py for each size, each in its own process (peak RSS is the process's)."""
    import json
    rows = []
    for n in sizes:
        code = (f"import json,resource,sys; sys.path.insert(0, {str(ROOT)!r}); from bench import mesh_scale; "
                f"r = mesh_scale.measure({n}); "
                "r['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1); "
                "print(json.dumps(r))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=child_env())
        if proc.returncode != 0:
            raise RuntimeError(f"mesh_scale {n}: {proc.stderr[-600:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {rows[-1]}", flush=True)
    return {"rows": rows, "command": "python bench/mesh_scale.py " + " ".join(map(str, sizes))}


# ---------------------------------------------------------------- module size

SDK_FIGURES = [  # the published figures, bytes (low, high)
    ("proxy-wasm C++ SDK", 38_000, 60_000),
    ("AssemblyScript SDK", 12_600, 12_600),
    ("Rust SDK", 167_000, 167_000),
    ("Go 1.24 SDK", 2_500_000, 3_500_000),
]


def module_sizes() -> dict:
    """Every library C filter and the blank template, built as `envoyext build` builds them."""
    from envoyext import project as proj
    from envoyext import scaffold
    from envoyext.paths import filters_dir
    rows = []
    for kind in sorted(p.name for p in filters_dir().iterdir() if (p / "c" / "filter.yaml").exists()):
        a = proj.build(proj.load(filters_dir() / kind / "c"))
        rows.append({"filter": kind, "bytes": a.path.stat().st_size})
    with tempfile.TemporaryDirectory(prefix="envoyext-size-") as t:
        d = scaffold.render("blank", "blank-c", "c", Path(t) / "blank-c")
        rows.append({"filter": "blank", "bytes": proj.build(proj.load(d)).path.stat().st_size})
    return {"rows": rows, "sdk": [{"sdk": s, "low": lo, "high": hi} for s, lo, hi in SDK_FIGURES],
            "command": "envoyext build filters/<kind>/c; envoyext new blank blank-c --lang c; envoyext build blank-c"}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def scale_profile(n: int) -> dict:
    """cProfile of one sidecar's translation at `n` services (bench/mesh_scale.py profile)."""
    import json
    code = (f"import json,sys; sys.path.insert(0, {str(ROOT)!r}); from bench import mesh_scale; "
            f"print(json.dumps(mesh_scale.profile({n})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                          env=child_env())
    return json.loads(proc.stdout.strip().splitlines()[-1])
