"""The emulated router filter and the clusters behind it: routes a stream to the scenario's
upstream, answers callouts from its named clusters (`UpstreamSpec.respond`, in-process), and
records what each cluster received. Time is the connection manager's virtual clock."""

from __future__ import annotations

from envoyext.emulated.codec import response_headers_from, upstream_wire_headers
from envoyext.emulated.stream import CalloutResult, Clock, LocalReply, NotModelled, Stream
from envoyext.messages import Headers, Received, Response, first
from envoyext.scenario import Route, Scenario
from envoyext.upstreams import Reply, UpstreamSpec

# What Envoy's router sends when a cluster refuses, and when it times out (its local replies;
# Envoy's async client hands the same to a callout).
CONNECT_FAILURE_BODY = (b"upstream connect error or disconnect/reset before headers. reset reason: "
                        b"remote connection failure")
TIMEOUT_BODY = b"upstream request timeout"
DEFAULT_ROUTE_TIMEOUT_MS = 15000
# The address a routed stream's upstream has (the test upstream's, as filters see it).
UPSTREAM_ADDRESS = "127.0.0.1:8080"


class Router:
    def __init__(self, scenario: Scenario, clock: Clock, proxy: str):
        self.clock = clock
        self.proxy = proxy  # the proxy whose requests the clusters receive (ProxyIdentity.name)
        self.clusters: dict[str, UpstreamSpec] = scenario.all_clusters()
        self.received: dict[str, list[Received]] = {n: [] for n in self.clusters}

    def call_cluster(self, cluster: str, headers: Headers, body: bytes = b"",
                     timeout_ms: int | None = None) -> CalloutResult:
        spec = self.clusters.get(cluster)
        if spec is None:
            return CalloutResult(failure="no_cluster")
        reply = self._deliver(cluster, spec, headers, body)
        if reply is None:
            return CalloutResult(failure="connection_failure")
        if timeout_ms is not None and reply.delay_ms >= timeout_ms:
            self.clock.advance_ms(timeout_ms)
            return CalloutResult(failure="timeout")
        self.clock.advance_ms(reply.delay_ms)
        return CalloutResult(Response(reply.status, response_headers_from(reply), reply.body))

    def _deliver(self, cluster: str, spec: UpstreamSpec, headers: Headers, body: bytes) -> Reply | None:
        if spec.down:
            return None
        method = first(headers, ":method") or "GET"
        path = first(headers, ":path") or "/"
        wire = upstream_wire_headers(headers, body)
        self.received[cluster].append(Received(method, path, wire, body, proxy=self.proxy))
        return spec.respond(method, path, wire, body)

    def take_received(self) -> dict[str, list[Received]]:
        out, self.received = self.received, {n: [] for n in self.clusters}
        return out

    def forward(self, stream: Stream) -> LocalReply | None:
        """Route the stream and fill in the upstream's response; the router's own reply instead
        when there is no route, the route answers directly, or the cluster fails."""
        stream.routed = True
        route = stream.route
        if route is None:
            return LocalReply(404)
        if route.direct_response is not None:
            stream.direct_response = True
            d = route.direct_response
            return LocalReply(d["status"], d.get("body", "").encode())
        cluster = route.cluster
        assert cluster is not None, "a route without a direct response names its cluster (scenario.from_dict)"
        stream.cluster_name = cluster
        if first(stream.request_headers, ":method") == "CONNECT":
            return self._open_tunnel(stream, route, cluster)
        spec = self.clusters[cluster]
        timeout = route.timeout_ms if route.timeout_ms is not None else DEFAULT_ROUTE_TIMEOUT_MS
        forwarded = list(stream.request_headers)
        if timeout:
            forwarded.append(("x-envoy-expected-rq-timeout-ms", str(timeout)))
        reply = self._deliver(cluster, spec, forwarded, stream.request_body)
        if reply is None:
            return LocalReply(503, CONNECT_FAILURE_BODY)
        if timeout and reply.delay_ms >= timeout:
            self.clock.advance_ms(timeout)
            return LocalReply(504, TIMEOUT_BODY)
        self.clock.advance_ms(reply.delay_ms)
        stream.upstream_address = UPSTREAM_ADDRESS
        stream.response_headers = ([(":status", str(reply.status))] + response_headers_from(reply)
                                   + [("x-envoy-upstream-service-time", "0")])
        stream.response_body = reply.body
        return None

    def _open_tunnel(self, stream: Stream, route: Route, cluster: str) -> LocalReply | None:
        """A CONNECT on a route with `connect_config`: Envoy connects to the cluster over TCP and
        answers 200 itself (no HTTP request reaches the upstream; measured). Without it, Envoy
        sends the CONNECT on to the upstream, and the test upstreams are no CONNECT proxies."""
        if not route.terminates_connect:
            raise NotModelled("a CONNECT sent on upstream (upgrade without connect_config) is not emulated; "
                              "mark the case 'only: live' or give the upgrade connect_config: {}")
        if self.clusters[cluster].down:
            return LocalReply(503, CONNECT_FAILURE_BODY)
        stream.upstream_address = UPSTREAM_ADDRESS
        stream.response_headers = [(":status", "200")]
        return None
