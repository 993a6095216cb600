"""The emulated Envoy: an HTTP connection manager and router in-process, around one emulated filter.

It does what Envoy 1.40 does around a filter with the bootstrap `envoyext.envoy.bootstrap`
generates: refuses what the codec and the connection manager refuse before any filter runs, adds
the headers the connection manager adds, runs the filter's request path, routes
(`envoyext.emulated.router`), runs its response path, shapes local replies and counts the
connection manager's stats under the proxy's identity (`ProxyIdentity.stat_prefix`).
"""

from __future__ import annotations

import uuid

from envoyext.emulated.codec import (
    AUTHORITY_CHARS,
    CODEC_ERROR_STATS,
    MAX_REQUEST_HEAD_BYTES,
    MAX_REQUEST_HEADERS,
    http1_response,
)
from envoyext.emulated.router import Router
from envoyext.emulated.stream import CalloutResult, Clock, FilterHost, LocalReply, Stream
from envoyext.envoy import peer_tls
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.messages import Headers, Received, Request, Response, codec_bad_value, first, is_token, request_head
from envoyext.scenario import Case, Scenario


class EmulatedEnvoy:
    """One emulated Envoy for one scenario: routes, clusters, clock, and what clusters received."""

    def __init__(self, scenario: Scenario, identity: ProxyIdentity = TEST_PROXY):
        self.scenario = scenario
        self.identity = identity
        self.clock = Clock()
        self.router = Router(scenario, self.clock, identity.name)
        self.clusters = self.router.clusters
        self.stats: dict[str, int] = {}  # the connection manager's own counters, as Envoy names them

    # -- callouts ------------------------------------------------------------------------------
    def call_cluster(self, cluster: str, headers: Headers, body: bytes = b"",
                     timeout_ms: int | None = None) -> CalloutResult:
        return self.router.call_cluster(cluster, headers, body, timeout_ms)

    @property
    def received(self) -> dict[str, list[Received]]:
        """What each cluster received since the last take_received()."""
        return self.router.received

    def take_received(self) -> dict[str, list[Received]]:
        return self.router.take_received()

    # -- one request through the filter ---------------------------------------------------------
    def request(self, host: FilterHost, case: Case) -> Response:
        rq = case.request
        refused = envoy_refusal(rq)
        if refused is not None:
            return self._answer_without_filters(rq, *refused)
        # A CONNECT has no :path (Envoy 1.40, measured): its target is the authority.
        path = [] if rq.path is None else [(":path", rq.path)]
        # Over TLS (a case's `connection: {mtls: ...}`) the codec's :scheme and the connection
        # manager's x-forwarded-proto say https (issue 11 item 5).
        scheme = "http" if case.mtls is None else "https"
        headers: Headers = [(":authority", rq.authority), *path, (":method", rq.method), (":scheme", scheme)]
        # The codec drops a value's leading and trailing spaces and tabs (RFC 9110 OWS).
        headers += [(k, v.strip(" \t")) for k, v in [*rq.headers, *rq.framing()] if k != "host"]
        # The connection manager adds these before any filter runs (edge, use_remote_address false).
        headers.append(("x-forwarded-proto", scheme))
        if first(headers, "x-request-id") is None:
            headers.append(("x-request-id", str(uuid.uuid4())))
        trailers = [(k, v.strip(" \t")) for k, v in rq.trailers]
        stream = Stream(headers, rq.body, trailers, self, start_ns=self.clock.ns,
                        tls=None if case.mtls is None else peer_tls.connection_facts(case.mtls))
        sf = host.new_stream(stream)
        refused_upgrade = self._refused_upgrade(stream)
        local = refused_upgrade if refused_upgrade is not None else sf.decode(stream)
        if local is None:
            local = self.router.forward(stream)
        if local is not None:
            send_local_reply(stream, local)
        replaced = sf.encode(stream)
        if replaced is not None:
            send_local_reply(stream, replaced)
        sf.complete(stream)
        status = int(first(stream.response_headers, ":status") or 0)
        self._count_request(status, stream)
        return http1_response(rq.method, status, stream.response_headers, stream.response_body)

    @staticmethod
    def _refused_upgrade(stream: Stream) -> LocalReply | None:
        """A CONNECT whose route has no CONNECT upgrade: the connection manager answers 403 before
        any filter decodes it (the filters still see the reply; Envoy 1.40, measured)."""
        route = stream.route if first(stream.request_headers, ":method") == "CONNECT" else None
        if route is not None and not route.allows_connect:
            return LocalReply(403, details="upgrade_failed")
        return None

    def _answer_without_filters(self, rq: Request, reply: LocalReply, stats: tuple[str, ...]) -> Response:
        """Envoy answered the request itself: no filter ran, nothing went upstream."""
        stream = Stream([(":method", rq.method), (":path", rq.target)], rq.body, [], self, start_ns=self.clock.ns)
        send_local_reply(stream, reply)
        self._count_request(reply.status, stream, stats)
        return http1_response(rq.method, reply.status, stream.response_headers, stream.response_body)

    def _count_request(self, status: int, stream: Stream, extra: tuple[str, ...] = ()) -> None:
        prefix = self.identity.hcm_stats
        names = ["downstream_rq_total", "downstream_rq_completed", f"downstream_rq_{status // 100}xx", *extra]
        if stream.routed:  # the router saw the request: no filter answered it first
            names.append("rq_total")
        if stream.direct_response:
            names.append("rq_direct_response")
        for name in names:
            self.stats[prefix + name] = self.stats.get(prefix + name, 0) + 1


def send_local_reply(stream: Stream, local: LocalReply) -> None:
    """The stream's response becomes `local`, shaped as Envoy's sendLocalReply shapes it."""
    headers = [(":status", str(local.status)), *local.headers]
    if local.body:  # as Envoy's sendLocalReply: type and length only for a body
        if first(headers, "content-type") is None:
            headers.append(("content-type", "text/plain"))
        if first(headers, "content-length") is None:
            headers.append(("content-length", str(len(local.body))))
    stream.response_headers, stream.response_body, stream.local_reply = headers, local.body, True


def _codec_error(status: int, reason: str) -> tuple[LocalReply, tuple[str, ...]]:
    return LocalReply(status, reason.encode(), [("connection", "close")]), CODEC_ERROR_STATS


def envoy_refusal(rq: Request) -> tuple[LocalReply, tuple[str, ...]] | None:
    """The answer Envoy gives `rq` itself, before any filter runs, and the connection manager
    stats it moves (beyond the request counters); None when the request reaches the filters."""
    head = request_head(rq)
    if len(head) > MAX_REQUEST_HEAD_BYTES or head.count(b"\r\n") - 2 > MAX_REQUEST_HEADERS:
        return _codec_error(431, "Request Header Fields Too Large")
    sent = [(k, v) for k, v in [*rq.headers, *rq.framing()] if k != "host"]  # host: the authority's
    if (any(not is_token(k) or codec_bad_value(v) for k, v in sent)
            or not set(rq.authority) <= AUTHORITY_CHARS
            or (rq.target == "*" and rq.method != "OPTIONS")):
        return _codec_error(400, "Bad Request")
    # The connection manager's own path checks answer with no body.
    if rq.path is None:  # CONNECT: the authority is the target; its route decides
        return None
    if not rq.path.startswith("/"):  # `OPTIONS *`: nothing to route
        return LocalReply(404), ("downstream_rq_non_relative_path",)
    if "#" in rq.path:  # a fragment
        return LocalReply(400, b"", [("connection", "close")]), ("downstream_rq_failed_path_normalization",)
    return None
