"""Property-based hardening of the Wasm host (issue 14, item 3): a fuzzing guest (fuzz_guest.py)
calls every host function the emulator registers, with arguments hypothesis chooses, from the
callbacks of real streams (request and response paths, the access-log phase, on_done/on_delete)
and of the root context (on_tick, on_http_call_response, on_queue_ready).

Properties, for any sequence of calls:
  (a) no host call raises a Python exception (the trampoline would turn one into a trap and the
      emulator re-raises it: that is a host bug) and none traps: a bad pointer or size is
      WasmResult::InvalidMemoryAccess (WASI: EFAULT), a bad argument BadArgument, as cpp-host's
      exports.cc answers; every env.proxy_* call answers a WasmResult;
  (b) another stream's headers and properties, and another vm_id's shared data, are untouched;
  (c) afterwards a fresh stream on the same VM behaves as on a fresh VM.

Examples: FUZZ_EXAMPLES (default 120 per test; `FUZZ_EXAMPLES=5000` for a long local run). The runs
are derandomized (hypothesis's fixed seed per test) and keep no example database: CI and every
developer run exactly the same examples (no flaky red from a lucky draw, no .hypothesis/ directory
written into the work tree), and a failure reproduces by running the test again; a long local run
with FUZZ_SEED=<n> explores other examples (a failure there is printed with its shrunk example, to be
pinned as a regular test, as test_fuzz_regressions.py does).
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from envoyext.wasm import emulator as wasm_emulator
from envoyext.wasm import headers as H
from envoyext.wasm.abi import Errno, WasmResult, serialize_pairs
from envoyext.wasm.api import WasmPlugin
from envoyext.wasm.host import GuestAbort, HostFunction
from envoyext.wasm.shared import SharedState
from tests.wasm import fuzz_guest as G

# About 60-90 ms an example (two plugins' VMs, a few streams): 120 per test take about 25 s in all.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
FUZZ_SEED = os.environ.get("FUZZ_SEED")


def fuzz_settings(f):
    f = settings(max_examples=EXAMPLES, deadline=None, derandomize=FUZZ_SEED is None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(f)
    return seed(int(FUZZ_SEED))(f) if FUZZ_SEED is not None else f


IMPORTS = G.registered_imports()
INDEX = {imp.key: k for k, imp in enumerate(IMPORTS)}
WASMRESULTS = {int(r) for r in WasmResult}
ERRNOS = {int(e) for e in Errno}

# -- what the scratch area holds: the vocabulary of the ABI and garbage --------------------------
PATHS = [b"request\0headers\0x-a", b"request\0size", b"request\0total_size", b"request\0path", b"request\0time",
         b"request\0headers", b"request", b"response\0code", b"response\0headers", b"response\0size",
         b"response\0trailers", b"response\0code_details", b"response\0total_size", b"source\0port",
         b"source\0address", b"destination\0port", b"upstream\0port", b"connection\0mtls", b"connection_id",
         b"xds\0route_metadata", b"xds\0node", b"xds\0node\0id", b"xds\0cluster_name", b"xds\0route_name",
         b"plugin_name", b"plugin_vm_id", b"node", b"\0", b"", b"a\0\0b", b"wasm.k", b"k", b"request\0\0"]
HEADER_NAMES = [b"x-a", b"content-length", b":status", b":path", b":method", b":authority", b"user-agent",
                b"x-forwarded-for", b"X-Upper", b"", b"\xff\xfe", b"host", b"content-type"]
VALUES = [b"1", b"abc", b"\xb2", b"99999999999999999999999", b"-5", b"+5", b" 7", b"\xff", b"200", b"\x00x",
          b"a,b", b"999", b"0", b"-1", b"1e3", b"\xd9\xa3"]
CALLOUT_HEADERS = serialize_pairs([(b":path", b"/x"), (b":method", b"GET"), (b":authority", b"h")])
MAPS = [CALLOUT_HEADERS, serialize_pairs([(b":status", b"200")]), serialize_pairs([(b"x-a", b"1"), (b"X-B", b"2")]),
        serialize_pairs([(b"content-length", b"\xb2"), (b":status", b"abc")]),
        struct.pack("<I", 0xFFFFFFFF), struct.pack("<I", 1024) + b"\0" * 16,            # lying counts
        struct.pack("<III", 1, 0xFFFFFFFF, 0) + b"\0\0", struct.pack("<III", 1, 2, 2) + b"ab\0c",   # lying sizes
        CALLOUT_HEADERS[:-1], CALLOUT_HEADERS + b"x", struct.pack("<I", 0), b"\0\0\0"]
NAMES = [b"auth", b"upstream", b"nope", b"q", b"k", b"fuzz", b"other", b"metric", b"", b"x" * 300]


def _extra_item():
    return st.one_of(st.binary(max_size=48),
                     st.lists(st.tuples(st.sampled_from(HEADER_NAMES + VALUES), st.sampled_from(VALUES)),
                              max_size=4).map(serialize_pairs))


# The attributes derived from what a guest can change (headers): asked for more often.
HOT_PATHS = [b"request\0size", b"response\0code", b"request\0headers\0content-length", b"request\0total_size",
             b"response\0headers\0:status", b"request\0path", b"request\0headers"]
# The functions that change what attributes are derived from, and that read them: called more often.
FOCUS = ["env.proxy_replace_header_map_value", "env.proxy_add_header_map_value", "env.proxy_set_header_map_pairs",
         "env.proxy_get_property", "env.proxy_set_property", "env.proxy_get_header_map_value",
         "env.proxy_get_header_map_pairs", "env.proxy_set_buffer_bytes", "env.proxy_get_buffer_bytes"]


VOCABULARY = PATHS + HOT_PATHS + HEADER_NAMES + VALUES + MAPS + NAMES


def _category(function: str, arg: str) -> list[bytes]:
    """The vocabulary a (pointer, size) argument mostly takes, by function and argument name."""
    if function in ("proxy_get_property", "proxy_set_property") and arg in ("path_ptr", "key_ptr"):
        return PATHS + HOT_PATHS * 4
    if "header_map" in function:
        return VALUES if arg == "vp" else MAPS if arg == "ptr" else HEADER_NAMES
    if arg in ("pairs_ptr", "hp", "tp", "mdp"):
        return MAPS
    if arg in ("value_ptr", "body_ptr", "ptr", "rp", "details_ptr"):
        return VALUES
    return NAMES


EDGE_POINTERS = [0, 1, G.MEMORY0 - 1, G.MEMORY0 - 4, G.MEMORY0 - 8, G.MEMORY0, G.MEMORY0 + 1, 0x7FFFFFFF,
                 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 0xFFFFFFF8, G.PROG, G.SCRATCH_END - 2]
EDGE_SIZES = [0, 1, 2, 4, 8, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x10000, 0x100001, G.MALLOC_MAX + 1]
EDGE_INTS = [0, 1, 2, 3, 4, 7, 8, 12, 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE]


def _u32():
    return st.one_of(st.integers(0, 16), st.sampled_from(EDGE_INTS), st.integers(0, 0xFFFFFFFF))


def _kinds(imp: G.Import) -> list[str]:
    """Each argument's kind, from the implementation's parameter names: 'data' + 'len' pairs
    (key_ptr/key_size, hp/hs, ...), 'out' pointers, 'type' enums, 'id's, or 'int'."""
    names, kinds = imp.arg_names, []
    for j, name in enumerate(names):
        nxt = names[j + 1] if j + 1 < len(names) else ""
        if kinds and kinds[-1] == "data":
            kinds.append("len")
        elif (name.endswith(("ptr", "p", "p_", "iovs")) and nxt.endswith(("size", "s", "_len"))
              and not name.endswith("_ptr_ptr")):
            kinds.append("data")
        elif name.endswith("ptr"):
            kinds.append("out")
        elif name in ("t", "level", "metric_type", "clock_id", "fd", "to"):
            kinds.append("type")
        elif name in ("cid", "token", "mid"):
            kinds.append("id")
        elif imp.params[j] == "I":
            kinds.append("i64")
        else:
            kinds.append("int")
    return kinds


KINDS = [_kinds(imp) for imp in IMPORTS]


# The map and buffer types a callback has (what a guest would ask for there), by slot.
NATURAL_TYPES = {"proxy_on_request_headers": (0, 0), "proxy_on_request_body": (0, 0),
                 "proxy_on_request_trailers": (1, 0), "proxy_on_response_headers": (2, 1),
                 "proxy_on_response_body": (2, 1), "proxy_on_response_trailers": (3, 1), "proxy_on_log": (0, 2),
                 "proxy_on_http_call_response": (6, 4), "proxy_on_tick": (6, 6)}


@st.composite
def _call(draw, n_items: int, exclude: frozenset = frozenset(), slot: str = ""):
    names = [imp.key for imp in IMPORTS if imp.key not in exclude]
    # Half the calls go to the proxy-wasm functions proper; WASI is there but not the point.
    key = draw(st.one_of(st.sampled_from([n for n in names if n.startswith("env.")]), st.sampled_from(names),
                         st.sampled_from([n for n in FOCUS if n not in exclude])))
    k = INDEX[key]
    args: list = []
    kinds = KINDS[k]
    j = 0
    while j < len(kinds):
        kind = kinds[j]
        if kind == "data":
            how = draw(st.integers(0, 9))
            if how < 5:   # an item of the argument's vocabulary (pointers resolved once laid out)
                category = _category(IMPORTS[k].name, IMPORTS[k].arg_names[j])
                item = VOCABULARY.index(draw(st.sampled_from(category)))
                args += [("item", item), ("len", draw(st.integers(0, 6)))]
            elif how < 7:   # any item of the scratch area, the test's random ones included
                args += [("item", draw(st.integers(0, n_items - 1))), ("len", how)]
            else:
                args += [draw(st.one_of(st.sampled_from(EDGE_POINTERS), _u32())),
                         draw(st.one_of(st.sampled_from(EDGE_SIZES), _u32()))]
            j += 2
            continue
        if kind == "out":
            args.append(draw(st.one_of(st.integers(G.OUT, G.OUT + 0xF00).map(lambda p: p & ~3),
                                       st.integers(G.OUT, G.OUT + 0xF00),
                                       st.sampled_from(EDGE_POINTERS))))
        elif kind == "type":   # mostly the callback's own maps and buffers
            natural = NATURAL_TYPES.get(slot, (0, 0))[0 if "map" in IMPORTS[k].name else 1]
            args.append(draw(st.one_of(st.just(natural), st.integers(0, 3), st.integers(0, 9),
                                       st.sampled_from(EDGE_INTS))))
        elif kind == "id":
            args.append(draw(st.one_of(st.integers(0, 12), st.sampled_from(EDGE_INTS))))
        elif kind == "i64":
            args.append(draw(st.one_of(st.integers(0, 16), st.sampled_from([2**63, 2**64 - 1, 2**63 - 1, 2**32]),
                                       st.integers(0, 2**64 - 1))))
        else:
            args.append(draw(_u32()))
        j += 1
    return k, args


CALLBACK_SLOTS = [s for s in G.CALLBACKS if s not in ("proxy_on_vm_start", "proxy_on_configure")]


@st.composite
def fuzz_case(draw, exclude: frozenset = frozenset()):
    items = VOCABULARY + draw(st.lists(_extra_item(), max_size=4))
    programs = {}
    busy = ["proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_request_body", "proxy_on_response_body"]
    slots = st.one_of(st.sampled_from(busy), st.sampled_from(CALLBACK_SLOTS))
    for slot in draw(st.lists(slots, min_size=1, max_size=6, unique=True)):
        programs[slot] = draw(st.lists(_call(len(items), exclude, slot), min_size=1, max_size=12))
    request_body = draw(st.sampled_from([b"", b"hello", b"\xff" * 10]))
    # The request's own headers too: what a client sends (any bytes) is what the guest reads.
    request_headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES[:8]).map(H.header_text),
                                              st.one_of(st.sampled_from(VALUES), st.binary(max_size=8))
                                              .map(H.header_text)), max_size=3))
    return items, programs, (request_body, request_headers)


def lay_out(items: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """The scratch area's bytes and each item's (pointer, length)."""
    data, where = b"", []
    for item in items:
        where.append((G.SCRATCH + len(data), len(item)))
        data += item + b"\0"
    assert G.SCRATCH + len(data) <= G.SCRATCH_END
    return data, where


def resolve(args: list, where: list[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    for a in args:
        if isinstance(a, tuple) and a[0] == "item":
            ptr, n = where[a[1]]
            out.append(ptr)
        elif isinstance(a, tuple) and a[0] == "len":
            how = a[1]   # mostly the true length; sometimes one more, or far too many
            out.append(n if how < 5 else n + 1 if how == 5 else n + 0x10000)
        else:
            out.append(a)
    return out


# -- recording what each host function did ------------------------------------------------------
class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, tuple, object]] = []
        self.errors: list[tuple[str, tuple, BaseException]] = []

    def wrap(self, imports: dict) -> dict:
        out = {}
        for (module, name), fn in imports.items():
            out[(module, name)] = HostFunction(fn.params, fn.results, self._recording(f"{module}.{name}", fn.impl))
        return out

    def _recording(self, key: str, impl):
        def f(*args):
            try:
                r = impl(*args)
            except GuestAbort as e:
                self.calls.append((key, args, e))
                raise
            except BaseException as e:
                self.errors.append((key, args, e))
                raise
            self.calls.append((key, args, r))
            return r
        return f


@pytest.fixture(scope="module")
def recorder():
    """One per module (hypothesis runs many examples per test call): each example clears it."""
    rec = Recorder()
    real = wasm_emulator.make_imports
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wasm_emulator, "make_imports", lambda w: rec.wrap(real(w)))
        yield rec


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.wasm"
    path.write_bytes(G.module_bytes())
    return path


def load(guest, shared: SharedState, vm_id: str = "fuzz", **kw) -> WasmPlugin:
    return WasmPlugin.load(guest, {"fuzz": True}, name="fuzz", vm_id=vm_id, shared=shared,
                           clusters={"auth": {"status": 200, "headers": {"x-auth": "ok"}, "body": "fine"}},
                           memory_limit=64 << 20, idle_vms=0, **kw)


def install(p: WasmPlugin, items: list[bytes], programs: dict) -> None:
    """Write the scratch area and every slot's program into the serving VM's memory."""
    vm = p.host.wasm.vm
    data, where = lay_out(items)
    assert vm.set_memory(G.SCRATCH, data)
    for slot, calls in programs.items():
        assert vm.set_memory(G.PROG + G.SLOTS[slot] * G.SLOT,
                             G.program_bytes([(k, resolve(args, where)) for k, args in calls]))


def clear_programs(p: WasmPlugin) -> None:
    vm = p.host.wasm.vm
    for slot in G.SLOTS.values():
        vm.set_word(G.PROG + slot * G.SLOT, 0)


KNOWN = {":path": "/known", ":method": "GET", "x-known": "1"}


def known_good(p: WasmPlugin):
    """A request with no program: through unchanged, the upstream's response back unchanged."""
    ex = p.call(KNOWN, status=201, response_headers={"x-r": "1"}, response_body=b"body")
    return (ex.local_response, list(ex.request_headers), list(ex.response_headers), ex.response_body)


