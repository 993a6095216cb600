"""BENCHMARKS.md and its plots from the figures in bench/results/*.json (pure: no Envoy, no timing).

    python -m bench.report          (re-render from the last run's results)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from envoyext.benchmark import MODES, Sample, Spread

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "BENCHMARKS.md"
SUBJECTS = ("none", "native", "lua", "c")
NAMES = {"none": "no filter", "native": "native Envoy filter", "lua": "Lua", "c": "C/Wasm"}
BLANK_MIN = 0.90          # the blank C/Wasm filter keeps >= 90 % of no-filter throughput
NATIVE_MAX = 1.25         # every library filter within 1.25x of the native filter
LINEAR_SLACK = 1.5        # time per service at the largest mesh within 1.5x of that at 1,000
COLD_LOOP_MAX_S = 10.0


# ---------------------------------------------------------------- formatting

def n0(x: float) -> str:
    return f"{x:,.0f}"


def spread_text(s: Spread, fmt: str = "{:,.0f}") -> str:
    """"median (min–max)"; a single run has no range."""
    if s.n == 1 or s.low == s.high:
        return fmt.format(s.median)
    return f"{fmt.format(s.median)} ({fmt.format(s.low)}–{fmt.format(s.high)})"


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else "**PASS**" if ok else "**MISS**"


def samples(row: dict, mode: str) -> dict[str, list[Sample]]:
    return {k: [Sample(**s) for s in v] for k, v in row["modes"].get(mode, {}).items()}


def spreads(row: dict, mode: str, key: str = "rps") -> dict[str, Spread]:
    return {k: Spread.of([getattr(s, key) for s in v]) for k, v in samples(row, mode).items() if v}


# ---------------------------------------------------------------- targets

def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of issue 13 that the results cover."""
    out = []
    dp = r.get("datapath")
    if dp:
        for row in dp["rows"]:
            for mode in MODES:
                rps = spreads(row, mode)
                cpu = spreads(row, mode, "cpu_us_per_request")
                if row["kind"] == "blank" and "c" in rps:
                    ratio = rps["c"].ratio(rps["none"])
                    by_cpu = cpu["none"].median / cpu["c"].median
                    out.append((f"blank C/Wasm keeps ≥ {BLANK_MIN:.0%} of no-filter throughput ({mode})",
                                f"{ratio.median:.0%} ({ratio.low:.0%}–{ratio.high:.0%}); by CPU/req {by_cpu:.0%}",
                                ratio.median >= BLANK_MIN))
                if "native" in rps:
                    for lang in ("lua", "c"):
                        cost = rps["native"].ratio(rps[lang])    # native rps / filter rps: how many times slower
                        by_cpu = cpu[lang].median / cpu["native"].median
                        out.append((f"{row['kind']} {NAMES[lang]} within {NATIVE_MAX}× of native ({mode})",
                                    f"{cost.median:.2f}× ({cost.low:.2f}–{cost.high:.2f}); by CPU/req {by_cpu:.2f}×",
                                    cost.median <= NATIVE_MAX))
    sc = r.get("scale")
    if sc:
        rows = {x["services"]: x for x in sc["rows"]}
        if 1000 in rows:
            x = rows[1000]
            ours = x["model_s"] + x["translate_one_sidecar_s"]
            out.append(("translating 1,000 services takes less time than Envoy takes to load the result",
                        f"{ours:.2f} s vs Envoy {x['envoy_validate_one_sidecar_s']:.2f} s",
                        ours < x["envoy_validate_one_sidecar_s"]))
            big = max(rows)
            if big <= 1000:
                out.append(("translation grows linearly", "not measured: the largest mesh of this run has "
                            f"{big:,} services (the full run goes to 5,000)", None))
            else:
                per = [(rows[n]["model_s"] + rows[n]["translate_one_sidecar_s"]) / n for n in (1000, big)]
                out.append((f"translation grows linearly (time per service at {big:,} within {LINEAR_SLACK}× of "
                            "that at 1,000)", f"{per[1] / per[0]:.2f}×", per[1] / per[0] <= LINEAR_SLACK))
    lt = r.get("loop")
    if lt and "c" in lt:
        t = lt["c"]["cold"]["total"]
        out.append((f"cold new→build→test of a C filter under {COLD_LOOP_MAX_S:.0f} s (empty compiler cache)",
                    f"{t:.1f} s", t < COLD_LOOP_MAX_S))
        w = lt["c"]["warm"]["total"]
        out.append(("the same for a new C project on a machine that built one before (warm compiler cache)",
                    f"{w:.1f} s", w < COLD_LOOP_MAX_S))
    return out


