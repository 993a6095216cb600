"""The Lua emulator on its own: configuration, the Python API, and what scenarios cannot reach
(named source_codes, trailers, TLS, load errors). Behaviour shared with Envoy is held against live
Envoy in test_differential.py; facts here were observed there or on Envoy 1.40 by hand."""

from __future__ import annotations

import pytest

from envoyext.errors import UserError
from envoyext.lua.api import LuaFilter
from envoyext.lua.host import ScriptLoadError

ECHO_HEADERS = """
function envoy_on_request(h)
  h:headers():add("x-script", "%s")
end
"""


def test_api_request_headers_logs_and_stats():
    with LuaFilter(code='function envoy_on_request(h) h:headers():add("x-a", h:headers():get("x-b") .. "!") '
                        'h:logInfo("seen") end\n'
                        'function envoy_on_response(h) h:headers():add("x-r", "1") end') as f:
        r = f.request("GET", "/x", headers={"x-b": "2"})
        assert (r.status, r.upstream_header("x-a"), r.header("x-r")) == (200, "2!", "1")
        assert [(l.level, l.message) for l in r.logs] == [("info", "seen")]
        assert r.stats == {"http.ingress_http.lua.executions": 2}
        assert f.stats() == {"http.ingress_http.lua.errors": 0, "http.ingress_http.lua.executions": 2}


def test_script_load_error_is_envoys_message():
    with pytest.raises(ScriptLoadError) as e:
        LuaFilter(code="function envoy_on_request(h)\n  x = = 1\nend\n")
    assert 'script load error: [string "function envoy_on_request(h)..."]:2:' in str(e.value)


def test_chunk_name_is_the_first_line_even_for_a_file(tmp_path):
    script = tmp_path / "f.lua"
    script.write_text("-- my filter\nfunction envoy_on_request(h)\n  error('boom')\nend\n")
    with LuaFilter(script) as f:
        r = f.request()
    assert r.logs[-1].message == '[string "-- my filter..."]:3: boom'
    assert r.stats == {"http.ingress_http.lua.errors": 1, "http.ingress_http.lua.executions": 1}


def test_named_source_codes_and_unknown_name_runs_nothing():
    routes = [{"name": "a", "match": {"prefix": "/a"}, "per_filter_config": {"name": "alpha"}},
              {"name": "b", "match": {"prefix": "/b"}, "per_filter_config": {"name": "nope"}},
              {"name": "d", "match": {"prefix": "/"}}]
    lua_config = {"source_codes": {"alpha": {"inline_string": ECHO_HEADERS % "alpha"}}, "stat_prefix": "mine"}
    with LuaFilter(code=ECHO_HEADERS % "default", routes=routes, lua_config=lua_config) as f:
        assert f.request(path="/a").upstream_header("x-script") == "alpha"
        r = f.request(path="/b")
        assert r.upstream_header("x-script") is None and r.stats == {}
        r = f.request(path="/other")
        assert r.upstream_header("x-script") == "default"
        assert r.stats == {"http.ingress_http.lua.mine.executions": 1}


def test_config_is_visible_as_envoyext_config():
    with LuaFilter(code='function envoy_on_request(h) h:headers():add("x-c", envoyext_config.limit) end',
                   config={"limit": 3}) as f:
        assert f.request().upstream_header("x-c") == "3"


def test_trailers_are_read_and_modified():
    code = """
function envoy_on_request(h)
  local n = 0
  for chunk in h:bodyChunks() do n = n + 1 end
  local t = h:trailers()
  t:add("x-chunks", n)
  h:logInfo("trailer " .. t:get("x-t") .. " chunks " .. t:get("x-chunks"))
end
"""
    with LuaFilter(code=code) as f:
        r = f.request("POST", "/", body=b"abc", trailers={"x-t": "tv"})
    # With trailers the body is one chunk and no empty end-of-stream chunk follows.
    assert [l.message for l in r.logs] == ["trailer tv chunks 1"]
    assert r.stats == {"http.ingress_http.lua.executions": 1}


def test_dead_handle_used_by_a_later_stream():
    code = """
saved = nil
function envoy_on_request(h)
  if saved then saved:headers() end
  saved = h
end
"""
    with LuaFilter(code=code) as f:
        assert f.request().stats == {"http.ingress_http.lua.executions": 1}
        r = f.request()
    assert r.logs[-1].message.endswith(":4: object used outside of proper scope")


