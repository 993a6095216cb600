"""Full request+response cycles per second through the Wasm host, on one core.

    python bench/wasm_bench.py [seconds]

A cycle is what one proxied request costs the filter in Envoy: context create, request headers,
response headers, response body (data + end chunk), on_log, on_done, on_delete. Measured for
a blank filter and for one that touches ten headers each way; then the same blank cycle through
wasmtime-py's ordinary call path (Func.__call__ and Linker.define_func), for the ratio.
Prints figures only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.wasm.conftest import build  # noqa: E402  (the suite's module builder, cached by content)


def fast_cycles(path: Path, seconds: float) -> float:
    from envoyext.wasm.api import WasmPlugin
    p = WasmPlugin.load(path, name="bench", idle_vms=0)
    headers = [(":authority", "example.com"), (":path", "/"), (":method", "GET"), (":scheme", "http"),
               ("user-agent", "bench"), ("x-a", "1"), ("x-e", "1"), ("x-f", "1")]
    resp = {"content-type": "text/plain", "x-a": "1", "x-r4": "1", "server": "x"}
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(200):
            p.call(list(headers), response_headers=resp, response_body=b"hello")
        n += 200
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def naive_cycles(path: Path, seconds: float) -> float:
    """The same blank cycle with wasmtime-py's stock API: typed Func calls, define_func imports."""
    import wasmtime
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    module = wasmtime.Module.from_file(engine, str(path))
    for imp in module.imports:   # the blank module imports nothing; keep the loop for honesty
        linker.define_func(imp.module, imp.name, imp.type, lambda *a: 0)
    inst = linker.instantiate(store, module)
    ex = inst.exports(store)
    ex["_initialize"](store)
    f = {n: ex[n] for n in ("proxy_on_context_create", "proxy_on_request_headers", "proxy_on_response_headers",
                            "proxy_on_response_body", "proxy_on_log", "proxy_on_done", "proxy_on_delete")}
    f["proxy_on_context_create"](store, 1, 0)
    n, cid = 0, 2
    t0 = time.perf_counter()
    while True:
        for _ in range(100):
            f["proxy_on_context_create"](store, cid, 1)
            f["proxy_on_request_headers"](store, cid, 8, 1)
            f["proxy_on_response_headers"](store, cid, 6, 0)
            f["proxy_on_response_body"](store, cid, 5, 0)
            f["proxy_on_response_body"](store, cid, 0, 1)
            f["proxy_on_log"](store, cid)
            f["proxy_on_done"](store, cid)
            f["proxy_on_delete"](store, cid)
            cid += 1
        n += 100
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def figures(seconds: float = 3.0) -> dict:
    blank, ten = build("blank"), build("tenheaders")
    b = fast_cycles(blank, seconds)
    t = fast_cycles(ten, seconds)
    nv = naive_cycles(blank, seconds)
    return {"blank_cycles_s": round(b), "ten_headers_cycles_s": round(t), "naive_blank_cycles_s": round(nv),
            "ratio_to_naive": round(b / nv, 3)}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})   # one core
    f = figures(seconds)
    b, t, nv = f["blank_cycles_s"], f["ten_headers_cycles_s"], f["naive_blank_cycles_s"]
    print(f"blank filter, full cycles:            {b:10,.0f} /s")
    print(f"ten-header filter, full cycles:       {t:10,.0f} /s")
    print(f"blank cycle, naive wasmtime-py calls: {nv:10,.0f} /s  (guest calls only, no host logic)")
    print(f"ratio blank (envoyext host) / naive:  {b / nv:10.2f}x")


if __name__ == "__main__":
    main()