# ---------------------------------------------------------------- sections

def machine_text(m: dict, r: dict) -> str:
    quick = " — **quick mode: short runs for development, not figures to publish**" if r.get("quick") else ""
    return (f"Measured {m['date_utc']} on {m['nproc']} cores ({m['cpu_model']}), Envoy {m['envoy']}, "
            f"Python {m['python']}, Linux {m['kernel']}; load average at the start "
            f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}{quick}.")


def datapath_section(dp: dict, plot: str | None) -> str:
    out = ["## 1. Data-path cost", "",
           f"Command: `{dp.get('command', 'python -m bench.datapath')}` — wrk (`{dp['wrk']}`), "
           f"median of {dp['runs']} interleaved runs per subject (A, B, C, A, B, C …), range in brackets.",
           "",
           "Envoy at production log level (`-l warning`, every component at warning), one worker, pinned to core 0; "
           "wrk and the upstream pinned to core 1. `direct`: the route answers itself (Envoy and the filter "
           "alone); `upstream`: a real upstream, a second Envoy answering from direct-response listeners (it "
           "serves tens of thousands of requests a second on part of a core; the tests' Python upstream "
           "manages a few thousand and would be what is measured). An ext-authz check goes to the same fast "
           "upstream in both modes. *CPU/req* is the CPU time the Envoy under test spent per request "
           "(from /proc): a busy neighbour disturbs it far less than requests/s. *busy* is that Envoy's CPU "
           "share of its core during the run (below ~0.9, something else — wrk, the upstream, a neighbour — "
           "was the limit). A request with a body (cors, csrf: POST) goes through a buffer filter before the "
           "router in `direct` (every subject alike) and at the upstream: Envoy otherwise answers before "
           "reading the body and closes the connection, and every request would pay for a new one. "
           "*errors*: answers other than 2xx/3xx and socket errors per run (median); each "
           "chosen request is one the filter lets through, so anything but 0 is a fault of the set-up.", ""]
    if plot:
        out += [f"![throughput relative to no filter]({plot})", ""]
    for mode in MODES:
        rows = []
        for row in dp["rows"]:
            rps = spreads(row, mode)
            if not rps:
                continue
            p50, p99 = spreads(row, mode, "p50_ms"), spreads(row, mode, "p99_ms")
            cpu, busy = spreads(row, mode, "cpu_us_per_request"), spreads(row, mode, "proxy_busy")
            errors = spreads(row, mode, "errors")
            for subj in SUBJECTS:
                if subj not in rps:
                    continue
                vs_none = rps[subj].ratio(rps["none"])
                vs_native = rps[subj].ratio(rps["native"]) if "native" in rps and subj in ("lua", "c") else None
                rows.append([row["kind"], NAMES[subj], spread_text(rps[subj]),
                             "" if subj == "none" else spread_text(vs_none, "{:.2f}"),
                             "" if vs_native is None else spread_text(vs_native, "{:.2f}"),
                             f"{p50[subj].median:.2f}", f"{p99[subj].median:.2f}",
                             f"{cpu[subj].median:.1f}", f"{busy[subj].median:.2f}",
                             f"**{errors[subj].median:,.0f}**" if errors[subj].high else "0"])
        out += [f"### {mode}", "", table(["filter", "subject", "requests/s", "÷ none", "÷ native", "p50 ms",
                                          "p99 ms", "CPU µs/req", "busy", "errors"], rows), ""]
    out += ["Requests (one per kind, from its scenarios: the request a filter sees most in production, one it "
            "lets through after doing its whole check):", ""]
    for row in dp["rows"]:
        note = f" — {row['note']}" if row.get("note") else ""
        out.append(f"- **{row['kind']}**: `{row['scenario']}`, case “{row['case']}” "
                   f"({row['request']['method']} {row['request']['path']}){note}")
    out.append("")
    return "\n".join(out)


