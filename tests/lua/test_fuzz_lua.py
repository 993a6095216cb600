"""Property-based hardening of the Lua host (issue 14, item 3): hypothesis writes scripts that use
Envoy's Lua API at random - real and made-up method names on the handle and every object it hands
out, arguments of every type (nil, booleans, NaN and infinities, huge and non-UTF-8 strings, deeply
nested and oddly keyed tables, functions, other objects), iteration, yields, objects kept from an
earlier stream and used after it ended - each call bare (an error ends the script) or under pcall.

Properties, for any script:
  (a) no Python exception escapes the emulator, and none is raised inside what the runtime calls
      in Python (callouts, crypto, base64, stats, stream facts): a misuse is a Lua error, which
      Envoy's Lua filter logs and counts (the stream goes on), as the emulator models;
  (b) nothing one stream does reaches another stream's headers, dynamic metadata or filter state;
  (c) afterwards a known-good request through the same script gets the known-good result.

Examples: FUZZ_EXAMPLES (default 400 per test), derandomized as in tests/wasm/test_fuzz_host.py;
FUZZ_SEED=<n> explores other examples in a long local run.
"""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from envoyext.lua import emulator as lua_emulator
from envoyext.lua import host as lua_host
from envoyext.lua.api import LuaFilter

# A script is cheap (~20 ms with its LuaJIT state): 400 examples per test take about 8 s.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
FUZZ_SEED = os.environ.get("FUZZ_SEED")


