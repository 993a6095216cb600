"""The stand-in app: one process per pod, in place of a Deployment's containers.

    python -m envoyext.mesh.workload --pod reviews-v2-0 --service reviews --version v2 \
        --namespace default --listen 127.65.0.2:9080 --control 127.65.0.2:15999 --outbound 127.66.0.2

It answers every request on its service ports with who it is and what it received (JSON, header
`x-envoyext-pod`), so a test sees which pod a route picked and what headers the proxies added. It
can be told (control endpoint, never through Envoy) to misbehave — latency, an error rate, a
connection reset rate — and to call other services through its sidecar the way Bookinfo's apps do:
connect to the capture address at the service port with `Host: reviews:9080`, forwarding the
tracing and identity headers of the request being served (so proxies' spans join one trace).

Control endpoint (A:15999): GET/POST/DELETE /behaviour, GET/DELETE /received, POST /call.
Started by the runtime via envoyext.envoy.process.spawn, so the kernel kills it with its parent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp is imported when serving: `--help` and the module stay fast to load
    from aiohttp import ClientSession, web

POD_HEADER = "x-envoyext-pod"

# What Bookinfo's apps forward from the request they serve to the calls they make (Istio
# samples/bookinfo/src/productpage/productpage.py getForwardHeaders, "keep this in sync with
# details and reviews"): request id, every tracer's context (b3 ones via its OpenTracing B3 codec,
# verbatim), the user agent, and the session headers; `end-user` is what productpage sets from
# the logged-in user and what the reviews routing example matches on.
PROPAGATED_HEADERS = (
    "x-request-id",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
    "x-ot-span-context",
    "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
    "traceparent", "tracestate",
    "x-cloud-trace-context", "grpc-trace-bin", "sw8",
    "user-agent", "cookie", "authorization", "jwt", "end-user",
)

DEFAULT_BEHAVIOUR: dict[str, Any] = {
    "latency_ms": 0,        # added before answering
    "error_rate": 0.0,      # 0-1: share of requests answered with error_status
    "error_status": 503,
    "reset_rate": 0.0,      # 0-1: share of connections dropped (RST) without any response
    "calls": [],            # ["details:9080/details/0", ...]: made in order for each request served
    "call_timeout_s": 3.0,  # productpage's requests timeout
}
HISTORY = 1000              # requests kept for GET /received


class Workload:
    def __init__(self, pod: str, service: str, version: str, namespace: str, outbound: str):
        self.identity = {"pod": pod, "service": service, "version": version, "namespace": namespace}
        self.outbound = outbound
        self.behaviour: dict[str, Any] = dict(DEFAULT_BEHAVIOUR)
        self.received: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.client: ClientSession | None = None

    # --- the service ports --------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web
        body = await request.read()
        seen: dict[str, Any] = {"method": request.method, "path": request.path_qs, "headers": _headers(request.headers),
                "body": body.decode(errors="replace"), "port": _local_port(request)}
        self.received.append(seen)
        b = self.behaviour
        if b["latency_ms"]:
            await asyncio.sleep(b["latency_ms"] / 1000)
        if b["reset_rate"] and random.random() < b["reset_rate"]:
            _reset(request)
            raise asyncio.CancelledError  # nothing more is written on this connection
        out = {**self.identity, **{k: seen[k] for k in ("method", "path", "headers", "body")}}
        status = 200
        if b["error_rate"] and random.random() < b["error_rate"]:
            status = int(b["error_status"])
            out["error"] = True
        else:
            forward = {k: v for k, v in seen["headers"].items() if k in PROPAGATED_HEADERS}
            out["calls"] = [await self._call_from_spec(spec, forward) for spec in b["calls"]]
        return web.json_response(out, status=status, headers={POD_HEADER: self.identity["pod"]})

    async def _call_from_spec(self, spec: str, headers: dict[str, str]) -> dict[str, Any]:
        host, _, path = spec.partition("/")
        result = await self.call(host, "/" + path, "GET", headers, "")
        return {"to": host, "path": "/" + path, **result}

    async def call(self, to: str, path: str, method: str, headers: dict[str, str], body: str,
                   timeout_s: float | None = None) -> dict[str, Any]:
        """One request through this pod's sidecar: to its capture address at the service port,
        with the service name as Host (what the app's DNS lookup + iptables redirect amount to)."""
        import aiohttp
        _, _, port = to.rpartition(":")
        port = port if port.isdigit() and ":" in to else "80"
        if self.client is None:
            self.client = aiohttp.ClientSession(auto_decompress=False)
        try:
            async with self.client.request(
                    method, f"http://{self.outbound}:{port}{path}", data=body.encode() or None,
                    headers={"Host": to, **headers}, skip_auto_headers=("User-Agent",), allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout_s or float(self.behaviour["call_timeout_s"]))) as r:
                text = (await r.read()).decode(errors="replace")
                result: dict[str, Any] = {"status": r.status, "headers": _headers(r.headers), "body": text}
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            return {"status": 0, "headers": {}, "body": "", "error": f"{type(e).__name__}: {e}"}
        try:
            result["json"] = json.loads(text)
        except ValueError:
            pass
        return result

    # --- the control endpoint -----------------------------------------------------------------
    async def control(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web
        path, method = request.path, request.method
        if path == "/behaviour":
            if method == "POST":
                error = self._set_behaviour(await _json(request))
                if error:
                    return web.json_response({"error": error}, status=400)
            elif method == "DELETE":
                self.behaviour = dict(DEFAULT_BEHAVIOUR)
            return web.json_response({**self.identity, "behaviour": self.behaviour})
        if path == "/received":
            if method == "DELETE":
                self.received.clear()
            got = list(self.received)
            return web.json_response({"requests": got, "count_by_path": Counter(r["path"] for r in got)})
        if path == "/call" and method == "POST":
            req = await _json(request)
            if not isinstance(req, dict) or not isinstance(req.get("to"), str):
                return web.json_response({"error": "expected {to: 'reviews:9080', path, method, headers, body}"},
                                         status=400)
            return web.json_response(await self.call(
                req["to"], req.get("path", "/"), req.get("method", "GET"),
                {str(k): str(v) for k, v in (req.get("headers") or {}).items()}, req.get("body") or "",
                float(req["timeout_ms"]) / 1000 if req.get("timeout_ms") else None))
        return web.json_response({"error": f"no {method} {path} here"}, status=404)

    def _set_behaviour(self, given: Any) -> str | None:
        if not isinstance(given, dict):
            return "expected a JSON object"
        unknown = sorted(set(given) - set(DEFAULT_BEHAVIOUR))
        if unknown:
            return f"unknown field(s) {unknown}; known: {sorted(DEFAULT_BEHAVIOUR)}"
        for k, v in given.items():
            if k == "calls":
                if not isinstance(v, list) or not all(isinstance(c, str) and "/" in c for c in v):
                    return "calls: a list of 'service:port/path' strings"
            elif not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (k.endswith("_rate") and v > 1):
                return f"{k}: a number" + (" from 0 to 1" if k.endswith("_rate") else " >= 0")
        self.behaviour.update(given)
        return None


def _headers(headers: Any) -> dict[str, str]:
    """Lower-cased names, repeated headers joined with ',' (as HTTP allows)."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        k = k.lower()
        out[k] = f"{out[k]},{v}" if k in out else v
    return out


def _local_port(request: web.Request) -> int:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if sockname else 0


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), the way a crashing app does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def run(args: argparse.Namespace) -> None:
    from aiohttp import web
    workload = Workload(args.pod, args.service, args.version, args.namespace, args.outbound)
    runners = []
    for handler, addresses in ((workload.serve, args.listen), (workload.control, args.control)):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        for address in addresses.split(","):
            if address:
                await web.TCPSite(runner, *_address(address), reuse_address=True).start()
    print(f"ready {args.pod}", flush=True)  # the runtime polls the control port; this is for people
    try:
        await asyncio.Event().wait()
    finally:
        if workload.client is not None:
            await workload.client.close()
        for runner in runners:
            await runner.cleanup()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m envoyext.mesh.workload", description=__doc__.split("\n")[0])
    p.add_argument("--pod", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--version", default="unknown")
    p.add_argument("--namespace", default="default")
    p.add_argument("--listen", required=True, help="ADDR:PORT[,ADDR:PORT...]: the service ports")
    p.add_argument("--control", required=True, help="ADDR:PORT of the control endpoint")
    p.add_argument("--outbound", required=True, help="the capture address calls go to (the sidecar)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    try:
        asyncio.run(run(parse(argv)))
    except KeyboardInterrupt:
        pass
    except OSError as e:  # an address in use, say: one line, for the runtime's log
        print(f"workload: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
