"""ratelimit across Envoy's worker threads (Envoy runs with --concurrency 2 here).

Scenarios send every request on a new connection, which the kernel hands to either worker; these
tests control connections to show what the scenario format cannot:
  - the Wasm buckets are shared: concurrent requests on many connections admit exactly max_tokens;
  - the Lua buckets are per worker: one keep-alive connection stays on one worker and sees exactly
    max_tokens, while many connections may see up to workers x max_tokens.
Run: .venv/bin/pytest filters/ratelimit/test_live.py
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).parent
WORKERS = 2
CONFIG = {"token_bucket": {"max_tokens": 5, "tokens_per_fill": 1, "fill_interval": "60s"}}


def get(conn: http.client.HTTPConnection, path: str = "/") -> tuple[int, dict]:
    conn.request("GET", path, headers={"host": "example.com"})
    resp = conn.getresponse()
    resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}


def statuses_on_new_connections(envoy, n: int) -> list[int]:
    def one(_):
        conn = http.client.HTTPConnection(*envoy.envoy.listener, timeout=10)
        try:
            return get(conn)[0]
        finally:
            conn.close()
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("lang", ["lua", "c"])
def test_one_connection_sees_exactly_the_burst(envoy_filter, lang):
    envoy = envoy_filter(HERE / lang, config=CONFIG)
    conn = http.client.HTTPConnection(*envoy.envoy.listener, timeout=10)
    try:
        seen = [get(conn) for _ in range(7)]
    finally:
        conn.close()
    assert [s for s, _ in seen] == [200] * 5 + [429] * 2
    assert [h["x-ratelimit-remaining"] for _, h in seen] == ["4", "3", "2", "1", "0", "0", "0"]
    status, headers = seen[-1]
    assert headers["x-ratelimit-limit"] == "5"
    assert int(headers["retry-after"]) >= 1 and int(headers["x-ratelimit-reset"]) >= 1


def test_wasm_buckets_are_shared_by_all_workers(envoy_filter):
    envoy = envoy_filter(HERE / "c", config=CONFIG)
    statuses = statuses_on_new_connections(envoy, 40)
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 35


def test_lua_buckets_are_per_worker(envoy_filter):
    envoy = envoy_filter(HERE / "lua", config=CONFIG)
    statuses = statuses_on_new_connections(envoy, 40)
    # At least one worker's bucket, at most every worker's: Lua has no memory shared by workers.
    assert 5 <= statuses.count(200) <= 5 * WORKERS, statuses