def fuzz_settings(f):
    f = settings(max_examples=EXAMPLES, deadline=None, derandomize=FUZZ_SEED is None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(f)
    return seed(int(FUZZ_SEED))(f) if FUZZ_SEED is not None else f


def lua_string(b: bytes) -> str:
    return '"' + "".join(f"\\{c:03d}" for c in b) + '"'


STRINGS = [b"", b"x-a", b"content-length", b":status", b":path", b"200", b"abc", b"\xff\xfe\x00", b"\xc3\xa9",
           b"fuzz", b"k", b"auth", b"nope", b"envoy.string", b"sha256", b"127.0.0.1", b"MILLISECOND", b"1",
           b"-1", b"0x10", b"ms", b"bytes", b"a" * 300]
NUMBERS = ["0", "1", "-1", "1.5", "-0.5", "1e308", "-1e308", "(0/0)", "math.huge", "-math.huge", "2^63", "-2^63",
           "2^53", "2^31", "-2^31", "4294967296", "3", "200", "599", "600"]
TABLES = ["{}", "{1, 2, 3}", '{["x-a"] = "1"}', '{[":status"] = "200"}', '{[":status"] = 200}',
          '{[":status"] = "abc"}', '{[":path"] = "/x", [":method"] = "GET", [":authority"] = "h"}',
          '{[":path"] = "/x", [":method"] = "GET", [":authority"] = "h", ["x-l"] = {"a", "b"}}',
          "{[1] = true}", "{[true] = 1}", '{x = {y = {z = 1}}}', "{n = 0/0}", "{f = function() end}",
          "DEEP(150)", "DEEP(3)", '{asynchronous = true}', '{timeout_ms = 0/0}', '{timeout_ms = math.huge}',
          '{timeout_ms = "x"}', '{[2] = 1, [4] = 2}', '{["x-a"] = {}}', '{["x-a"] = {{}}}', "{h}"]
OTHER = ["nil", "true", "false", "function() end", "error", "h", "SAVED[1]", "SAVED[#SAVED]", "h:headers()",
         'string.rep("a", 1000000)', 'string.rep("\\0\\255", 5000)', "coroutine.create(function() end)"]


def _arg():
    return st.one_of(st.sampled_from(STRINGS).map(lua_string), st.binary(max_size=24).map(lua_string),
                     st.sampled_from(NUMBERS), st.sampled_from(TABLES), st.sampled_from(OTHER))


RECEIVERS = ["h", "h:headers()", "h:body()", "h:body(true)", "h:trailers()", "h:metadata()", "h:filterContext()",
             "h:streamInfo()", "h:streamInfo():dynamicMetadata()", "h:streamInfo():filterState()",
             "h:connection()", "h:connection():ssl()", "h:requestHeaders()", "h:stats()",
             'h:stats():counter("c")', 'h:stats():gauge("g")', 'h:stats():histogram("hi")', "h:route()",
             "h:virtualHost()", "h:connectionStreamInfo()", "h:route():metadata()",
             "SAVED[1]", "SAVED[#SAVED]", "LAST"]
METHODS = ["add", "get", "getAtIndex", "getNumValues", "remove", "replace", "setHttp1ReasonPhrase", "length",
           "getBytes", "setBytes", "headers", "body", "bodyChunks", "trailers", "metadata", "filterContext",
           "streamInfo", "connection", "logTrace", "logDebug", "logInfo", "logWarn", "logErr", "logCritical",
           "respond", "httpCall", "base64Escape", "base64Decode", "timestamp", "timestampString",
           "importPublicKey", "verifySignature", "requestHeaders", "virtualHost", "route", "connectionStreamInfo",
           "stats", "clearRouteCache", "setUpstreamOverrideHost", "protocol", "downstreamLocalAddress",
           "downstreamRemoteAddress", "requestedServerName", "routeName", "dynamicMetadata", "set",
           "filterState", "drainConnectionUponCompletion", "dynamicTypedMetadata", "downstreamSslConnection",
           "ssl", "counter", "gauge", "histogram", "inc", "dec", "sub", "value", "recordValue",
           "parsedSubjectPeerCertificate", "uriSanPeerCertificate", "__index", "__pairs", "nosuchmethod"]


# Real calls, each with the kinds of its arguments: half the calls are these, with arguments of the
# right kind (each may still be replaced by any value), so the checks past the first one are reached.
CALLOUT_HEADERS = '{[":path"] = "/x", [":method"] = "GET", [":authority"] = "h"}'
KIND = {
    "str": lambda: st.one_of(st.sampled_from(STRINGS).map(lua_string), st.binary(max_size=16).map(lua_string)),
    "num": lambda: st.one_of(st.sampled_from(NUMBERS), st.sampled_from(["(0/0)", "math.huge", "-math.huge", "2^63"])),
    "bool": lambda: st.sampled_from(["true", "false"]),
    "cluster": lambda: st.sampled_from(['"auth"', '"auth"', '"nope"']),
    "headers": lambda: st.sampled_from([CALLOUT_HEADERS, CALLOUT_HEADERS[:-1] + ', ["x-l"] = {"a", 1}}',
                                        '{[":status"] = "200"}', '{[":status"] = "403", ["x-a"] = "1"}'] + TABLES),
    "timeout": lambda: st.one_of(st.sampled_from(NUMBERS), st.sampled_from(["(0/0)", "math.huge", "2^31"]),
                                 st.sampled_from(
        ["{asynchronous = true}", "{timeout_ms = 0/0}", "{timeout_ms = math.huge}", "{timeout_ms = -math.huge}",
         "{timeout_ms = 2^63}", "{timeout_ms = 10, send_xff = false, return_duplicate_headers = true}"])),
    "any": lambda: _arg(),
}
CALLS = [("h", "httpCall", ["cluster", "headers", "str", "timeout", "bool"]), ("h", "respond", ["headers", "str"]),
         ("h:headers()", "add", ["str", "str"]), ("h:headers()", "replace", ["str", "str"]),
         ("h:headers()", "get", ["str"]), ("h:headers()", "remove", ["str"]),
         ("h:headers()", "getAtIndex", ["str", "num"]),
         ("h:headers()", "getNumValues", ["str"]), ("h:headers()", "setHttp1ReasonPhrase", ["str"]),
         ("h:body(true)", "getBytes", ["num", "num"]), ("h:body(true)", "setBytes", ["str"]),
         ("h:streamInfo():dynamicMetadata()", "set", ["str", "str", "any"]),
         ("h:streamInfo():dynamicMetadata()", "get", ["str"]),
         ("h:streamInfo():filterState()", "set", ["str", "str", "str"]),
         ("h:streamInfo():filterState()", "get", ["str"]),
         ("h", "logInfo", ["str"]), ("h", "logErr", ["any"]), ("h", "base64Escape", ["str"]),
         ("h", "base64Decode", ["str"]), ("h", "timestamp", ["num"]), ("h", "timestampString", ["num"]),
         ("h", "importPublicKey", ["str", "num"]), ("h", "verifySignature", ["str", "str", "str", "num", "str", "num"]),
         ("h", "setUpstreamOverrideHost", ["str", "bool"]), ("h:stats()", "counter", ["str"]),
         ("h:stats()", "histogram", ["str", "str"]), ('h:stats():gauge("g")', "set", ["num"]),
         ('h:stats():gauge("g")', "sub", ["num"]), ('h:stats():counter("c")', "add", ["num"]),
         ('h:stats():histogram("hi")', "recordValue", ["num"]), ("h", "body", ["bool"]),
         ("h:requestHeaders()", "add", ["str", "str"]), ("h:metadata()", "get", ["str"])]


@st.composite
def real_call(draw) -> str:
    # httpCall and respond take the most arguments, checked one after another: drawn more often.
    recv, method, kinds = draw(st.one_of(st.sampled_from(CALLS), st.sampled_from(CALLS[:2])))
    n = draw(st.one_of(st.just(len(kinds)), st.integers(0, len(kinds))))   # trailing ones may be left out
    args = [draw(st.one_of(*[KIND[k]()] * 8, _arg())) for k in kinds[:n]]
    return f"LAST = {recv}:{method}({', '.join(args)})"


LUA_KEYWORDS = set("and break do else elseif end false for function goto if in local nil not or repeat return then "
                   "true until while".split())


@st.composite
def statement(draw) -> str:
    form = draw(st.integers(0, 12))
    recv = draw(st.sampled_from(RECEIVERS))
    if form >= 10:
        code = draw(real_call())
    elif form <= 5:
        made_up = st.from_regex(r"[a-z][A-Za-z]{0,8}", fullmatch=True).filter(lambda m: m not in LUA_KEYWORDS)
        method = draw(st.one_of(st.sampled_from(METHODS), st.sampled_from(METHODS), made_up))
        args = ", ".join(draw(st.lists(_arg(), max_size=6)))
        sep = ":" if draw(st.integers(0, 5)) else "."    # h.headers() instead of h:headers()
        code = f"LAST = {recv}{sep}{method}({args})"
    elif form == 6:
        code = f"for k, v in pairs({recv}) do LAST = v end"
    elif form == 7:
        code = f"for c in h:bodyChunks() do LAST = c; c:setBytes({draw(_arg())}) end"
    elif form == 8:
        code = f"SAVED[#SAVED + 1] = {recv}"
    else:
        code = draw(st.sampled_from(["coroutine.yield()", "error({})", "error(nil)", "error(1.5)",
                                     'h:respond({[":status"] = "403"}, "no")', "do return end"]))
    if draw(st.booleans()):
        code = f"pcall(function() {code} end)"
    return code


SCRIPT = """
SAVED = SAVED or {{}}
local function DEEP(n) local t = {{}} local c = t for i = 1, n do c.x = {{}} c = c.x end return t end
function envoy_on_request(h)
  if h:headers():get("x-fuzz") == nil then
    h:headers():add("x-known", "1")
    h:logInfo("known " .. tostring((h:streamInfo():dynamicMetadata():get("fuzz"))) .. " "
              .. tostring((h:streamInfo():filterState():get("k"))) .. " " .. tostring((h:headers():get("x-a"))))
    return
  end
{request}
end
function envoy_on_response(h)
  if h:requestHeaders():get("x-fuzz") == nil then
    h:headers():add("x-known-response", "1")
    return
  end
{response}
end
"""


@st.composite
def script(draw) -> str:
    request = "\n".join("  " + s for s in draw(st.lists(statement(), max_size=10)))
    response = "\n".join("  " + s for s in draw(st.lists(statement(), max_size=6)))
    return SCRIPT.format(request=request, response=response)


# -- recording what the runtime calls in Python ----------------------------------------------------
class Recorder:
    def __init__(self):
        self.errors: list[tuple[str, BaseException]] = []


RECORDED = [(lua_host.Callouts, "http_call"), (lua_host.Callouts, "b64encode"), (lua_host.Callouts, "b64decode"),
            (lua_host.Callouts, "import_public_key"), (lua_host.Callouts, "verify_signature"),
            (lua_host.Callouts, "is_ip_authority"), (lua_host.StatsStore, "op"),
            (lua_emulator.LuaStreamFilter, "stream_facts"), (lua_emulator.LuaStreamFilter, "request_headers")]


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        for cls, name in RECORDED:
            real = cls.__dict__[name]
            is_static = isinstance(real, staticmethod)
            fn = real.__func__ if is_static else real

            def wrapped(*args, _fn=fn, _name=f"{cls.__name__}.{name}"):
                try:
                    return _fn(*args)
                except BaseException as e:
                    rec.errors.append((_name, e))
                    raise
            functools.update_wrapper(wrapped, fn)
            mp.setattr(cls, name, staticmethod(wrapped) if is_static else wrapped)
        yield rec


CLUSTERS = {"auth": {"status": 200, "headers": {"x-auth": "ok"}, "body": "fine"}}


UPSTREAM = {"status": 200, "headers": {"x-up": "1"}, "body": "up"}
PER_REQUEST = {"date", "x-request-id"}


def known(f: LuaFilter):
    """A request the script's known-good branch handles (everything per-request left out)."""
    r = f.request("GET", "/known", headers={"x-a": "mine"})
    return (r.status, [h for h in r.headers if h[0] not in PER_REQUEST], r.body,
            [(u.method, u.path, [h for h in u.headers if h[0] not in PER_REQUEST]) for u in r.upstream],
            [(line.level, line.message) for line in r.logs])


def fuzz_request(f: LuaFilter, body: bytes) -> None:
    r = f.request("POST", "/fuzz", headers={"x-fuzz": "1", "x-a": "fuzzed"}, body=body,
                  trailers={"x-t": "1"} if body == b"trailers" else None)
    assert 200 <= r.status <= 599


@fuzz_settings
@given(code=script(), bodies=st.lists(st.sampled_from([b"", b"hello", b"\xff\x00", b"trailers"]),
                                      min_size=1, max_size=3))
def test_random_api_use_never_breaks_the_host(recorder, code, bodies):
    recorder.errors.clear()
    with LuaFilter(code=code, clusters=CLUSTERS, upstream=UPSTREAM) as f:
        baseline = known(f)
        assert baseline[-1] == [("info", "known nil nil mine")]
        for body in bodies:   # several streams: objects SAVED by one are used by the next
            fuzz_request(f, body)
            assert not recorder.errors, recorder.errors
            assert known(f) == baseline     # (b) and (c): nothing leaked into the next stream


def lua_number(x: float) -> str:
    if x != x:
        return "(0/0)"
    if x in (float("inf"), float("-inf")):
        return "math.huge" if x > 0 else "-math.huge"
    return f"({x!r})"


GOOD = {"str": '"x-a"', "cluster": '"auth"', "headers": CALLOUT_HEADERS, "bool": "false", "any": '"v"'}
NUMERIC_CALLS = [c for c in CALLS if {"num", "timeout"} & set(c[2])]


@fuzz_settings
@given(number=st.one_of(st.floats(), st.sampled_from([float("nan"), float("inf"), -float("inf"), 2.0**63,
                                                      2.0**31, -1.0, 0.5]),
                        st.integers(-2**70, 2**70).map(float)))
def test_any_number_in_a_numeric_argument_never_breaks_the_host(recorder, number):
    """A focused case of (a): every API call taking a number (httpCall's timeout, getBytes,
    getAtIndex, importPublicKey's length, the stats' amounts, ...) gets the same number - NaN,
    infinities, huge, negative, fractional - with well-formed other arguments."""
    recorder.errors.clear()
    calls = []
    for recv, method, kinds in NUMERIC_CALLS:
        args = ", ".join(lua_number(number) if k in ("num", "timeout") else GOOD[k] for k in kinds)
        calls.append(f"  pcall(function() LAST = {recv}:{method}({args}) end)")
    code = SCRIPT.format(request="\n".join(calls), response="\n".join(calls))
    with LuaFilter(code=code, clusters=CLUSTERS, upstream=UPSTREAM) as f:
        baseline = known(f)
        fuzz_request(f, b"hello")
        assert not recorder.errors, recorder.errors
        assert known(f) == baseline
