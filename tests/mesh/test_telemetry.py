"""Mesh telemetry with a real Envoy: the istio.stats filter's Prometheus series, Zipkin spans and
the access log.

One Envoy plays both sidecars of a call from productpage-v1 to reviews-v2: an `outbound` listener
(reporter=source, productpage's identity) routes to `outbound|9080||reviews...`, whose endpoint is
the `inbound` listener of the same Envoy (reporter=destination, reviews' identity), which routes to
a stand-in app. So the metadata exchange between the two sides is real, as between two proxies.
Run: PYTHONPATH=. .venv/bin/pytest tests/mesh/test_telemetry.py
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from envoyext import prometheus
from envoyext.envoy import xds
from envoyext.envoy.identity import ProxyIdentity
from envoyext.envoy.process import EnvoyProcess
from envoyext.mesh import telemetry
from envoyext.mesh.model import Mesh, MeshConfig, Proxy, Service, ServicePort, Workload
from envoyext.wasm.api import WasmPlugin

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """A tiny HTTP server on a thread: the stand-in app or the Zipkin collector."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.received = []  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def received(self) -> list:
        return self.httpd.received  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class App(BaseHTTPRequestHandler):
    """/status/N answers N; everything else 200 with a small body. Records the request headers."""

    def do_GET(self) -> None:
        self.server.received.append((self.path, dict(self.headers)))  # type: ignore[attr-defined]
        code = int(self.path.rsplit("/", 1)[1]) if "/status/" in self.path else 200
        body = b"hello from reviews"
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Collector(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self._body()
        self.server.received.append((self.path, self.headers.get("content-type"), body))  # type: ignore[attr-defined]
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("content-length", 0)))
        out = b""
        while True:   # Envoy's async client may send the spans chunked
            size = int(self.rfile.readline().split(b";")[0], 16)
            out += self.rfile.read(size)
            self.rfile.readline()
            if size == 0:
                return out

    def log_message(self, *args: object) -> None:
        pass


