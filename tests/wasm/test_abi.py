"""The ABI layer: pairs serialization exactly as the spec and cpp-host's PairsUtil define it."""

import struct

from envoyext.wasm.abi import AbiVersion, abi_version, deserialize_pairs, serialize_pairs


def test_pairs_round_trip_matches_the_spec_example():
    data = serialize_pairs([(b"a", b"1"), (b"b", b"22")])
    assert data == struct.pack("<5I", 2, 1, 1, 1, 2) + b"a\x001\x00b\x0022\x00"
    assert deserialize_pairs(data) == [(b"a", b"1"), (b"b", b"22")]


def test_empty_map_is_empty_bytes():
    assert serialize_pairs([]) == b""
    assert deserialize_pairs(b"") == []


def test_malformed_pairs_yield_nothing_like_cpp_host():
    good = serialize_pairs([(b"k", b"v")])
    assert deserialize_pairs(good[:-1]) == []                 # truncated
    assert deserialize_pairs(good + b"x") == []               # trailing bytes
    assert deserialize_pairs(good.replace(b"k\x00", b"kX")) == []   # missing NUL
    assert deserialize_pairs(struct.pack("<I", 5000)) == []  # over the pair-count limit


def test_abi_version_from_exports():
    assert abi_version(["memory", "proxy_abi_version_0_2_1"]) == AbiVersion.V0_2_1
    assert abi_version(["proxy_abi_version_0_1_0"]) == AbiVersion.V0_1_0
    assert abi_version(["malloc"]) == AbiVersion.Unknown
