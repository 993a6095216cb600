"""The benchmark harness's pure parts: medians and spreads, the interleaving order, wrk's output and
command line, and BENCHMARKS.md's rendering from results. No Envoy, no wrk, nothing timed: a
benchmark is never an assertion of the suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from envoyext import benchmark as b
from envoyext.messages import Request

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import datapath, report  # noqa: E402


def test_spread_is_the_median_and_the_range():
    s = b.Spread.of([5, 1, 4, 2, 3])
    assert (s.median, s.low, s.high, s.n) == (3, 1, 5, 5)
    assert b.Spread.of([1, 2, 3, 10]).median == 2.5
    with pytest.raises(ValueError):
        b.Spread.of([])


def test_a_ratio_of_spreads_takes_the_widest_range_the_runs_allow():
    r = b.Spread.of([90, 100, 110]).ratio(b.Spread.of([180, 200, 220]))
    assert r.median == pytest.approx(0.5)
    assert r.low == pytest.approx(90 / 220)
    assert r.high == pytest.approx(110 / 180)


def test_runs_are_interleaved_not_consecutive():
    order = b.interleaved(["A", "B", "C"], 3)
    assert [label for _, label in order] == ["A", "B", "C", "B", "C", "A", "C", "A", "B"]
    assert [run for run, _ in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for label in "ABC":   # every subject once per round
        assert sorted(r for r, lab in order if lab == label) == [0, 1, 2]


WRK_OUT = """Running 1s test @ http://127.0.0.1:1234/x
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   246.67us  120.00us   3.10ms   90.00%
  Latency Distribution
     50%  212.00us
     75%  250.00us
     90%  300.00us
     99%    1.25ms
  64016 requests in 1.00s, 7.87MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  63999.50
