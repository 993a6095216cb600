"""The C SDK's dispatch and wrappers, driven one callback at a time on wasmtime (see MiniHost)."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest

from tests.build.sdk_minihost import MiniHost, parse_pairs, serialize_pairs

ROOT = 1
CONFIG = b'{"tick_ms": 250}'


@pytest.fixture
def host(minihost) -> MiniHost:
    h = minihost()
    assert h.start_root(ROOT, CONFIG)
    return h


# -- lifecycle and dispatch ------------------------------------------------------------------

def test_configure_reads_config_and_logs_printf_style(host):
    assert (2, f"configured root {ROOT} with {len(CONFIG)} bytes") in host.logs
    assert host.tick_period == 250


def test_configure_rejection_reaches_the_host(minihost):
    h = minihost()
    assert not h.start_root(5, b'{"reject": true}')
    assert not h.start_root(6, b"{not json")


def test_empty_configuration_is_passed_as_empty_string(minihost):
    h = minihost()
    assert not h.start_root(7, b"")  # the probe requires JSON: "" does not parse


def test_streams_get_their_own_context_and_root(host):
    assert host.request(2, ROOT, [(b":path", b"/a")]) == 0
    hd = host.headers(2)
    assert (hd["x-ctx"], hd["x-root"], hd["x-data"]) == ("2", str(ROOT), "stream-2")
    host.finish(2)
    assert (2, "log stream-2") in host.logs


def test_context_table_survives_interleaved_create_and_delete(host):
    """Thousands of streams, deleted in random order: every callback still finds its own
    context (exercises the hash table's growth and backward-shift deletion), and the heap
    does not grow without bound (contexts and their data are freed)."""
    rng = random.Random(7)
    live: list[int] = []
    pages_before = None
    next_id = 100
    for round_ in range(6):
        for _ in range(800):
            cid = next_id = next_id + rng.choice((1, 2, 17, 1024))
            host.request(cid, ROOT, [(b":path", b"/")])
            live.append(cid)
        rng.shuffle(live)
        for cid in live[: len(live) * 3 // 4]:
            assert host.headers(cid)["x-ctx"] == str(cid)
            host.finish(cid)
        live = live[len(live) * 3 // 4:]
        for cid in live:  # survivors still resolve after the deletions moved slots around
            host.on("request_headers", cid, 1, 1)
            assert host.headers(cid)["x-data"] == f"stream-{cid}"
        if round_ == 1:
            pages_before = host.memory.size(host.store)
    assert host.memory.size(host.store) <= pages_before + 2


def test_unknown_stream_continues(host):
    assert host.on("request_headers", 999, 0, 1) == 0
    assert host.on("done", 999) == 1
    host.on("delete", 999)  # no crash, no hook


def test_tick_goes_to_the_root(host):
    for _ in range(3):
        host.on("tick", ROOT)
    (counter,) = [m for m in host.metrics.values() if m[1] == b"probe_ticks"]
    assert counter[2] == 3


# -- header maps and the pairs serialization ------------------------------------------------

def test_get_and_set_all_pairs(host):
    hs = [(b":path", b"/p"), (b"x-probe", b"pairs"), (b"x-empty", b""), (b"x-multi", b"1"), (b"x-multi", b"2")]
    host.request(3, ROOT, hs)
    got = host.maps[(3, 0)]
    # x-ctx, x-root and x-data were added (replace) before the probe read the map.
    assert got[-1] == (b"x-pairs-count", b"8/5")
    assert got[:-1] == list(reversed(hs + [(b"x-ctx", b"3"), (b"x-root", b"1"), (b"x-data", b"stream-3")]))


def test_remove_add_and_size(host):
    host.request(4, ROOT, [(b"x-probe", b"remove"), (b"x-remove-me", b"bye")])
    m = host.maps[(4, 0)]
    assert (b"x-remove-me", b"bye") not in m
    assert [v for k, v in m if k == b"x-added"] == [b"1", b"2"]
    assert host.headers(4)["x-removed"] == "yes"
    assert int(host.headers(4)["x-map-bytes"]) > 0


def test_local_response_serializes_headers_and_counted_strings(host):
    assert host.request(5, ROOT, [(b"x-probe", b"deny")]) == 1
    (resp,) = host.local_responses
    assert resp["code"] == 401
    assert resp["details"] == b"probe denied"
    assert resp["body"] == b"no\0way"
    assert resp["headers"] == [(b"x-denied", b"yes"), (b"x-counted", b"abc")]
    assert resp["grpc"] == 0xFFFFFFFF  # PW_GRPC_STATUS_NONE: -1, "no grpc-status" in Envoy


@pytest.mark.parametrize("pairs", [
    [],
    [(b"a", b"1")],
    [(b"a", b"1"), (b"b", b"22")],
    [(b"", b"")],
    [(b":authority", b"example.com"), (b"x-long", b"v" * 5000)],
])
def test_pairs_codec_roundtrips_the_spec_encoding(probe_wasm, pairs):
    h = MiniHost(probe_wasm)
    data = serialize_pairs(pairs)
    out = h.alloc(b"\0" * 8)
    n = h.call("t_pairs_roundtrip", h.alloc(data) if data else 0, len(data), out, out + 4)
    assert n == len(pairs)
    ptr, size = struct.unpack("<II", h.read(out, 8))
    again = h.read(ptr, size)
    assert parse_pairs(again) == pairs
    if pairs:
        assert again == data


def test_spec_example_serialization(probe_wasm):
    # spec, "Serialization": {"a": "1"}, {"b": "22"}
    spec = bytes([2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]) + b"a\x001\x00b\x0022\x00"
    h = MiniHost(probe_wasm)
    out = h.alloc(b"\0" * 8)
    assert h.call("t_pairs_roundtrip", h.alloc(spec), len(spec), out, out + 4) == 2
    ptr, size = struct.unpack("<II", h.read(out, 8))
    assert h.read(ptr, size) == spec


@pytest.mark.parametrize("bad", [
    b"\x01\x00\x00",                                   # short count
    struct.pack("<I", 1),                              # count without sizes
    struct.pack("<III", 1, 1, 1) + b"a\x001",          # missing final NUL
    struct.pack("<III", 1, 1, 1) + b"ab1\x00",         # key not NUL-terminated
    struct.pack("<III", 1, 0xFFFFFFFF, 0) + b"\0\0",   # size that would wrap on wasm32
    struct.pack("<III", 1, 1, 1) + b"a\x001\x00x",     # trailing garbage
    struct.pack("<I", 0x10000000) + b"\0" * 16,        # count beyond the buffer
])
def test_pairs_parser_rejects_malformed_input(probe_wasm, bad):
    h = MiniHost(probe_wasm)
    out = h.alloc(b"\0" * 8)
    assert h.call("t_pairs_roundtrip", h.alloc(bad), len(bad), out, out + 4) == -1


def test_both_empty_map_encodings_parse(probe_wasm):
    h = MiniHost(probe_wasm)
    out = h.alloc(b"\0" * 8)
    assert h.call("t_pairs_roundtrip", 0, 0, out, out + 4) == 0
    assert h.call("t_pairs_roundtrip", h.alloc(b"\0"), 1, out, out + 4) == 0


# -- bodies -----------------------------------------------------------------------------------

def test_body_read_replace_append(host):
    host.request(6, ROOT, [(b":path", b"/b")], eos=False)
    host.buffers[(6, 0)] = b"hello "
    assert host.on("request_body", 6, 6, 0) == 1  # PAUSE until complete
    host.buffers[(6, 0)] = b"hello world"
    assert host.on("request_body", 6, 11, 1) == 0
    assert host.buffers[(6, 0)] == b"HELLO WORLD!"
    assert (1, "11") in host.logs


# -- outgoing HTTP call: the response is routed back to the calling stream --------------------

def test_http_call_response_reaches_the_calling_stream(host):
    assert host.request(7, ROOT, [(b"x-probe", b"call")]) == 1
    (call,) = host.http_calls
    assert call["upstream"] == b"authz_cluster"
    assert call["headers"] == [(b":method", b"POST"), (b":path", b"/check"), (b":authority", b"authz"),
                               (b"x-empty", b"")]
    assert call["body"] == b"payload" and call["trailers"] == [(b"x-trailer", b"t")]
    assert call["timeout"] == 1500
    # The host answers on the plugin context (cpp-host issues calls from the root context).
    host.current = ROOT
    host.maps[(ROOT, 6)] = [(b":status", b"200"), (b"x-a", b"b")]
    host.buffers[(ROOT, 4)] = b"allowed"
    host.on("http_call_response", ROOT, call["token"], 2, 7, 0)
    assert host.effective_sets == [7]
    hd = host.headers(7)
    assert (hd["x-call-status"], hd["x-call-body"], hd["x-call-headers"]) == ("200", "allowed", "2")
    assert host.continued == [(7, 0)]


def test_http_call_response_after_the_stream_is_gone(host):
    host.request(8, ROOT, [(b"x-probe", b"call")])
    token = host.http_calls[0]["token"]
    host.finish(8)
    host.on("http_call_response", ROOT, token, 0, 0, 0)
    assert host.effective_sets == []
    assert (3, f"orphan response {token} for root {ROOT}") in host.logs


# -- properties and shared data ----------------------------------------------------------------

def test_properties_are_nul_joined_paths(host):
    host.properties[b"request\0path"] = b"/from/property"
    host.properties[b"response\0code"] = struct.pack("<q", 503)
    host.request(9, ROOT, [(b"x-probe", b"property")])
    hd = host.headers(9)
    assert hd["x-prop-path"] == "/from/property"
    assert hd["x-prop-code"] == "OK:503"
    assert hd["x-prop-missing"] == "null"


def test_shared_data_with_cas(host):
    host.request(10, ROOT, [(b"x-probe", b"shared")])
    hd = host.headers(10)
    assert hd["x-shared-first"] == "NOT_FOUND"
    assert hd["x-shared-value"] == "v1"
    assert hd["x-shared-stale-cas"] == "CAS_MISMATCH"
    assert hd["x-shared-cas"] == "OK"
    assert host.shared[b"k"][0] == b"v3"


# -- host memory discipline --------------------------------------------------------------------

def test_host_allocations_are_nul_terminated(probe_wasm):
    """The module's malloc export reserves a zeroed byte past what the host asked for."""
    h = MiniHost(probe_wasm)
    for n in (0, 1, 7, 64, 4096):
        p = h.call("malloc", n)
        h.write(p, b"\xff" * n)
        assert h.read(p + n, 1) == b"\0"
        p2 = h.call("proxy_on_memory_allocate", n)
        assert p2 and p2 != p


# -- JSON reader, checked against Python's json -------------------------------------------------

VALID = [
    '{}', '[]', '0', '-0', '1.5e3', '-12.25E-2', '"x"', 'true', 'false', 'null', ' \n\t{ } ',
    '{"a": [1, 2, {"b": null}], "c": "d"}', '[[[[[[]]]]]]', '"\\u00e9\\ud83d\\ude00\\n\\"\\\\\\/"',
    '{"": 1}', '{"a":1,"a":2}', '[1e400]',
]
INVALID = [
    '', ' ', '{', '}', '[1,]', '{"a":1,}', '{a:1}', "{'a':1}", '01', '1.', '.5', '+1', '1e', '--1',
    '"\\x"', '"\\u12"', '"a\nb"', 'tru', 'nul', '[1 2]', '{"a" 1}', '{"a":}', '1 2', 'NaN',
    'Infinity', '"unterminated', '[' * 65 + ']' * 65,
]


def _doc(h, text: str):
    data = text.encode()
    return h.alloc(data + b"\0"), len(data)


@pytest.fixture(scope="module")
def jhost(probe_wasm):
    return MiniHost(probe_wasm)


@pytest.mark.parametrize("text", VALID)
def test_json_accepts_what_rfc8259_accepts(jhost, text):
    json.loads(text)
    assert jhost.call("t_json_valid", *_doc(jhost, text)) == 1


@pytest.mark.parametrize("text", INVALID)
def test_json_rejects_what_rfc8259_rejects(jhost, text):
    assert jhost.call("t_json_valid", *_doc(jhost, text)) == 0


def test_json_nesting_limit(jhost):
    assert jhost.call("t_json_valid", *_doc(jhost, "[" * 64 + "]" * 64)) == 1
    assert jhost.call("t_json_valid", *_doc(jhost, "[" * 65 + "]" * 65)) == 0


CONFIG_DOC = json.dumps({
    "name": "gw", "esc": "tab\there \"q\" \\ / é 😀 \u0001", "n": 42, "neg": -7, "big": 9223372036854775807,
    "small": -9223372036854775808, "over": 9223372036854775808, "f": 2.5, "e": 1e-3, "t": True, "no": False,
    "nil": None, "list": [10, "x", {"deep": ["y", {"z": "found"}]}], "obj": {"k1": 1, "k\"2": 2, "k.3": 3},
    "dup": 1,
}, ensure_ascii=False)
TYPES = {"nil": 1, "t": 2, "n": 3, "name": 4, "list": 5, "obj": 6}


@pytest.mark.parametrize("path,expected", [
    ("name", "gw"), ("esc", "tab\there \"q\" \\ / é 😀 \u0001"), ("list.1", "x"),
    ("list.2.deep.1.z", "found"), ("n", None), ("missing", None), ("list.9", None), ("list.x", None),
    ("name.sub", None), ("obj.k1", None),
])
def test_json_strings_by_path(jhost, path, expected):
    h = jhost
    text_ptr, n = _doc(h, CONFIG_DOC)
    out = h.alloc(b"\0" * 4)
    ptr = h.call("t_json_string", text_ptr, n, h.guest_str(path.encode()), out)
    if expected is None:
        assert ptr == 0
    else:
        want = expected.encode()
        assert h.cstr(ptr) == want
        assert struct.unpack("<I", h.read(out, 4))[0] == len(want)


def test_json_escapes_via_ascii_only_encoding(jhost):
    """The same values written with \\u escapes (incl. a surrogate pair) decode identically."""
    doc = json.dumps({"esc": "é 😀 \u0001 \u2028"}, ensure_ascii=True)
    assert "\\ud83d\\ude00" in doc
    text_ptr, n = _doc(jhost, doc)
    ptr = jhost.call("t_json_string", text_ptr, n, jhost.guest_str(b"esc"), jhost.alloc(b"\0" * 4))
    assert jhost.cstr(ptr).decode() == "é 😀 \u0001 \u2028"
    lone = '{"s": "a\\ud800b"}'
    text_ptr, n = _doc(jhost, lone)
    ptr = jhost.call("t_json_string", text_ptr, n, jhost.guest_str(b"s"), jhost.alloc(b"\0" * 4))
    assert jhost.cstr(ptr).decode() == "a\ufffdb"


@pytest.mark.parametrize("path,expected", [
    ("n", 42), ("neg", -7), ("big", 2**63 - 1), ("small", -2**63), ("over", None), ("f", None),
    ("e", None), ("name", None), ("list.0", 10),
])
def test_json_ints(jhost, path, expected):
    text_ptr, n = _doc(jhost, CONFIG_DOC)
    out = jhost.alloc(b"\0" * 8)
    ok = jhost.call("t_json_int", text_ptr, n, jhost.guest_str(path.encode()), out)
    if expected is None:
        assert ok == 0
    else:
        assert ok == 1 and struct.unpack("<q", jhost.read(out, 8))[0] == expected


@pytest.mark.parametrize("path,expected", [("f", 2.5), ("e", 1e-3), ("n", 42.0), ("over", 2.0**63), ("name", None)])
def test_json_numbers(jhost, path, expected):
    text_ptr, n = _doc(jhost, CONFIG_DOC)
    out = jhost.alloc(b"\0" * 8)
    ok = jhost.call("t_json_number", text_ptr, n, jhost.guest_str(path.encode()), out)
    if expected is None:
        assert ok == 0
    else:
        assert ok == 1 and math.isclose(struct.unpack("<d", jhost.read(out, 8))[0], expected)


def test_json_bools_types_counts_keys(jhost):
    text_ptr, n = _doc(jhost, CONFIG_DOC)
    p = lambda s: jhost.guest_str(s.encode())  # noqa: E731
    assert jhost.call("t_json_bool", text_ptr, n, p("t")) == 1
    assert jhost.call("t_json_bool", text_ptr, n, p("no")) == 0
    assert jhost.call("t_json_bool", text_ptr, n, p("nil")) == -1
    for path, t in TYPES.items():
        assert jhost.call("t_json_type", text_ptr, n, p(path)) == t
    assert jhost.call("t_json_type", text_ptr, n, p("")) == 6  # "" is the root
    assert jhost.call("t_json_count", text_ptr, n, p("list")) == 3
    assert jhost.call("t_json_count", text_ptr, n, p("obj")) == 3
    assert jhost.call("t_json_count", text_ptr, n, p("name")) == 0
    out = jhost.alloc(b"\0" * 4)
    ptr = jhost.call("t_json_keys", text_ptr, n, p("obj"), out)
    keys = jhost.read(ptr, struct.unpack("<I", jhost.read(out, 4))[0]).split(b"\0")[:-1]
    assert keys == [b"k1", b'k"2', b"k.3"]
    esc = jhost.guest_str(json.loads(CONFIG_DOC)["esc"].encode())
    assert jhost.call("t_json_streq", text_ptr, n, p("esc"), esc) == 1
    assert jhost.call("t_json_streq", text_ptr, n, p("name"), p("gW")) == 0


def test_json_first_duplicate_key_wins(jhost):
    text_ptr, n = _doc(jhost, '{"a": 1, "a": 2}')
    out = jhost.alloc(b"\0" * 8)
    assert jhost.call("t_json_int", text_ptr, n, jhost.guest_str(b"a"), out) == 1
    assert struct.unpack("<q", jhost.read(out, 8))[0] == 1


def test_json_random_documents_agree_with_python(jhost):
    rng = random.Random(11)

    def value(depth):
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return rng.randint(-10**6, 10**6)
        if kind == 1:
            return "".join(rng.choice("ab\"\\/\n\té😀 .") for _ in range(rng.randrange(6)))
        if kind == 2:
            return rng.choice([True, False, None])
        if kind == 3:
            return rng.uniform(-1e6, 1e6)
        if kind in (4, 5):
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(4))}

    def paths(v, prefix=""):
        yield prefix, v
        if isinstance(v, dict):
            for k, x in v.items():
                yield from paths(x, f"{prefix}.{k}" if prefix else k)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                yield from paths(x, f"{prefix}.{i}" if prefix else str(i))

    for _ in range(40):
        doc = {"root": value(0)}
        text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
        text_ptr, n = _doc(jhost, text)
        assert jhost.call("t_json_valid", text_ptr, n) == 1
        for path, v in paths(doc):
            pp = jhost.guest_str(path.encode())
            if isinstance(v, str):
                ptr = jhost.call("t_json_string", text_ptr, n, pp, jhost.alloc(b"\0" * 4))
                assert jhost.cstr(ptr) == v.encode()
            elif isinstance(v, bool):
                assert jhost.call("t_json_bool", text_ptr, n, pp) == int(v)
            elif isinstance(v, int):
                out = jhost.alloc(b"\0" * 8)
                assert jhost.call("t_json_int", text_ptr, n, pp, out) == 1
                assert struct.unpack("<q", jhost.read(out, 8))[0] == v
            elif isinstance(v, float):
                out = jhost.alloc(b"\0" * 8)
                assert jhost.call("t_json_number", text_ptr, n, pp, out) == 1
                assert struct.unpack("<d", jhost.read(out, 8))[0] == v  # strtod is exact
            elif isinstance(v, (list, dict)):
                assert jhost.call("t_json_count", text_ptr, n, pp) == len(v)