def run_stream(p: WasmPlugin, request: tuple[bytes, list[tuple[str, str]]]) -> None:
    body, extra = request
    headers = [(":path", "/fuzz"), (":method", "POST"), ("x-a", "1")] + [(k.lower(), v) for k, v in extra]
    if not any(k == "content-length" for k, _ in headers):
        headers.append(("content-length", str(len(body))))
    ex = p.request(headers, body, trailers={"x-t": "1"} if body else None)
    if not ex.paused and ex.local_response is None:
        ex.respond(200, {"x-up": "1", "content-length": "4"}, b"resp", trailers={"x-rt": "1"})
    ex.finish()
    p.advance(5)      # ticks (a program may have set a period), callout answers, queue wake-ups


def check_calls(rec: Recorder) -> None:
    assert not rec.errors, f"host functions raised: {rec.errors[:3]}"
    for key, args, r in rec.calls:
        if isinstance(r, GuestAbort):
            raise AssertionError(f"{key}{args} trapped: {r.message}")
        if key.startswith("env.proxy_"):
            assert r in WASMRESULTS, f"{key}{args} answered {r!r}, not a WasmResult"
        elif key.startswith("wasi"):
            assert r in ERRNOS, f"{key}{args} answered {r!r}, not an errno"


# -- the properties -------------------------------------------------------------------------------
@fuzz_settings
@given(case=fuzz_case())
def test_random_host_calls_never_break_the_host(guest, recorder, case):
    """(a) and (c): any calls from any callback; the VM does not fail; a fresh stream is normal."""
    items, programs, body = case
    recorder.calls.clear()
    recorder.errors.clear()
    p = load(guest, SharedState())
    baseline = known_good(p)
    install(p, items, programs)
    run_stream(p, body)
    check_calls(recorder)
    assert not p.failures, p.failures
    clear_programs(p)
    assert known_good(p) == baseline