Transfer/sec:      7.87MB
"""


def test_wrk_output_is_parsed_with_its_latency_distribution():
    out = b.parse_wrk(WRK_OUT)
    assert out["rps"] == 63999.5
    assert out["requests"] == 64016
    assert out["p50_ms"] == pytest.approx(0.212)
    assert out["p99_ms"] == pytest.approx(1.25)
    assert out["non_2xx"] == 7 and out["socket_errors"] == 3
    with pytest.raises(ValueError):
        b.parse_wrk("unable to connect")


def test_the_wrk_command_carries_the_cases_request(tmp_path):
    req = Request(method="POST", path="/form", authority="shop.example.com",
                  headers=[("origin", "https://shop.example.com"), ("content-length", "3")], body=b'q="1"')
    args, lua = b.wrk_command("http://127.0.0.1:1/form", req, duration=2, script=tmp_path / "r.lua")
    assert args[:6] == ["wrk", "-t1", "-c16", "-d2s", "--latency", "-H"]
    assert "Host: shop.example.com" in args and "origin: https://shop.example.com" in args
    assert not any(a.startswith("content-length") for a in args)   # wrk frames the body itself
    assert 'wrk.method = "POST"' in lua and 'wrk.body = "q=\\0341\\034"' in lua


def test_production_log_level_leaves_the_tests_identity_alone():
    from envoyext.envoy.identity import TEST_PROXY
    quiet = b.bench_identity()
    assert (quiet.log_level, quiet.component_log_level) == ("warning", "wasm:warning,lua:warning")
    assert TEST_PROXY.component_log_level == "wasm:trace,lua:trace"
    assert quiet.listener == TEST_PROXY.listener and quiet.node_id == TEST_PROXY.node_id


def test_a_buffer_goes_before_every_router():
    hcm = {"http_filters": [{"name": "f"}, {"name": "envoy.filters.http.router"}]}
    config = {"static_resources": {"listeners": [{"filter_chains": [{"filters": [{"typed_config": hcm}]}]}]}}
    b.buffered(config)
    assert [f["name"] for f in hcm["http_filters"]] == ["f", "envoy.filters.http.buffer", "envoy.filters.http.router"]


def test_the_rate_limit_bench_raises_every_bucket_filter_and_native_alike():
    doc = {"config": {"token_bucket": {"max_tokens": 5}, "descriptors": [{"token_bucket": {"max_tokens": 2}}]},
           "oracle": {"http_filters": [{"typed_config": {"token_bucket": {"max_tokens": 5}}}]}}
    out = datapath.unlimited(doc)
    assert out["config"]["token_bucket"] == datapath.BIG_BUCKET
    assert out["config"]["descriptors"][0]["token_bucket"] == datapath.BIG_BUCKET
    assert out["oracle"]["http_filters"][0]["typed_config"]["token_bucket"] == datapath.BIG_BUCKET
    assert doc["config"]["token_bucket"] == {"max_tokens": 5}   # the scenario itself is untouched


def sample(rps: float) -> dict:
    return {"rps": rps, "p50_ms": 0.2, "p99_ms": 1.0, "cpu_us_per_request": 1e6 / rps, "proxy_busy": 0.98,
            "errors": 0}


def results() -> dict:
    def modes(**subjects):
        return {mode: {k: [sample(v * f) for f in (0.95, 1.0, 1.05)] for k, v in subjects.items()}
                for mode in b.MODES}
    rows = [
        {"kind": "cors", "scenario": "filters/cors/scenarios/policy.yaml", "case": "actual", "note": "",
         "request": {"method": "GET", "path": "/"}, "wasm_bytes": 20000,
         "modes": modes(none=1000, native=900, lua=600, c=800)},
        {"kind": "blank", "scenario": "basic.yaml", "case": "adds", "note": "templates/blank",
         "request": {"method": "GET", "path": "/hello"}, "wasm_bytes": 9000,
         "modes": modes(none=1000, lua=700, c=950)},
    ]
    return {
        "machine": {"nproc": 2, "cpu_model": "Test CPU", "envoy": "1.40.0", "python": "3.12", "kernel": "6",
                    "loadavg_at_start": [0.1, 0.2, 0.3], "date_utc": "2026-12-06 01:00 UTC"},
        "quick": False, "command": "make bench", "failed": {},
        "datapath": {"runs": 3, "duration_s": 1, "wrk": "wrk -t1 -c16 -d1s --latency", "rows": rows,
                     "command": "python -m bench.datapath --runs 3 --duration 1"},
        "scale": {"command": "python bench/mesh_scale.py 10 1000 5000", "rows": [
            {"services": n, "proxies": 2 * n + 1, "model_s": 0.0, "translate_one_sidecar_s": t,
             "one_sidecar_config_bytes": n * 8000, "peak_mem_mb": n / 20, "envoy_validate_one_sidecar_s": e}
            for n, t, e in ((10, 0.01, 0.25), (1000, 0.8, 3.0), (5000, 8.0, 19.0))]},
        "loop": {"command": "python -m bench --only loop",
                 "c": {"cold": {"new": 0.3, "build": 44.0, "test": 1.4, "total": 45.7},
                       "warm": {"new": 0.2, "build": 1.0, "test": 1.6, "total": 2.8}, "rerun_test": 1.4},
                 "lua": {"cold": {"new": 0.3, "build": 0.2, "test": 0.8, "total": 1.3},
                         "warm": {"new": 0.2, "build": 0.2, "test": 0.7, "total": 1.1}, "rerun_test": 0.7},
                 "envoy_start_to_ready": {"median_s": 0.07, "min_s": 0.07, "max_s": 0.09, "n": 5}},
        "size": {"command": "envoyext build", "rows": [{"filter": "cors", "bytes": 20000}],
                 "sdk": [{"sdk": "Rust SDK", "low": 167000, "high": 167000}]},
    }


def test_the_targets_are_judged_from_the_results():
    met = {t: (m, ok) for t, m, ok in report.targets(results())}
    blank = met["blank C/Wasm keeps ≥ 90% of no-filter throughput (direct)"]
    assert blank == ("95% (86%–105%); by CPU/req 95%", True)
    assert met["cors C/Wasm within 1.25× of native (direct)"] == ("1.12× (1.02–1.24); by CPU/req 1.12×", True)
    assert met["cors Lua within 1.25× of native (upstream)"][1] is False      # 900 / 600 = 1.5x
    assert met["translating 1,000 services takes less time than Envoy takes to load the result"][1] is True
    linear = next(v for k, v in met.items() if k.startswith("translation grows linearly"))
    assert linear == ("2.00×", False)
    assert met["cold new→build→test of a C filter under 10 s (empty compiler cache)"] == ("45.7 s", False)


def test_the_report_states_the_command_machine_targets_and_misses():
    text = report.render(results(), {"datapath": "bench/results/datapath.svg"})
    assert "Made by **`make bench`**" in text
    assert "2 cores (Test CPU), Envoy 1.40.0" in text
    assert "| cors | C/Wasm | 800 (760–840) | 0.80 (0.72–0.88) | 0.89 (0.80–0.98) |" in text
    assert "![throughput relative to no filter](bench/results/datapath.svg)" in text
    assert "python -m bench.datapath --runs 3 --duration 1" in text
    assert text.count("**MISS**") >= 3 and "**PASS**" in text
    assert "## Where a target is missed" in text and "Cold loop: where the time goes" in text
    assert "quick mode" not in text
    assert "quick mode" in report.render({**results(), "quick": True})


def test_a_failed_section_is_said_not_hidden():
    text = report.render({**results(), "failed": {"scale": "RuntimeError: boom"}})
    assert "**The `scale` benchmark failed in the last run** (RuntimeError: boom)" in text


def test_rendering_from_result_files(tmp_path):
    r = results()
    run = {k: r.pop(k) for k in ("machine", "quick", "command", "failed")}
    (tmp_path / "run.json").write_text(json.dumps(run))
    for name, figures in r.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(figures))
    loaded = report.load(tmp_path)
    loaded.update(loaded.pop("run"))
    assert report.render(loaded) == report.render(results())


def test_envoyext_bench_summarises_each_subject_against_none_and_native():
    m = b.Measured("direct", {label: [b.Sample(**sample(v * f)) for f in (0.9, 1.0, 1.1)]
                              for label, v in (("none", 1000), ("native", 800), ("filter", 600))})
    m.samples["filter"][0].errors = 5
    rows = {r["subject"]: r for r in b.summary_rows(m)}
    assert "vs_none" not in rows["none"] and "vs_native" not in rows["native"]
    assert rows["filter"]["vs_none"]["median"] == pytest.approx(0.6)
    assert rows["filter"]["vs_native"]["median"] == pytest.approx(0.75)
    text = b.format_rows(list(rows.values()))
    assert "600 (540-660)" in text and "0.75 (0.61-0.92)" in text
    assert "errors:" not in text      # the median run had none
    m.samples["filter"][1].errors = m.samples["filter"][2].errors = 7
    assert "errors:" in b.format_rows(b.summary_rows(m))


def test_linear_growth_is_not_judged_without_a_mesh_above_1000():
    r = results()
    r["scale"]["rows"] = r["scale"]["rows"][:2]
    met = {t: (m, ok) for t, m, ok in report.targets(r)}
    assert met["translation grows linearly"][1] is None
    assert "| translation grows linearly | not measured" in report.render(r)
