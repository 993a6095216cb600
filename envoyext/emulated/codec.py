"""Envoy's HTTP/1.1 codec, as the emulated Envoy needs it: the limits on a request head, and
messages as they go out on the wire (downstream responses, upstream requests) and come back in."""

from __future__ import annotations

from email.utils import formatdate

from envoyext.messages import Headers, Response, first
from envoyext.upstreams import SERVER_NAME, Reply

# Envoy 1.40's limits on a downstream HTTP/1 request head (max_request_headers_kb 60 and
# max_headers_count 100, the defaults): measured, the size counts every byte of the request line
# and header lines with their CRLFs and the closing empty line; the count, the header lines.
MAX_REQUEST_HEAD_BYTES = 60 * 1024
MAX_REQUEST_HEADERS = 100
# What the codec's own refusals look like (measured): a local reply that closes the connection,
# counted as a protocol error on a request that never completed.
CODEC_ERROR_STATS = ("downstream_cx_protocol_error", "downstream_rq_response_before_rq_complete",
                     "downstream_rq_rx_reset")
# nghttp2_check_authority's characters, which Envoy holds a Host header to.
AUTHORITY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]@%")
# Methods whose bodiless requests Envoy's HTTP/1 codec sends without a content-length (seen
# live with Envoy 1.40); any other bodiless request goes out with `content-length: 0`.
NO_LENGTH_METHODS = frozenset({"GET", "HEAD", "DELETE", "TRACE", "CONNECT"})


def http1_response(method: str, status: int, headers: Headers, body: bytes) -> Response:
    """The response as the connection manager and its HTTP/1.1 codec write it, after every
    filter: `server` overwritten, `date` added when missing, framing decided."""
    out = [(k, v) for k, v in headers if not k.startswith(":") and k != "server"]
    if first(out, "date") is None:
        out.append(("date", http_date()))
    out.append(("server", "envoy"))
    tunnel = method == "CONNECT" and 200 <= status < 300  # what follows the headers is the tunnel's
    if (first(out, "content-length") is None and first(out, "transfer-encoding") is None
            and not bodiless_status(status) and not tunnel):
        # No length known: a body is chunked; an empty one gets `content-length: 0`, except
        # in answer to HEAD, where Envoy (seen live) announces chunked encoding instead.
        chunked = bool(body) or method == "HEAD"
        out.append(("transfer-encoding", "chunked") if chunked else ("content-length", "0"))
    if method == "CONNECT" and not tunnel:
        # No tunnel: the HTTP/1 codec cannot read on after a refused CONNECT and closes (measured).
        out.append(("connection", "close"))
    # A response to HEAD keeps its headers but loses its body on the wire.
    return Response(status, out, b"" if method == "HEAD" else body)


def bodiless_status(status: int) -> bool:
    return status < 200 or status in (204, 304)


def upstream_wire_headers(headers: Headers, body: bytes = b"") -> Headers:
    """Headers as an HTTP/1.1 upstream sees them: pseudo-headers gone, :authority as host."""
    out = [("host", v) for k, v in headers if k == ":authority"]
    out += [(k, v) for k, v in headers if not k.startswith(":")]
    method = first(headers, ":method") or "GET"
    if first(out, "content-length") is None and first(out, "transfer-encoding") is None:
        if body:   # a filter removed the length (e.g. to rewrite the body): the codec chunks it
            out.append(("transfer-encoding", "chunked"))
        elif method not in NO_LENGTH_METHODS:
            out.append(("content-length", "0"))
    return out


def http_date() -> str:
    return formatdate(usegmt=True)


def response_headers_from(reply: Reply) -> Headers:
    """A test upstream's reply as it arrives from the wire (what UpstreamServers sends: aiohttp
    writes header values as UTF-8, and header strs hold one char per wire octet)."""
    headers = [(k, v if v.isascii() else v.encode("utf-8").decode("latin-1")) for k, v in reply.headers]
    if first(headers, "content-length") is None and not bodiless_status(reply.status):
        headers.append(("content-length", str(len(reply.body))))
    if first(headers, "date") is None:
        headers.append(("date", http_date()))
    if first(headers, "server") is None:
        headers.append(("server", SERVER_NAME))
    return headers