def cost_profile(dp: dict) -> str:
    """Each filter's own CPU per request over no filter, against the native filter's: where the time goes."""
    rows = []
    for row in dp["rows"]:
        for mode in MODES:
            cpu = spreads(row, mode, "cpu_us_per_request")
            if not cpu:
                continue
            base = cpu["none"].median
            cells = [f"{cpu[s].median - base:+.1f}" if s in cpu else "–" for s in ("native", "lua", "c")]
            rows.append([row["kind"], mode, f"{base:.1f}", *cells])
    return table(["filter", "route", "none µs/req", "native +µs", "Lua +µs", "C/Wasm +µs"], rows)


def emulator_section(e: dict) -> str:
    w, lua = e["wasm"], e["lua"]
    return "\n".join([
        "## 2. Emulator speed", "", f"Command: `{e['command']}` (one core).", "",
        table(["runner", "figure", "per second"], [
            ["Wasm", "blank filter, full request cycle", n0(w["blank_cycles_s"])],
            ["Wasm", "ten-header filter, full request cycle", n0(w["ten_headers_cycles_s"])],
            ["Wasm", "blank cycle through wasmtime-py's ordinary call path (naive)", n0(w["naive_blank_cycles_s"])],
            ["Wasm", "ratio envoyext host / naive", f"{w['ratio_to_naive']:.2f}×"],
            ["Lua", "filter alone (decode + encode, read 2 / add 3 headers)", n0(lua["filter_cycles_s"])],
            ["Lua", "whole emulated request (routing, echo upstream)", n0(lua["whole_request_s"])]]), ""])


def loop_section(lt: dict, mesh: dict | None) -> str:
    rows = []
    for lang in ("c", "lua"):
        if lang not in lt:
            continue
        for which, label in (("cold", "cold (empty compiler cache)"), ("warm", "warm (new project, warm cache)")):
            s = lt[lang][which]
            rows.append([NAMES[lang], label, f"{s['new']:.2f}", f"{s['build']:.2f}", f"{s['test']:.2f}",
                         f"**{s['total']:.2f}**"])
        rows.append([NAMES[lang], "`envoyext test` again, nothing changed", "", "",
                     f"{lt[lang]['rerun_test']:.2f}", ""])
    e = lt["envoy_start_to_ready"]
    out = ["## 3. Loop time", "", f"Command: `{lt['command']}` — `envoyext new blank` + `build` + `test` "
           "(emulator and live Envoy, every scenario), wall time in seconds.", "",
           table(["filter", "loop", "new", "build", "test", "total"], rows), "",
           f"Envoy start to ready (exec to /ready LIVE, one listener, no filter): median {e['median_s']:.3f} s "
           f"({e['min_s']:.3f}–{e['max_s']:.3f}, {e['n']} starts).", ""]
    if mesh:
        out += [f"`{mesh['command']}`: {mesh['proxies']} proxies ready in {mesh['reported_s']:.1f} s as the command "
                f"reports it ({mesh['wall_s']:.1f} s wall from exec, Python start-up included).", ""]
    return "\n".join(out)