def test_wrong_receiver_is_an_argument_error():
    with LuaFilter(code="function envoy_on_request(h) h.headers() end") as f:
        r = f.request()
    assert ":1: bad argument #1 to 'headers' (" in r.logs[-1].message


def test_callout_to_a_cluster_records_what_it_received():
    code = """
function envoy_on_request(h)
  local rh, rb = h:httpCall("auth", {[":method"]="GET", [":path"]="/check", [":authority"]="auth"}, nil, 250)
  h:headers():add("x-auth", rh[":status"] .. " " .. rb)
end
"""
    with LuaFilter(code=code, clusters={"auth": {"status": 201, "body": "ok"}}) as f:
        r = f.request()
    assert r.upstream_header("x-auth") == "201 ok"
    got = r.clusters["auth"][0]
    assert (got.method, got.path) == ("GET", "/check")
    assert ("x-envoy-expected-rq-timeout-ms", "250") in got.headers
    assert ("x-envoy-internal", "true") in got.headers


def test_respond_sends_a_local_reply_that_the_response_script_sees():
    code = """
function envoy_on_request(h)
  h:respond({[":status"] = "401", ["www-authenticate"] = "Bearer"}, "who are you")
  h:logInfo("not reached")
end
function envoy_on_response(h)
  h:headers():add("x-status-seen", h:headers():get(":status"))
end
"""
    with LuaFilter(code=code) as f:
        r = f.request()
    assert (r.status, r.body, r.header("www-authenticate"), r.header("x-status-seen")) == \
        (401, b"who are you", "Bearer", "401")
    assert r.upstream == [] and r.logs == []


def test_stats_counters_gauges_and_histograms_by_admin_name():
    code = """
function envoy_on_request(h)
  local s = h:stats()
  s:counter("hits"):add(2)
  s:gauge("level"):set(7)
  s:histogram("latency", "ms"):recordValue(42)
  s:histogram("latency"):recordValue(3.9)
  s:histogram("unused")
end
"""
    with LuaFilter(code=code, lua_config={"stat_prefix": "p"}) as f:
        r = f.request()
        assert r.stats == {"http.ingress_http.lua.p.hits": 2, "http.ingress_http.lua.p.level": 7,
                           "http.ingress_http.lua.p.executions": 1}
        f.request()
        # Every recorded value, truncated to an integer as luaL_checkinteger does (seen on 1.40).
        assert f.host.histograms() == {"http.ingress_http.lua.p.latency": [42.0, 3.0, 42.0, 3.0],
                                       "http.ingress_http.lua.p.unused": []}
        assert f.stats()["http.ingress_http.lua.p.hits"] == 4


def test_stats_are_shared_by_every_script_of_the_filter():
    routes = [{"name": "a", "match": {"prefix": "/a"}, "per_filter_config": {"name": "alpha"}},
              {"name": "d", "match": {"prefix": "/"}}]
    counting = ('function envoy_on_request(h) local c = h:stats():counter("n"); c:inc(); '
                'h:headers():add("x-n", c:value()) end')
    with LuaFilter(code=counting, routes=routes,
                   lua_config={"source_codes": {"alpha": {"inline_string": counting}}}) as f:
        assert f.request(path="/a").upstream_header("x-n") == "1"
        assert f.request(path="/b").upstream_header("x-n") == "2"


def test_lua_options_come_from_the_artifact_and_named_scripts_get_the_config(tmp_path):
    from envoyext.artifact import Artifact
    from envoyext.emulated.connection_manager import EmulatedEnvoy
    from envoyext.lua.emulator import LuaFilterHost
    from envoyext.scenario import Case, Request, from_dict
    (tmp_path / "f.lua").write_text('function envoy_on_request(h) h:headers():add("x-s", "default") end\n')
    (tmp_path / "n.lua").write_text('function envoy_on_request(h) h:headers():add("x-s", envoyext_config.v) end')
    scenario = from_dict({"cases": [], "routes": [{"name": "n", "match": {"prefix": "/"},
                                                   "per_filter_config": {"name": "named"}}]}, tmp_path / "s.yaml")
    options = {"stat_prefix": "opt", "clear_route_cache": False,
               "source_codes": {"named": {"filename": str(tmp_path / "n.lua")}}}
    env = EmulatedEnvoy(scenario)
    host = LuaFilterHost(Artifact("lua", tmp_path / "f.lua", "f", lua_options=options), {"v": "cfg"}, env)
    try:
        env.request(host, Case("c", Request(), {}))
        assert ("x-s", "cfg") in env.take_received()["upstream"][0].headers
        assert host.stats()["http.ingress_http.lua.opt.executions"] == 1
        assert host.clear_route_cache is False
    finally:
        host.close()


