"""Defects the property-based fuzzing (test_fuzz_host.py) found in the Wasm host, each pinned by
the minimal example hypothesis shrank it to, replayed through the fuzzing guest (fuzz_guest.py)."""

from __future__ import annotations

import struct

import pytest

from envoyext.wasm.abi import WasmResult
from envoyext.wasm.api import WasmPlugin
from tests.wasm import fuzz_guest as G

IMPORTS = {imp.key: k for k, imp in enumerate(G.registered_imports())}


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.wasm"
    path.write_bytes(G.module_bytes())
    return path


def set_then_get(guest, slot: str, map_type: int, name: bytes, value: bytes, path: bytes):
    """In `slot`: replace header `name` with `value`, then proxy_get_property(`path`). Returns the
    plugin and the property call's result and value."""
    p = WasmPlugin.load(guest, name="fuzz", idle_vms=0)
    vm = p.host.wasm.vm
    scratch = name + b"\0" + value + b"\0" + path + b"\0"
    key_at, value_at, path_at = G.SCRATCH, G.SCRATCH + len(name) + 1, G.SCRATCH + len(name) + len(value) + 2
    vm.set_memory(G.SCRATCH, scratch)
    program = [(IMPORTS["env.proxy_replace_header_map_value"], [map_type, key_at, len(name), value_at, len(value)]),
               (IMPORTS["env.proxy_get_property"], [path_at, len(path), G.OUT, G.OUT + 4])]
    vm.set_memory(G.PROG + G.SLOTS[slot] * G.SLOT, G.program_bytes(program))
    ex = p.request({":path": "/"})
    if ex.local_response is None:
        ex.respond(200, {"x-up": "1"}, b"ok")
    ex.finish()
    memory = vm.get_memory(0, G.MEMORY0)
    result = G.result_of(memory, G.SLOTS[slot], 1)
    ptr, size = struct.unpack_from("<II", memory, G.OUT)
    return p, result, (vm.get_memory(ptr, size) if result == WasmResult.Ok else None)


@pytest.mark.parametrize("value", [b"\xb2", b"99999999999999999999999", b"12x", b""])
def test_request_size_with_an_unparseable_content_length_is_absent(guest, value):
    # Found: content-length "\xb2" (a Latin-1 superscript two, which str.isdigit() accepts) made
    # int() raise, and 23 digits overflowed the int64 packing: a host error, the VM failed.
    # Envoy parses it with absl::SimpleAtoi; when that fails the attribute has no value.
    p, result, _ = set_then_get(guest, "proxy_on_request_headers", 0, b"content-length", value, b"request\0size")
    assert result == WasmResult.NotFound and not p.failures


@pytest.mark.parametrize("value,expected", [(b" 7 ", 7), (b"+5", 5), (b"-5", -5)])
def test_request_size_parses_content_length_as_simple_atoi(guest, value, expected):
    p, result, data = set_then_get(guest, "proxy_on_request_headers", 0, b"content-length", value, b"request\0size")
    assert (result, data) == (WasmResult.Ok, struct.pack("<q", expected)) and not p.failures


def test_response_code_with_an_unparseable_status_is_absent(guest):
    # Found: a guest that replaced :status with "abc" and read response.code made int() raise.
    p, result, _ = set_then_get(guest, "proxy_on_response_headers", 2, b":status", b"abc", b"response\0code")
    assert result == WasmResult.NotFound and not p.failures