def scale_section(sc: dict, plot: str | None) -> str:
    rows = [[n0(x["services"]), n0(x["proxies"]), f"{x['model_s']:.3f}", f"{x['translate_one_sidecar_s']:.3f}",
             f"{x['one_sidecar_config_bytes'] / 2**20:.2f}", f"{x['peak_mem_mb']:.1f}",
             f"{x.get('peak_rss_mb', float('nan')):.0f}", f"{x['envoy_validate_one_sidecar_s']:.2f}"]
            for x in sc["rows"]]
    out = ["## 4. Translator scale", "",
           f"Command: `{sc['command']}`. Generated meshes: per service a Service, two Deployments (v1, v2), a "
           "VirtualService splitting 90/10 between two subsets, a DestinationRule with the two subsets and an "
           "AuthorizationPolicy. *model*: resources to the mesh model (every proxy); *translate*: one sidecar's "
           "whole config (it holds every service); *Envoy load*: `envoy --mode validate` of that config (process "
           "start included, ~0.25 s), the physical limit. Peak memory: tracemalloc during translation, and the "
           "process's peak RSS.", "",
           table(["services", "proxies", "model s", "translate s", "config MiB", "tracemalloc peak MiB",
                  "peak RSS MiB", "Envoy load s"], rows), ""]
    if plot:
        out += [f"![translator scale]({plot})", ""]
    return "\n".join(out)


def size_section(ms: dict, plot: str | None) -> str:
    rows = [[x["filter"], n0(x["bytes"]), f"{x['bytes'] / 1024:.1f}"] for x in ms["rows"]]
    sdk = [[f"{x['sdk']} (published)", (n0(x["low"]) if x["low"] == x["high"] else f"{n0(x['low'])}–{n0(x['high'])}"),
            (f"{x['low'] / 1024:.1f}" if x["low"] == x["high"] else f"{x['low'] / 1024:.0f}–{x['high'] / 1024:.0f}")]
           for x in ms["sdk"]]
    cpp = next((x for x in ms["sdk"] if "C++" in x["sdk"]), None)
    out = ["## 5. Module size", "", f"Command: `{ms['command']}`; the SDK figures are those issue 13 cites.", "",
           table(["module", "bytes", "KiB"], rows + sdk), "",
           size_summary(ms["rows"], cpp), ""]
    if plot:
        out += [f"![module size]({plot})", ""]
    return "\n".join(out)


def size_summary(rows: list[dict], cpp: dict | None) -> str:
    biggest = max(rows, key=lambda x: x["bytes"])
    text = f"The largest envoyext C module is {biggest['filter']}, {biggest['bytes']:,} bytes"
    if cpp is None:
        return text + "."
    below = sum(x["bytes"] <= cpp["high"] for x in rows)
    return (text + f"; {below} of {len(rows)} modules are at or below the proxy-wasm C++ SDK's "
            f"{cpp['low']:,}–{cpp['high']:,} bytes (the other SDKs: larger, except AssemblyScript's).")