@pytest.mark.parametrize("body,expected", [
    # only appends: the host appends the new entries to what it sent
    ('h:headers():add("x-a", "1"); h:headers():add("x-b", "2")', [("x-a", "1"), ("x-b", "2")]),
    # an inline header merges into the existing entry; a replace moves it to the end
    ('h:headers():add("x-a", "1"); h:headers():add("accept", "b")', [("x-a", "1")]),
    ('h:headers():replace("x-keep", "v2"); h:headers():add("x-a", "1")', [("x-keep", "v2"), ("x-a", "1")]),
])
def test_changed_request_headers_reach_the_upstream(body, expected):
    with LuaFilter(code=f"function envoy_on_request(h) {body} end") as f:
        r = f.request(headers={"x-keep": "v1", "accept": "a"})
    got = [(k, v) for k, v in r.upstream[-1].headers if k.startswith("x-a") or k in ("x-b", "x-keep")]
    assert got[-len(expected):] == expected
    if "accept" in body:
        assert ("accept", "a,b") in r.upstream[-1].headers


def test_the_proxy_identity_names_the_lua_filter_stats(tmp_path):
    from envoyext.artifact import Artifact
    from envoyext.envoy.identity import ProxyIdentity
    from envoyext.runners import emulated
    from envoyext.scenario import load
    (tmp_path / "f.lua").write_text("function envoy_on_request(h) h:stats():counter('seen'):inc() end\n")
    (tmp_path / "s.yaml").write_text("cases: [{name: one, request: {}}]\n")
    gateway = ProxyIdentity(name="gateway", stat_prefix="gateway_http")
    [obs] = emulated.run_scenario(Artifact("lua", tmp_path / "f.lua", "f"), load(tmp_path / "s.yaml"),
                                  identity=gateway)
    assert obs.stats["http.gateway_http.lua.seen"] == 1 and obs.stats["http.gateway_http.lua.executions"] == 1
    assert obs.stats["http.gateway_http.downstream_rq_total"] == 1
    assert not any(name.startswith("http.ingress_http.") for name in obs.stats)


def test_the_python_api_takes_lua_libraries():
    code = ('function envoy_on_request(h)\n'
            '  local m = pw_match.string_matcher({prefix = "/api"}, "p")\n'
            '  h:respond({[":status"] = m(h:headers():get(":path")) and "200" or "404"}, "")\n'
            'end\n')
    with LuaFilter(code=code, libraries=["pw_match"]) as f:
        assert f.request(path="/api/x").status == 200
        assert f.request(path="/x").status == 404
    with pytest.raises(UserError, match=r"libraries\[0\]: unknown Lua library 'nope'"):
        LuaFilter(code=code, libraries=["nope"])


@pytest.mark.parametrize("timeout", ["0/0", "math.huge", "2^63", "{timeout_ms = 0/0}", "{timeout_ms = math.huge}"])
def test_http_call_with_a_non_finite_timeout_is_a_script_error_not_a_host_error(timeout):
    # Found by tests/lua/test_fuzz_lua.py (shrunk: httpCall's timeout = math.huge): the NaN or
    # infinity went on to Python's int() and the Lua side saw "unspecified lua error". LuaJIT's
    # lua_tointeger casts it to INT64_MIN, a negative timeout, which httpCall refuses.
    code = ('function envoy_on_request(h)\n  h:httpCall("auth", {[":path"] = "/x", [":method"] = "GET", '
            f'[":authority"] = "h"}}, "b", {timeout})\nend')
    with LuaFilter(code=code, clusters={"auth": {"status": 200}}) as f:
        r = f.request()
    assert r.status == 200 and r.clusters == {}
    assert [(l.level, l.message.split(": ", 1)[-1]) for l in r.logs] == [("error", "http call timeout must be >= 0")]
