"""Envoy's HeaderMapImpl semantics on the emulator's header lists (ordered (name, value) pairs).

What a guest sees and does through proxy_*_header_map_* must match Envoy: keys are lowercased;
pseudo-headers stay ahead of the others; adding a header Envoy keeps "inline" (a known header
such as user-agent or x-forwarded-for) when it is already present appends to its value with a
comma (cookie: "; "); replacing removes every occurrence and adds one at the end.
"""

from __future__ import annotations

# Headers Envoy's request/response header maps hold inline (source/common/http/header_map_impl.h,
# INLINE_REQ_*/INLINE_RESP_*/INLINE_REQ_RESP_* in headers.h). A repeated add joins values.
INLINE = frozenset("""
:authority :method :path :protocol :scheme :status connection content-length content-type
date expect grpc-timeout keep-alive location proxy-connection server te transfer-encoding
upgrade user-agent via x-client-trace-id x-envoy-attempt-count x-envoy-decorator-operation
x-envoy-degraded x-envoy-downstream-service-cluster x-envoy-downstream-service-node
x-envoy-expected-rq-timeout-ms x-envoy-external-address x-envoy-force-trace
x-envoy-hedge-on-per-try-timeout x-envoy-immediate-health-check-fail x-envoy-internal
x-envoy-ip-tags x-envoy-is-timeout-retry x-envoy-max-retries x-envoy-original-path
x-envoy-original-url x-envoy-ratelimited x-envoy-retriable-header-names
x-envoy-retriable-status-codes x-envoy-retry-grpc-on x-envoy-retry-on
x-envoy-upstream-alt-stat-name x-envoy-upstream-canary x-envoy-upstream-healthchecked-cluster
x-envoy-upstream-rq-per-try-timeout-ms x-envoy-upstream-rq-timeout-alt-response
x-envoy-upstream-rq-timeout-ms x-envoy-upstream-service-time x-envoy-upstream-stream-duration-ms
x-forwarded-client-cert x-forwarded-for x-forwarded-host x-forwarded-proto x-request-id
""".split())


def text(b: bytes) -> str:
    """Guest bytes as the emulator's str, losslessly (undecodable bytes survive a round trip)."""
    return b.decode("utf-8", "surrogateescape")


def raw(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def get(headers: list, key: str) -> str | None:
    key = key.lower()
    for k, v in headers:
        if k == key:
            return v
    return None


def add(headers: list, key: str, value: str) -> None:
    key = key.lower()
    if key in INLINE:
        for i, (k, v) in enumerate(headers):
            if k == key:
                headers[i] = (k, v + ("; " if key == "cookie" else ",") + value)
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


def replace(headers: list, key: str, value: str) -> None:
    remove(headers, key)
    add(headers, key, value)


def set_all(headers: list, pairs) -> None:
    headers.clear()
    for k, v in pairs:
        add(headers, k, v)


def byte_size(headers: list) -> int:
    return sum(len(raw(k)) + len(raw(v)) for k, v in headers)