def misses_section(r: dict, missed: list[tuple[str, str, bool | None]]) -> str:
    out = ["## Where a target is missed", ""]
    if not missed:
        return "\n".join(out + ["Every target above was met in this run.", ""])
    dp = r.get("datapath")
    if dp and any("native" in t or "blank" in t for t, _, _ in missed):
        out += ["### Data path: where the time goes", "",
                "`perf` is not available on these machines, so the profile is Envoy's own process accounting: "
                "the CPU time the Envoy under test spent per request, minus the same figure with no filter, is "
                "what the filter itself costs per request (the Wasm VM calls, header copies into and out of the "
                "VM, the filter's own work); the native filter's is its C++ cost for the same job.", "",
                cost_profile(dp), "",
                "What was tried in this harness: Envoy at production log level instead of the tests' "
                "`wasm:trace,lua:trace` (issue 13 measured cors 0.39 → 0.73 of no-filter throughput from that "
                "alone); a fast Envoy upstream instead of the Python test upstream; the proxy pinned to its own "
                "core; interleaved runs. Making the filters and the C SDK themselves faster (cached metric ids and "
                "property paths, no per-request allocation or whole-map copies, reading only the headers a filter "
                "needs) is the other half of issue 13 and is done in `filters/*/c` and `envoyext/sdk`.", ""]
    lt = r.get("loop")
    if lt and any(t.startswith("cold new") for t, _, _ in missed):
        c = lt["c"]
        out += ["### Cold loop: where the time goes", "",
                f"Of the cold C loop's {c['cold']['total']:.1f} s, `envoyext build` takes {c['cold']['build']:.1f} s: "
                "with an empty compiler cache zig first compiles wasi-libc for wasm32 into its cache (once per "
                f"machine). On a warm cache the same new→build→test takes {c['warm']['total']:.1f} s (build "
                f"{c['warm']['build']:.1f} s, test {c['warm']['test']:.1f} s). Candidates: build the SDK without "
                "wasi-libc (it needs little of it), or ship the compiled libc with envoyext instead of building it "
                "on first use; neither is tried here.", ""]
    prof = (r.get("scale") or {}).get("profile")
    if prof:
        out += [f"### Translator: cProfile of one sidecar's translation at {n0(prof['services'])} services", "",
                "The translator's functions with the most cumulative time (own time: in the function itself). "
                "A function called once per cluster whose own time grows with the mesh is what makes the "
                "translation grow faster than linearly.", "",
                table(["function", "calls", "cumulative s", "own s"],
                      [[f"`{p['function']}`", n0(p["calls"]), f"{p['cumulative_s']:.2f}", f"{p['own_s']:.2f}"]
                       for p in prof["top"]]), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- plots

def plots(r: dict[str, Any], outdir: Path) -> dict[str, str]:
    """SVG plots; returns {name: path relative to the repository}. None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    plt.rcParams.update({"svg.hashsalt": "envoyext", "svg.fonttype": "none", "font.size": 9})
    outdir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def save(fig: Any, name: str) -> None:
        path = outdir / f"{name}.svg"
        fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
        plt.close(fig)
        made[name] = str(path.relative_to(ROOT))

    dp = r.get("datapath")
    if dp:
        fig, axes = plt.subplots(1, len(MODES), figsize=(11, 3.8), sharey=True)
        for ax, mode in zip(axes, MODES):
            kinds = [row for row in dp["rows"] if spreads(row, mode)]
            for j, subj in enumerate(("native", "lua", "c")):
                xs, ys, lo, hi = [], [], [], []
                for i, row in enumerate(kinds):
                    rps = spreads(row, mode)
                    if subj in rps:
                        q = rps[subj].ratio(rps["none"])
                        xs.append(i + (j - 1) * 0.27)
                        ys.append(q.median)
                        lo.append(q.median - q.low)
                        hi.append(q.high - q.median)
                ax.bar(xs, ys, 0.27, yerr=[lo, hi], capsize=2, label=NAMES[subj])
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.axhline(BLANK_MIN, color="grey", lw=0.8, ls=":")
            ax.set_xticks(range(len(kinds)), [row["kind"] for row in kinds], rotation=30, ha="right")
            ax.set_title(f"{mode}: requests/s ÷ no filter")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.06))
        fig.text(0.01, -0.08, f"{dp.get('command', '')} — {machine_line(r, 'datapath')}", fontsize=7)
        save(fig, "datapath")
    sc = r.get("scale")
    if sc:
        xs = [x["services"] for x in sc["rows"]]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(xs, [x["model_s"] + x["translate_one_sidecar_s"] for x in sc["rows"]], "o-",
                  label="envoyext: model + translate one sidecar")
        ax.loglog(xs, [x["envoy_validate_one_sidecar_s"] for x in sc["rows"]], "s-", label="Envoy: load (validate)")
        ax.loglog(xs, [xs[-1] and (x / xs[-1]) * (sc["rows"][-1]["envoy_validate_one_sidecar_s"]) for x in xs], ":",
                  color="grey", label="linear")
        ax.set_xlabel("services")
        ax.set_ylabel("seconds")
        ax.legend()
        ax.set_title("translator scale")
        fig.text(0.01, -0.06, f"{sc['command']} — {machine_line(r, 'scale')}", fontsize=7)
        save(fig, "scale")
    ms = r.get("size")
    if ms:
        names = [x["filter"] for x in ms["rows"]] + [x["sdk"] for x in ms["sdk"]]
        vals = [x["bytes"] / 1024 for x in ms["rows"]] + [x["high"] / 1024 for x in ms["sdk"]]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.barh(names, vals, color=["C0"] * len(ms["rows"]) + ["C7"] * len(ms["sdk"]))
        ax.set_xscale("log")
        ax.set_xlabel("KiB (log); SDKs: published figure, upper end")
        ax.invert_yaxis()
        fig.text(0.01, -0.08, f"{ms['command']} — {machine_line(r, 'size')}", fontsize=7)
        save(fig, "module_size")
    return made


def machine_line(r: dict, key: str | None = None) -> str:
    """The machine facts of section `key` (recorded with its figures), else of the last run."""
    m = (r.get(key) or {}).get("machine") if key else None
    m = m or r.get("machine") or {}
    load = m.get("loadavg_at_start") or [float("nan")]
    return (f"{m.get('nproc')} cores, {m.get('cpu_model')}, Envoy {m.get('envoy')}, {m.get('date_utc')}, "
            f"load average {load[0]:.1f} at the start")


# ---------------------------------------------------------------- the document

def render(r: dict[str, Any], plot_paths: dict[str, str] | None = None) -> str:
    plot_paths = plot_paths or {}
    met = targets(r)
    out = ["# Benchmarks", "",
           "<!-- generated by `make bench` (python -m bench); edit bench/report.py, not this file -->", "",
           f"Made by **`{r.get('command', 'make bench')}`**. `make bench` regenerates this file and its plots in one "
           "command (the full run, 10 to 15 minutes on 2 cores); `python -m bench --quick` is the short run for "
           "development, `python -m bench --report` re-renders from `bench/results/`. A user's own filter: "
           "`envoyext bench PROJECT`.", ""]
    if r.get("machine"):
        out += [machine_text(r["machine"], r), ""]
    for name, error in sorted((r.get("failed") or {}).items()):
        out += [f"**The `{name}` benchmark failed in the last run** ({error}); its section is missing.", ""]
    out += ["## Targets (issue 13)", "",
            "Throughput targets are judged on requests/s (median of the interleaved runs, range in brackets); "
            "the same ratio from the CPU time Envoy spent per request follows it, steadier when the machine "
            "is shared.", "",
            table(["target", "measured", ""], [[t, m, verdict(ok)] for t, m, ok in met]), ""]
    sections = []
    if r.get("datapath"):
        sections.append(("datapath", datapath_section(r["datapath"], plot_paths.get("datapath"))))
    if r.get("emulator"):
        sections.append(("emulator", emulator_section(r["emulator"])))
    if r.get("loop"):
        sections.append(("loop", loop_section(r["loop"], r.get("mesh_up"))))
    if r.get("scale"):
        sections.append(("scale", scale_section(r["scale"], plot_paths.get("scale"))))
    if r.get("size"):
        sections.append(("size", size_section(r["size"], plot_paths.get("module_size"))))
    for key, text in sections:   # every figure with the machine it ran on, under its heading
        m = r[key].get("machine") or r.get("machine")
        head, _, rest = text.partition("\n")
        out.append(f"{head}\n\n*Machine: {machine_line({'machine': m})}.*\n{rest}" if m else text)
    out.append(misses_section(r, [t for t in met if t[2] is False]))
    return "\n".join(out).rstrip() + "\n"


def load(results: Path = RESULTS) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def write(results: Path = RESULTS, out: Path = OUT) -> Path:
    r = load(results)
    run = r.pop("run", {})
    r.update(run)
    out.write_text(render(r, plots(r, results)))
    return out


if __name__ == "__main__":
    print(write())
    sys.exit(0)
