"""A tiny Zipkin-compatible collector: what the proxies' zipkin tracer reports spans to, so a
scenario can assert the span tree of one request across the gateway and the sidecars.

Speaks the part of Zipkin's v2 API Envoy and a person use: POST /api/v2/spans (a JSON list of v2
spans, what Envoy's HTTP_JSON collector_endpoint_version sends), GET /api/v2/traces (lists of spans
grouped by trace, newest last; `serviceName` and `limit` filter) and GET /api/v2/trace/<traceId>.
Runs in a thread of the runtime's process (http.server): nothing else to start or leak.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from envoyext.mesh.model import AddressPlan

Span = dict[str, Any]
PORT = 9411  # Zipkin's port (Istio's zipkin.istio-system:9411)


def collector_address(plan: AddressPlan) -> tuple[str, int]:
    """Where a mesh run's collector listens: the last address of the plan's VIP block, which no
    service VIP reaches (VIPs count up from the start of it)."""
    return f"127.{plan.base + 3}.255.254", PORT


class Zipkin:
    def __init__(self, host: str = "127.0.0.1", port: int = PORT):
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        return "http://{}:{}".format(*self.address)

    def start(self) -> Zipkin:
        self._thread = threading.Thread(target=self._server.serve_forever, name="envoyext-zipkin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Zipkin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests and the CLI read --------------------------------------------------------------
    def add(self, spans: list[Span]) -> None:
        with self._lock:
            self._spans.extend(s for s in spans if isinstance(s, dict))

    def spans(self, trace_id: str | None = None) -> list[Span]:
        """Every span received (of one trace, given its id: 16 or 32 hex digits, any case)."""
        with self._lock:
            spans = list(self._spans)
        if trace_id is None:
            return spans
        want = trace_id.lower().rjust(32, "0")
        return [s for s in spans if str(s.get("traceId", "")).lower().rjust(32, "0") == want]

    def traces(self, service: str | None = None, limit: int | None = None) -> list[list[Span]]:
        """Spans grouped by trace id, in the order each trace was first seen; a service keeps the
        traces with a span whose localEndpoint.serviceName is it."""
        by_id: dict[str, list[Span]] = {}
        for s in self.spans():
            by_id.setdefault(str(s.get("traceId", "")).lower().rjust(32, "0"), []).append(s)
        out = [t for t in by_id.values()
               if service is None or any((s.get("localEndpoint") or {}).get("serviceName") == service for s in t)]
        return out[-limit:] if limit else out

    def wait_for(self, trace_id: str, count: int, timeout: float = 10) -> list[Span]:
        """The spans of a trace once there are at least `count` (Envoy reports them in batches,
        on a flush interval); what there is after `timeout` otherwise."""
        deadline = time.monotonic() + timeout
        while len(spans := self.spans(trace_id)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return spans

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()


def _handler(collector: Zipkin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: Envoy reuses its connection to the collector

        def do_POST(self) -> None:
            body = self._body()
            if urlsplit(self.path).path != "/api/v2/spans":
                return self._send(404, {"error": "POST /api/v2/spans only"})
            try:
                spans = json.loads(body)
            except ValueError:
                return self._send(400, {"error": "expected a JSON list of v2 spans"})
            collector.add(spans if isinstance(spans, list) else [spans])
            self._send(202, None)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path == "/api/v2/traces":
                limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
                return self._send(200, collector.traces(query.get("serviceName"), limit))
            if url.path.startswith("/api/v2/trace/"):
                spans = collector.spans(url.path.rsplit("/", 1)[-1])
                return self._send(200 if spans else 404, spans)
            if url.path == "/api/v2/services":
                names = {(s.get("localEndpoint") or {}).get("serviceName") for s in collector.spans()}
                return self._send(200, sorted(n for n in names if n))
            self._send(404, {"error": "not a Zipkin v2 endpoint this collector has"})

        def _body(self) -> bytes:
            # Envoy's collector client streams its report: chunked, with no Content-Length.
            if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, then the blank line
                pass
            return b"".join(chunks)

        def _send(self, status: int, doc: Any) -> None:
            body = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the CLI own stdout
            pass

    return Handler
