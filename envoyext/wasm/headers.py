"""Envoy's HeaderMapImpl semantics on the emulator's header lists (ordered (name, value) pairs).

What a guest sees and does through proxy_*_header_map_* must match Envoy: keys are lowercased;
pseudo-headers stay ahead of the others; adding a header the map holds "inline" (a known header
such as user-agent or x-forwarded-for, envoyext.envoy.facts) when it is already present appends
to its value with a comma; replacing removes every occurrence and adds one at the end.
"""

from __future__ import annotations

from envoyext.envoy import facts
from envoyext.messages import wire_bytes as header_bytes  # noqa: F401 (the other direction of header_text)
from envoyext.wasm.abi import MapType

# Which of Envoy's header maps each proxy-wasm map type is (gRPC metadata and a callout's reply
# are response maps), and so which names it holds inline.
INLINE_BY_MAP = {
    MapType.RequestHeaders: facts.INLINE_REQUEST_HEADERS,
    MapType.RequestTrailers: facts.INLINE_REQUEST_TRAILERS,
    MapType.ResponseHeaders: facts.INLINE_RESPONSE_HEADERS,
    MapType.ResponseTrailers: facts.INLINE_RESPONSE_TRAILERS,
    MapType.GrpcReceiveInitialMetadata: facts.INLINE_RESPONSE_HEADERS,
    MapType.GrpcReceiveTrailingMetadata: facts.INLINE_RESPONSE_TRAILERS,
    MapType.HttpCallResponseHeaders: facts.INLINE_RESPONSE_HEADERS,
    MapType.HttpCallResponseTrailers: facts.INLINE_RESPONSE_TRAILERS,
}


def text(b: bytes) -> str:
    """Guest bytes as the emulator's str, losslessly (undecodable bytes survive a round trip)."""
    return b.decode("utf-8", "surrogateescape")


def raw(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# Header names and values are octets on the wire, and envoyext's header strs hold one char per
# octet (the live client sends them as Latin-1, and reads responses so): a filter sees exactly the
# bytes Envoy would hand it, `é` as the one byte 0xe9, not as UTF-8.
def header_text(b: bytes) -> str:
    return b.decode("latin-1")


def get(headers: list, key: str) -> str | None:
    key = key.lower()
    for k, v in headers:
        if k == key:
            return v
    return None


def add(headers: list, key: str, value: str, inline: frozenset = frozenset()) -> None:
    """HeaderMapImpl::addCopy; `inline` is the names this map holds inline."""
    key = key.lower()
    if key in inline:
        for i, (k, v) in enumerate(headers):
            if k == key:
                headers[i] = (k, v + "," + value)
                return
    if key.startswith(":"):
        at = 0
        while at < len(headers) and headers[at][0].startswith(":"):
            at += 1
        headers.insert(at, (key, value))
    else:
        headers.append((key, value))


def remove(headers: list, key: str) -> None:
    key = key.lower()
    headers[:] = [h for h in headers if h[0] != key]


def replace(headers: list, key: str, value: str, inline: frozenset = frozenset()) -> None:
    remove(headers, key)
    add(headers, key, value, inline)


def set_all(headers: list, pairs, inline: frozenset = frozenset()) -> None:
    headers.clear()
    for k, v in pairs:
        add(headers, k, v, inline)


def byte_size(headers: list) -> int:
    return sum(len(header_bytes(k)) + len(header_bytes(v)) for k, v in headers)