def workload(pod: str, deployment: str, labels: dict[str, str], port: int) -> Workload:
    return Workload(pod=pod, deployment=deployment, namespace="default", labels=labels,
                    service_account=f"bookinfo-{labels['app']}", container_ports=(port,), ip="127.0.0.1",
                    app_address="127.0.0.1", capture_address="127.0.0.1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("telemetry")
    app, collector = _Server(App), _Server(Collector)
    outbound_port, inbound_port = free_port(), free_port()
    productpage = Proxy("sidecar", workload("productpage-v1-0", "productpage-v1",
                                            {"app": "productpage", "version": "v1"}, 9080))
    reviews = Proxy("sidecar", workload("reviews-v2-0", "reviews-v2", {"app": "reviews", "version": "v2"},
                                        inbound_port))
    mesh = Mesh(
        config=MeshConfig(profile="demo", tracing_sampling=100.0, access_log_file=str(tmp / "access.log")),
        services=[Service(REVIEWS, "reviews", "default", (ServicePort("http", 9080, inbound_port, "HTTP"),),
                          selector={"app": "reviews"})],
        workloads=[productpage.workload, reviews.workload], proxies=[productpage, reviews])

    def hcm(prefix: str, routes: list, stats: dict) -> dict:
        return xds.http_connection_manager(
            prefix, xds.route_config(prefix, [xds.virtual_host(prefix, ["*"], routes)]),
            [stats, xds.router_filter()],
            tracing=telemetry.tracing(mesh, productpage if prefix.startswith("outbound") else reviews),
            access_log=telemetry.access_log(mesh))

    out_routes = [
        xds.route("reviews", {"prefix": "/reviews"}, cluster=f"outbound|9080||{REVIEWS}"),
        xds.route("ratings", {"prefix": "/ratings"}, cluster=f"outbound|9080||{RATINGS}"),
        xds.route("down", {"prefix": "/down"}, cluster="outbound|9080||down.default.svc.cluster.local"),
    ]
    in_routes = [xds.route("default", {"prefix": "/"}, cluster=f"inbound|{inbound_port}||")]
    # ratings has no sidecar here: its identity can only come from Istio's endpoint metadata.
    ratings_cluster = xds.static_cluster(f"outbound|9080||{RATINGS}", [("127.0.0.1", app.port)])
    ratings_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = {
        "filter_metadata": {"istio": {"workload": "ratings-v1;default;ratings;v1;Kubernetes"}}}
    config = xds.bootstrap(
        node=xds.node("sidecar~127.0.0.1~productpage-v1-0.default~default.svc.cluster.local", "productpage.default"),
        admin=("127.0.0.1", 0),
        listeners=[
            xds.http_listener("outbound", ("127.0.0.1", outbound_port),
                              hcm("outbound_0.0.0.0_9080", out_routes,
                                  telemetry.stats_filter(mesh, productpage, "source"))),
            xds.http_listener("inbound", ("127.0.0.1", inbound_port),
                              hcm(f"inbound_0.0.0.0_{inbound_port}", in_routes,
                                  telemetry.stats_filter(mesh, reviews, "destination"))),
        ],
        clusters=[
            xds.static_cluster(f"outbound|9080||{REVIEWS}", [("127.0.0.1", inbound_port)]),
            ratings_cluster,
            xds.static_cluster("outbound|9080||down.default.svc.cluster.local", []),
            xds.static_cluster(f"inbound|{inbound_port}||", [("127.0.0.1", app.port)]),
            telemetry.zipkin_cluster("127.0.0.1", collector.port),
        ],
        stats_config=telemetry.stats_config(),
        stats_flush_interval="1s",
        layered_runtime={"layers": [{"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}]},
    )
    envoy = EnvoyProcess(config, identity=ProxyIdentity(listener="outbound"), workdir=tmp / "envoy")
    envoy.start()

    def get(path: str, headers: dict | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", outbound_port, timeout=10)
        try:
            conn.request("GET", path, headers={"host": "reviews:9080", **(headers or {})})
            resp = conn.getresponse()
            resp.read()
            leaked = resp.getheader(telemetry.PEER_HEADER)
            assert leaked is None, f"the peer header reached the client: {leaked}"
            return resp.status
        finally:
            conn.close()

    statuses = [get("/reviews/1") for _ in range(3)]
    statuses.append(get("/reviews/status/418", {telemetry.PEER_HEADER: "workload=spoofed"}))
    statuses.append(get("/ratings/1"))
    statuses.append(get("/down"))
    statuses.append(get("/nowhere"))
    assert statuses == [200, 200, 200, 418, 200, 503, 404]
    yield {"envoy": envoy, "app": app, "collector": collector, "tmp": tmp, "inbound_port": inbound_port}
    envoy.stop()
    app.close()
    collector.close()


def series(prom: dict, name: str) -> dict[frozenset, float]:
    return {frozenset(labels.items()): value for labels, value in prom.get(name, [])}


def scrape_until(envoy: EnvoyProcess, name: str, want: float, timeout: float = 15.0) -> dict:
    """Histograms reach /stats/prometheus at Envoy's next stats flush (1 s here)."""
    assert envoy.admin is not None
    deadline = time.monotonic() + timeout
    while True:
        prom = envoy.admin.prometheus()
        if sum(series(prom, name).values()) >= want or time.monotonic() > deadline:
            return prom
        time.sleep(0.25)


def labels(reporter: str, code: str, **over: str) -> frozenset:
    """Istio's labels for productpage-v1 calling reviews-v2 over plaintext HTTP."""
    base = {
        "reporter": reporter,
        "source_workload": "productpage-v1", "source_canonical_service": "productpage",
        "source_canonical_revision": "v1", "source_workload_namespace": "default", "source_principal": "unknown",
        "source_app": "productpage", "source_version": "v1", "source_cluster": "Kubernetes",
        "destination_workload": "reviews-v2", "destination_workload_namespace": "default",
        "destination_principal": "unknown", "destination_app": "reviews", "destination_version": "v2",
        "destination_service": REVIEWS, "destination_canonical_service": "reviews",
        "destination_canonical_revision": "v2", "destination_service_name": "reviews",
        "destination_service_namespace": "default", "destination_cluster": "Kubernetes",
        "request_protocol": "http", "response_code": code, "grpc_response_status": "", "response_flags": "-",
        "connection_security_policy": "unknown" if reporter == "source" else "none",
    }
    base.update(over)
    return frozenset(base.items())


UNKNOWN_DESTINATION = {k: "unknown" for k in (
    "destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
    "destination_canonical_service", "destination_canonical_revision", "destination_cluster")}


def test_requests_total_has_istio_labels_on_both_sides(setup):
    envoy = setup["envoy"]
    prom = scrape_until(envoy, "istio_request_duration_milliseconds_count", 11)
    total = series(prom, "istio_requests_total")
    expected = {
        labels("source", "200"): 3,
        labels("destination", "200"): 3,
        labels("source", "418"): 1,
        labels("destination", "418"): 1,   # the app's spoofed peer header was replaced on the way out
        # ratings has no sidecar: its workload comes from Istio's endpoint metadata (istio.workload),
        # which carries no app or version.
        labels("source", "200", destination_workload="ratings-v1", destination_canonical_service="ratings",
               destination_canonical_revision="v1", destination_app="unknown", destination_version="unknown",
               destination_service=RATINGS, destination_service_name="ratings"): 1,
        # No healthy upstream: a local reply with flag UH.
        labels("source", "503", **UNKNOWN_DESTINATION, destination_service="down.default.svc.cluster.local",
               destination_service_name="down", response_flags="UH"): 1,
        # No route, so no cluster: the service is the host header, as Istio falls back to it.
        labels("source", "404", **UNKNOWN_DESTINATION, destination_service="reviews:9080",
               destination_service_name="reviews:9080", destination_service_namespace="unknown",
               response_flags="NR"): 1,
    }
    assert total == expected, "\n".join(sorted(str(sorted(dict(k).items())) for k in total))
    # Negative control: a wrong label value is not there.
    assert labels("source", "200", destination_workload="reviews-v1") not in total
    assert labels("destination", "200", source_workload="spoofed") not in total
    # One observation per request in each histogram, under exactly the same label sets.
    for h in ("istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"):
        assert series(prom, h + "_count") == total, h


def test_prometheus_text_line(setup):
    """The exposition line a Prometheus scraper reads, label order as Envoy prints it."""
    envoy = setup["envoy"]
    text = envoy.admin.get("/stats/prometheus").decode()
    line = next(ln for ln in text.splitlines()
                if ln.startswith("istio_requests_total{") and 'reporter="source"' in ln
                and 'response_code="200"' in ln and 'destination_workload="reviews-v2"' in ln)
    assert line.endswith(" 3"), line
    assert "# TYPE istio_requests_total counter" in text
    assert "# TYPE istio_request_duration_milliseconds histogram" in text


def test_bytes_are_request_and_response_sizes(setup):
    prom = scrape_until(setup["envoy"], "istio_response_bytes_count", 11)
    sums = series(prom, "istio_response_bytes_sum")
    # The 200 body is 18 bytes plus headers: more than the body, well under a kilobyte.
    assert 3 * 18 < sums[labels("destination", "200")] < 3 * 1024


def test_peer_header_never_reaches_the_app(setup):
    """The server side removes it; an upstream without a sidecar (ratings here) does get it, as
    Istio's exchange headers reach any upstream of an outbound cluster."""
    received = setup["app"].received
    behind_sidecar = [h for path, h in received if path.startswith("/reviews")]
    assert len(behind_sidecar) == 4
    for headers in behind_sidecar:
        assert telemetry.PEER_HEADER not in {k.lower() for k in headers}
    direct = [h for path, h in received if path.startswith("/ratings")]
    assert direct[0][telemetry.PEER_HEADER].startswith("workload=productpage-v1;namespace=default;")


def test_spans_reach_the_zipkin_collector(setup):
    collector = setup["collector"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not collector.received:
        time.sleep(0.2)
    assert collector.received, "no spans were posted"
    path, content_type, body = collector.received[0]
    assert path == "/api/v2/spans" and content_type == "application/json"
    spans = [s for _, _, b in collector.received for s in json.loads(b)]
    assert all(len(s["traceId"]) == 32 for s in spans)   # 128-bit trace ids
    tags = {(t["localEndpoint"]["serviceName"] if "localEndpoint" in t else "",
             t.get("tags", {}).get("istio.canonical_service")) for t in spans}
    assert any(svc == "reviews" for _, svc in tags), tags


def test_access_log_uses_istios_format(setup):
    log = Path(setup["tmp"] / "access.log")
    wanted = ['"GET /reviews/1 HTTP/1.1" 200 - via_upstream ',
              # The filter's response_flags agree with Envoy's own %RESPONSE_FLAGS%.
              '"GET /down HTTP/1.1" 503 UH no_healthy_upstream ',
              '"GET /nowhere HTTP/1.1" 404 NR route_not_found ']
    deadline = time.monotonic() + 15   # Envoy writes access log files out every 10 s by default
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        if all(any(w in ln for ln in lines) for w in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for w in wanted:
        assert any(w in ln for ln in lines), (w, lines)
    assert any(f" outbound|9080||{REVIEWS} " in ln for ln in lines)    # %UPSTREAM_CLUSTER_RAW%
    assert len(lines) == 11   # 7 requests on the outbound side, 4 of them also inbound


def test_config_shapes():
    cfg = telemetry.stats_config()
    assert [t["tag_name"] for t in cfg["stats_tags"]] == list(telemetry.LABELS)
    assert telemetry.access_log(Mesh(MeshConfig(), [], [], [])) == []
    assert telemetry.zipkin_cluster("zipkin.istio-system", 9411)["type"] == "STRICT_DNS"


# ---- the same module in envoyext's Wasm emulator ---------------------------------------------------

def emulated_series(plugin) -> dict[frozenset, float]:
    """The emulator's counters as /stats/prometheus would label them (envoyext.prometheus)."""
    tags = telemetry.stats_config()["stats_tags"]
    scrape = prometheus.series({k: v for k, v in plugin.stats.items() if "istio_requests_total" in k},
                               stats_tags=tags)
    return {labels: v for (name, labels), v in scrape.items() if name == "istio_requests_total"}


EMULATED_PORT = 10000   # the emulator's listener port (destination.port), reviews' target port here


def small_mesh() -> tuple[Mesh, Proxy, Proxy]:
    productpage = Proxy("sidecar", workload("productpage-v1-0", "productpage-v1",
                                            {"app": "productpage", "version": "v1"}, 9080))
    reviews = Proxy("sidecar", workload("reviews-v2-0", "reviews-v2", {"app": "reviews", "version": "v2"},
                                        EMULATED_PORT))
    mesh = Mesh(MeshConfig(), [Service(REVIEWS, "reviews", "default",
                                       (ServicePort("http", 9080, EMULATED_PORT, "HTTP"),),
                                       selector={"app": "reviews"})],
                [productpage.workload, reviews.workload], [productpage, reviews])
    return mesh, productpage, reviews


def test_emulator_destination_side_reads_and_strips_the_peer_header():
    mesh, productpage, reviews = small_mesh()
    source_header = telemetry.plugin_config(mesh, productpage, "source")
    peer = ";".join(f"{k}={source_header[k]}" for k in ("workload", "namespace", "app", "version"))
    peer += f";service={source_header['canonical_service']};revision={source_header['canonical_revision']}"
    peer += ";cluster=Kubernetes"
    with WasmPlugin.load(telemetry.module_path(), telemetry.plugin_config(mesh, reviews, "destination"),
                         name="istio.stats", root_id="stats_inbound") as plugin:
        ex = plugin.request({":path": "/reviews/1", telemetry.PEER_HEADER: peer})
        assert ex.request_headers_get(telemetry.PEER_HEADER) is None      # the app never sees it
        ex.respond(200, {"content-type": "text/plain"}, b"hi")
        assert dict(ex.response_headers)[telemetry.PEER_HEADER].startswith("workload=reviews-v2;")
        ex.finish()
        assert plugin.failures == []
        assert emulated_series(plugin) == {labels("destination", "200"): 1}


def test_emulator_source_side_sends_its_identity():
    mesh, productpage, reviews = small_mesh()
    with WasmPlugin.load(telemetry.module_path(), telemetry.plugin_config(mesh, productpage, "source"),
                         name="istio.stats", root_id="stats_outbound") as plugin:
        ex = plugin.request({":path": "/reviews/1", telemetry.PEER_HEADER: "workload=spoofed"})
        assert ex.request_headers_get(telemetry.PEER_HEADER).startswith("workload=productpage-v1;")
        ex.respond(200, {telemetry.PEER_HEADER: "workload=reviews-v2;namespace=default;app=reviews"})
        assert telemetry.PEER_HEADER not in dict(ex.response_headers)
        ex.finish()
        (got, n), = emulated_series(plugin).items()
        got_labels = dict(got)
        assert n == 1 and got_labels["reporter"] == "source"
        assert got_labels["source_workload"] == "productpage-v1"
        assert got_labels["destination_workload"] == "reviews-v2"
        assert got_labels["destination_version"] == "unknown"      # not in the peer header sent
        # The emulator's upstream cluster is "upstream", not an Istio outbound cluster: the host
        # header stands in, as in Istio.
        assert got_labels["destination_service"] == "example.com"


def test_module_is_built_once_and_content_addressed(tmp_path, monkeypatch):
    monkeypatch.setenv(telemetry.CACHE_ENV, str(tmp_path))
    telemetry.module_path.cache_clear()
    try:
        first = telemetry.module_path()
        assert first.parent == tmp_path / "wasm" and first.name.startswith("istio_stats-")
        built_at = first.stat().st_mtime_ns
        telemetry.module_path.cache_clear()
        assert telemetry.module_path() == first and first.stat().st_mtime_ns == built_at   # not rebuilt
    finally:
        telemetry.module_path.cache_clear()


def test_stats_filter_entry():
    mesh, productpage, reviews = small_mesh()
    entry = telemetry.stats_filter(mesh, reviews, "destination", module="/m/istio_stats.wasm")
    assert entry["name"] == "istio.stats"
    plugin = entry["typed_config"]["config"]
    assert plugin["root_id"] == "stats_inbound" and plugin["failure_policy"] == "FAIL_OPEN"
    assert plugin["vm_config"]["code"] == {"local": {"filename": "/m/istio_stats.wasm"}}
    config = json.loads(plugin["configuration"]["value"])
    assert config["reporter"] == "destination" and config["workload"] == "reviews-v2"
    assert config["services"] == [{"host": REVIEWS, "name": "reviews", "namespace": "default",
                                  "ports": [EMULATED_PORT]}]
    assert telemetry.plugin_config(mesh, productpage, "source")["services"] == []