ISOLATION_EXCLUDE = frozenset({"env.proxy_set_effective_context"})


@fuzz_settings
@given(case=fuzz_case(exclude=ISOLATION_EXCLUDE))
def test_one_stream_never_changes_another(guest, recorder, case):
    """(b): while a fuzzed stream runs, a stream paused between its request and its response on the
    same VM, a stream of a plugin with another vm_id, and that vm_id's shared data stay as they were.
    (proxy_set_effective_context is left out: naming another live context is how the ABI lets a
    guest act on it, in Envoy too.)"""
    items, programs, body = case
    recorder.calls.clear()
    recorder.errors.clear()
    shared = SharedState()
    shared.set("other", b"k", b"theirs", 0)
    p, q = load(guest, shared), load(guest, shared, vm_id="other")
    a = p.request({":path": "/a", "x-a": "mine"})
    b = q.request({":path": "/b", "x-a": "theirs"})
    before = [list(a.request_headers), dict(getattr(a.stream, "filter_state", {})), list(b.request_headers)]
    install(p, items, programs)
    run_stream(p, body)
    check_calls(recorder)
    assert not p.failures, p.failures
    clear_programs(p)
    assert [list(a.request_headers), dict(getattr(a.stream, "filter_state", {})),
            list(b.request_headers)] == before
    assert shared.snapshot("other") == {b"k": b"theirs"}
    for ex in (a, b):
        ex.respond(200, {"x-r": "1"}, b"ok").finish()
        assert ex.local_response is None and ("x-r", "1") in ex.response_headers and ex.response_body == b"ok"


