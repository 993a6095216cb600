"""Requests per second through the Lua filter emulator, on one core.

The script reads two request headers and adds two request headers and one response header: the
shape of most gateway Lua. Two figures: the filter alone (decode + encode of a ready stream, what
the emulator itself costs) and a whole emulated request (routing, echo upstream, observation).

    .venv/bin/python bench/lua_bench.py [seconds]

Target: the filter figure at or above 20,000 requests/s on an idle core. Scripts that only add
headers send back just the added entries (the host appends them), which is most of the margin.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from envoyext.artifact import Artifact
from envoyext.emulated.connection_manager import EmulatedEnvoy
from envoyext.emulated.stream import Stream
from envoyext.lua.emulator import LuaFilterHost
from envoyext.scenario import from_dict

SCRIPT = """
function envoy_on_request(handle)
  local headers = handle:headers()
  local user = headers:get("x-user") or "anonymous"
  local path = headers:get(":path")
  headers:add("x-user-seen", user)
  headers:add("x-path-len", #path)
end

function envoy_on_response(handle)
  handle:headers():add("x-served-by", "lua")
end
"""


def measure(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            fn()
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def figures(seconds: float = 3.0) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(SCRIPT)
        scenario = from_dict({"cases": [{"name": "bench", "request": {"path": "/items/42",
                                         "headers": {"x-user": "alice"}}}]}, Path(tmp) / "bench.yaml")
        env = EmulatedEnvoy(scenario)
        host = LuaFilterHost(Artifact("lua", script, "bench.lua"), None, env)
        base = [(":authority", "example.com"), (":path", "/items/42"), (":method", "GET"),
                (":scheme", "http"), ("user-agent", "bench"), ("accept", "*/*"), ("x-user", "alice"),
                ("x-forwarded-proto", "http"), ("x-request-id", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")]
        response = [(":status", "200"), ("content-type", "application/json"), ("content-length", "2"),
                    ("date", "-"), ("server", "envoy")]

        def filter_only():
            stream = Stream(list(base), b"", [], env)
            sf = host.new_stream(stream)
            sf.decode(stream)
            stream.response_headers, stream.response_body = list(response), b"{}"
            sf.encode(stream)

        def whole_request():
            env.request(host, scenario.cases[0])
            env.take_received()

        filter_only()
        assert host.stats()["http.ingress_http.lua.errors"] == 0
        out["filter_cycles_s"] = round(measure(filter_only, seconds))
        out["whole_request_s"] = round(measure(whole_request, seconds))
        host.close()
    return out


def main(seconds: float = 3.0) -> None:
    f = figures(seconds)
    print(f"lua filter (decode+encode, read 2 / add 3 headers): {f['filter_cycles_s']:,.0f} requests/s on one core")
    print(f"whole emulated request (routing, echo upstream):     {f['whole_request_s']:,.0f} requests/s on one core")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
