"""Test upstreams: what the default upstream and each named cluster answer, and real servers for them.

`UpstreamSpec.respond()` is a pure function from a received request to a reply. The live runner
serves it from real HTTP servers on loopback (`UpstreamServers`); the emulators call it in-process.
Both record what arrived the same way, so one scenario checks both.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from envoyext.envoy.identity import TEST_PROXY
from envoyext.messages import Received, header_list


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay_ms: int = 0


def echo_body(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The echo upstream's JSON: what it received. Repeated headers become lists."""
    hs: dict[str, Any] = {}
    for k, v in headers:
        if k in hs:
            hs[k] = (hs[k] if isinstance(hs[k], list) else [hs[k]]) + [v]
        else:
            hs[k] = v
    return json.dumps({"method": method, "path": path, "headers": hs,
                       "body": body.decode("utf-8", "replace")}, sort_keys=True).encode()


@dataclass
class Rule:
    when: dict
    reply: Reply

    def matches(self, method: str, path: str, headers: list[tuple[str, str]]) -> bool:
        w = self.when
        if "method" in w and method.upper() != w["method"].upper():
            return False
        if "path" in w and path.split("?", 1)[0] != w["path"]:
            return False
        if "path_prefix" in w and not path.startswith(w["path_prefix"]):
            return False
        for name, want in header_list(w.get("headers")):
            if want not in [v for k, v in headers if k == name]:
                return False
        for name in w.get("headers_absent", []):
            if any(k == name.lower() for k, _ in headers):
                return False
        return True


def _reply(d: dict) -> Reply:
    headers = header_list(d.get("headers"))
    body = d.get("body", "").encode()
    # A server must name a body's type; text/plain is what Envoy's direct_response uses too.
    if body and not any(k == "content-type" for k, _ in headers):
        headers.append(("content-type", "text/plain"))
    return Reply(status=d.get("status", 200), headers=headers, body=body, delay_ms=d.get("delay_ms", 0))


@dataclass
class UpstreamSpec:
    """echo (the default), a canned reply, first-matching rules, or down (connection refused)."""
    echo: bool = True
    reply: Reply | None = None
    rules: list[Rule] = field(default_factory=list)
    down: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "UpstreamSpec":
        canned = any(k in d for k in ("status", "headers", "body"))
        return cls(echo=d.get("echo", not canned), reply=_reply(d) if canned else None,
                   rules=[Rule(r.get("when", {}), _reply(r["reply"])) for r in d.get("rules", [])],
                   down=d.get("down", False))

    def respond(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Reply:
        for rule in self.rules:
            if rule.matches(method, path, headers):
                return rule.reply
        if self.reply is not None and not self.echo:
            return self.reply
        delay = self.reply.delay_ms if self.reply else 0
        return Reply(200, [("content-type", "application/json")], echo_body(method, path, headers, body), delay)


# The `server` header every test upstream sends (aiohttp's own would name versions).
SERVER_NAME = "envoyext-upstream"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UpstreamServers:
    """Real HTTP/1.1 servers on loopback, one per cluster, recording what they receive.

    Runs an aiohttp event loop on a background thread so the caller can stay synchronous.
    Use as a context manager; `received[name]` lists requests in arrival order."""

    def __init__(self, specs: dict[str, UpstreamSpec], via: str = TEST_PROXY.name):
        self.specs = specs
        self.via = via  # the proxy in front of these servers (ProxyIdentity.name): who sent what they receive
        self.ports: dict[str, int] = {}
        self.received: dict[str, list] = {name: [] for name in specs}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list = []
        self._held: list[socket.socket] = []   # the ports of `down` upstreams, kept closed

    def __enter__(self) -> "UpstreamServers":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def address(self, name: str) -> tuple[str, int]:
        return "127.0.0.1", self.ports[name]

    def take(self) -> dict[str, list]:
        """Return and forget everything received so far."""
        with self._lock:
            out = self.received
            self.received = {name: [] for name in self.specs}
        return out

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start_all())
            except BaseException as e:  # reported to the caller below
                failure.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._stop_all())
            self._loop.close()

        self._thread = threading.Thread(target=main, name="envoyext-upstreams", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]

    def stop(self) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start_all(self) -> None:
        from aiohttp import web
        for name, spec in self.specs.items():
            if spec.down:
                # Nothing listens: connection refused. The port is held by a bound socket that never
                # listens (no SO_REUSEADDR), so no other process (another Envoy's port-0 admin, seen
                # in CI) can take it meanwhile and answer in its place.
                holder = socket.socket()
                holder.bind(("127.0.0.1", 0))
                self._held.append(holder)
                self.ports[name] = holder.getsockname()[1]
                continue
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handler(name, spec))
            # Take any header Envoy forwards (its request head limit is 60 KiB), not aiohttp's 8 KiB lines.
            runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                   max_line_size=64 * 1024, max_field_size=64 * 1024)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.ports[name] = runner.addresses[0][1]
            self._runners.append(runner)

    async def _stop_all(self) -> None:
        for r in self._runners:
            await r.cleanup()
        for s in self._held:
            s.close()

    def _handler(self, name: str, spec: UpstreamSpec):
        from aiohttp import web

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.read()
            except ConnectionResetError:
                # The client went away mid-body (Envoy reset the upstream stream); nothing to record or
                # answer. aiohttp would print its traceback on stderr; the case's verdict has the story.
                return web.Response(status=499)
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.raw_headers]
            path = request.raw_path
            with self._lock:
                self.received[name].append(Received(request.method, path, headers, body, proxy=self.via))
            reply = spec.respond(request.method, path, headers, body)
            if reply.delay_ms:
                await asyncio.sleep(reply.delay_ms / 1000)
            # StreamResponse adds no content-type of its own: the reply's headers are all we send.
            resp = web.StreamResponse(status=reply.status)
            for k, v in reply.headers:
                resp.headers.add(k, v)
            if "server" not in resp.headers:
                resp.headers["server"] = SERVER_NAME
            resp.content_length = len(reply.body)
            try:
                await resp.prepare(request)
                await resp.write(reply.body)
                await resp.write_eof()
            except ConnectionResetError:
                pass  # the client gave up (a callout timeout shorter than delay_ms): expected
            return resp

        return handle