ATTRIBUTE_PATHS = list(dict.fromkeys(HOT_PATHS + PATHS))[:G.MAX_RECORDS - 2]


@fuzz_settings
@given(name=st.sampled_from([b"content-length", b":status", b"x-a", b":path", b"user-agent"]),
       value=st.one_of(st.sampled_from(VALUES), st.binary(max_size=24)), add=st.booleans())
def test_attributes_of_any_header_value_never_break_the_host(guest, recorder, name, value, add):
    """A focused case of (a): a guest sets a header to any bytes (content-length, :status, ...)
    and then reads every attribute (request.size, response.code, ...), in the request and the
    response path: one Envoy cannot parse is absent, never a host error."""
    recorder.calls.clear()
    recorder.errors.clear()
    p = load(guest, SharedState())
    items = [name, value, *ATTRIBUTE_PATHS]
    mutate = INDEX["env.proxy_add_header_map_value" if add else "env.proxy_replace_header_map_value"]
    get = INDEX["env.proxy_get_property"]
    programs = {}
    for slot, t in (("proxy_on_request_headers", 0), ("proxy_on_response_headers", 2)):
        programs[slot] = [(mutate, [t, ("item", 0), ("len", 0), ("item", 1), ("len", 0)])] + [
            (get, [("item", i), ("len", 0), G.OUT, G.OUT + 4]) for i in range(2, len(items))]
    install(p, items, programs)
    run_stream(p, (b"", []))
    check_calls(recorder)
    assert not p.failures, p.failures
