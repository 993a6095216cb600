"""One HTTP stream through a Wasm filter, callback by callback, as Envoy's filter manager drives it.

The request and response paths are generators: they yield whenever the filter has paused the
stream (a StopIteration/Pause status) and Envoy would wait for an event - a callout answer, a
queue wake-up, a tick - that calls proxy_continue_stream. Whoever drives the generator (the
emulated Envoy answering callouts from the scenario's clusters, or a test answering them by
hand) delivers that event and resumes it.

Envoy facts encoded here: StopIteration from on_*_headers means "stop all" (ABI 0.2.x default);
a body chunk returned with StopIterationAndBuffer is buffered and the next call sees the whole
buffer; a local reply (from any callback) ends decoding at once; a VM failure answers 503
(details wasm_fail_stream) unless the plugin fails open, and the filter is skipped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

from envoyext.emulated.stream import LocalReply
from envoyext.wasm.abi import (
    AbiVersion,
    BufferType,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    MapType,
    StreamType,
)
from envoyext.wasm.context import Buffer, HttpContext, Wasm, data_status, headers_status, trailers_status

WAIT = object()   # what the flows yield while the stream is paused


def http1_chunks(body: bytes, trailers: bool = False) -> list[bytes]:
    """How Envoy's HTTP/1 codec hands a message body to filters: the data (end_stream false),
    then an empty end_stream chunk; with trailers, the data and then the trailers end it."""
    if trailers:
        return [body] if body else []
    return [body, b""] if body else []


class StreamFlow:
    """The filter's instance for one stream. `ctx` is None when the VM had already failed: the
    filter is skipped (fail open) or answers 503 (fail closed)."""

    def __init__(self, wasm: Wasm, stream, *, fail_open: bool, body_chunks: list[bytes] | None = None,
                 response_chunks: list[bytes] | None = None):
        self.wasm = wasm
        self.stream = stream
        self.fail_open = fail_open
        self.ctx: HttpContext | None = None
        self.reply: LocalReply | None = None          # set when decoding ended in a local reply
        self.encode_reply: LocalReply | None = None   # set when encoding replaced the response
        self.request_chunks = body_chunks
        self.response_chunks = response_chunks
        if not wasm.failed:
            self.ctx = wasm.new_http_context(stream)

    # -- helpers -------------------------------------------------------------------------------
    def _vm_failed(self) -> bool:
        """CHECK_FAIL: a failed VM fails the stream once (503) or lets it through (fail open)."""
        if (self.ctx is not None and not self.wasm.failed) or self.fail_open:
            return False
        if self.reply is None:
            self.reply = LocalReply(503, details="wasm_fail_stream")
        return True

    def _passthrough(self) -> bool:
        """Fail open after a VM failure: the filter is skipped."""
        return self.fail_open and (self.ctx is None or self.wasm.failed)

    def _stopped(self) -> bool:
        """After a callback: did the stream end (local reply or failure)?"""
        if self.wasm.failed:
            return self._vm_failed()
        if self.ctx.local_reply is None:
            return False
        self.reply = self.ctx.local_reply
        return True

    def _wait(self, which: int) -> Iterator:
        """Yield until proxy_continue_stream(which), a local reply, or a VM failure."""
        while True:
            if which in self.ctx.continued:
                self.ctx.continued.discard(which)
                return
            if self.wasm.failed or self.ctx.local_reply is not None:
                return
            yield WAIT

    # -- the request path ----------------------------------------------------------------------
    def decode(self) -> Iterator:
        s = self.stream
        if self._passthrough() or self._vm_failed():
            return
        ctx, w = self.ctx, self.wasm
        w.call(ctx, "proxy_on_context_create", ctx.id, ctx.root.id)
        ctx.created_in_vm = True
        if self._stopped():
            return
        has_trailers = bool(s.request_trailers)
        chunks = self.request_chunks if self.request_chunks is not None else http1_chunks(s.request_body, has_trailers)
        eos = not chunks and not has_trailers
        ctx.maps[MapType.RequestHeaders] = s.request_headers
        if w.abi == AbiVersion.V0_1_0:
            r = w.call(ctx, "proxy_on_request_headers", ctx.id, len(s.request_headers))
        else:
            r = w.call(ctx, "proxy_on_request_headers", ctx.id, len(s.request_headers), int(eos))
        if self._stopped():
            return
        status = headers_status(w, ctx, r)
        if status == FilterHeadersStatus.Continue or w.failed:
            ctx.maps.pop(MapType.RequestHeaders, None)
        else:
            yield from self._wait(StreamType.Request)
            if self._stopped():
                return
            # Envoy buffered the body meanwhile; the filter gets it in one piece on resume.
            if len(chunks) > 1:
                chunks = [b"".join(chunks)]
        s.request_body = yield from self._body(chunks, has_trailers, BufferType.HttpRequestBody,
                                               "proxy_on_request_body", StreamType.Request)
        if self.reply is not None or ctx.local_reply is not None:
            return
        if has_trailers and not self._passthrough():
            ctx.maps[MapType.RequestTrailers] = s.request_trailers
            r = w.call(ctx, "proxy_on_request_trailers", ctx.id, len(s.request_trailers))
            if self._stopped():
                return
            if trailers_status(ctx, r) != FilterTrailersStatus.Continue:
                yield from self._wait(StreamType.Request)
                if self._stopped():
                    return
            ctx.maps.pop(MapType.RequestTrailers, None)

    def _body(self, chunks, has_trailers, buf_type, callback, stream_type) -> Iterator:
        """Feed body chunks; return the body as forwarded (buffered data included, as modified)."""
        out = b""
        pending = b""
        ctx = self.ctx
        for i, chunk in enumerate(chunks):
            if self._passthrough():
                out += pending + chunk
                pending = b""
                continue
            eos = i == len(chunks) - 1 and not has_trailers
            buf = Buffer(pending + chunk, mutable=True)
            ctx.body[buf_type] = buf
            r = self.wasm.call(ctx, callback, ctx.id, buf.size(), int(eos))
            if self._stopped():
                return out
            status = data_status(ctx, r)
            if status == FilterDataStatus.Continue or self.wasm.failed:
                out += buf.data
                pending = b""
                ctx.body[buf_type] = None
            elif eos:
                yield from self._wait(stream_type)
                if self._stopped():
                    return out
                out += buf.data
                pending = b""
                ctx.body[buf_type] = None
            else:
                pending = buf.data      # buffered: the next call sees all of it
        return out + pending

    # -- the response path ---------------------------------------------------------------------
    def encode(self) -> Iterator:
        """Response headers/body/trailers. Skipped once the VM failed (after the fail-closed 503,
        or skipped altogether failing open), as Envoy does."""
        s = self.stream
        ctx, w = self.ctx, self.wasm
        if ctx is None or w.failed:
            return
        ctx.local_reply = None
        has_trailers = bool(s.response_trailers)
        # A local reply's body comes in one end_stream chunk.
        chunks = self.response_chunks if self.response_chunks is not None else (
            ([s.response_body] if s.response_body else []) if getattr(s, "local_reply", False)
            else http1_chunks(s.response_body, has_trailers))
        eos = not chunks and not has_trailers
        ctx.maps[MapType.ResponseHeaders] = s.response_headers
        if w.abi == AbiVersion.V0_1_0:
            r = w.call(ctx, "proxy_on_response_headers", ctx.id, len(s.response_headers))
        else:
            r = w.call(ctx, "proxy_on_response_headers", ctx.id, len(s.response_headers), int(eos))
        if self._encode_stopped():
            return
        if headers_status(w, ctx, r) == FilterHeadersStatus.Continue:
            ctx.maps.pop(MapType.ResponseHeaders, None)
        else:
            yield from self._wait(StreamType.Response)
            if self._encode_stopped():
                return
            if len(chunks) > 1:
                chunks = [b"".join(chunks)]
        s.response_body = yield from self._body(chunks, has_trailers, BufferType.HttpResponseBody,
                                                "proxy_on_response_body", StreamType.Response)
        if self._encode_stopped():
            return
        if has_trailers:
            ctx.maps[MapType.ResponseTrailers] = s.response_trailers
            r = w.call(ctx, "proxy_on_response_trailers", ctx.id, len(s.response_trailers))
            if self._encode_stopped():
                return
            if trailers_status(ctx, r) != FilterTrailersStatus.Continue:
                yield from self._wait(StreamType.Response)
                self._encode_stopped()

    def _encode_stopped(self) -> bool:
        """A failure or a local reply while encoding replaces the response (headers not sent yet)."""
        if self.encode_reply is not None:
            return True
        if self.wasm.failed:
            if self.fail_open:
                return True
            self.encode_reply = LocalReply(503, details="wasm_fail_stream")
            return True
        if self.ctx.local_reply is not None:
            self.encode_reply = self.ctx.local_reply
            return True
        return False

    # -- the end -------------------------------------------------------------------------------
    def complete(self) -> None:
        """on_log (access-log phase), then on_done and on_delete, as Envoy destroys the stream."""
        ctx, w = self.ctx, self.wasm
        if ctx is None:
            return
        if w.failed or not ctx.created_in_vm:
            w.contexts.pop(ctx.id, None)
            return
        ctx.access_log_phase = True
        w.call(ctx, "proxy_on_log", ctx.id)
        ctx.access_log_phase = False
        if not w.failed:
            w.call(ctx, "proxy_on_done", ctx.id)
        if not w.failed:
            w.call(ctx, "proxy_on_delete", ctx.id)
        w.contexts.pop(ctx.id, None)
