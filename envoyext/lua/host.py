"""The lupa side of the Lua emulator: one LuaJIT state per script, and what scripts call out to.

Envoy keeps one lua_State per script (per worker); so do we. Each state runs `runtime.lua`, which
implements the stream handle and its objects in Lua, and calls back into Python only through
`Callouts` (httpCall, crypto, base64, the clock). A stream direction is one call into Lua
(`LuaScript.run`) with the headers as one NUL-separated string and the body as one string, and
one return with whatever changed: that keeps Python<->Lua crossings to a handful per request.

Strings cross as latin-1 so bodies keep their bytes; header text that is not ASCII is carried as
its UTF-8 bytes (Envoy's header maps hold bytes, not text).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import lupa.luajit21 as lupa

from envoyext.emulated.stream import FilterDidNotReturn
from envoyext.envoy import facts
from envoyext.errors import BuildError
from envoyext.messages import DEFAULT_RESPONSE_TIMEOUT_MS, wire_bytes

RUNTIME_SOURCE = resources.files("envoyext.lua").joinpath("runtime.lua").read_text()

# The deadline on one call into a script (Envoy has none: its worker would spin in an endless
# loop for good). A count hook looks at the clock every HOOK_INSTRUCTIONS VM instructions and
# raises once the deadline passed; LuaJIT calls hooks only from its interpreter, so states run
# with the JIT compiler off. Once past it, the hook fires at every instruction, so a script that
# catches the error with pcall and loops on is stopped at its first instruction outside the pcall.
HOOK_INSTRUCTIONS = 100_000
DEADLINE_GUARD = f"""
local sethook = debug.sethook
return function(expired)
  local hook
  hook = function()
    if expired() then
      sethook(hook, "", 1)
      error("the script ran past its deadline", 0)
    end
  end
  return function() sethook(hook, "", {HOOK_INSTRUCTIONS}) end
end
"""

# The address Envoy's async client puts in x-forwarded-for for a Lua httpCall (observed, 1.40).
ASYNC_CLIENT_ADDRESS = "192.0.2.2"


def wire(s: str) -> str:
    """Python text -> the latin-1 'byte string' lupa hands to Lua."""
    return s if s.isascii() else s.encode("utf-8").decode("latin-1")


def text(s: str) -> str:
    """Back from Lua: the bytes as UTF-8 text."""
    return s if s.isascii() else s.encode("latin-1").decode("utf-8", "replace")


def headers_blob(headers) -> str:
    """Header pairs for the runtime, one char per wire octet (header strs already are: see
    messages.wire_bytes; the runtime's latin-1 encoding hands each char to Lua as that byte)."""
    blob = "\0".join(map("\0".join, headers))
    if blob.isascii():
        return blob
    return "\0".join(wire_bytes(s).decode("latin-1") for pair in headers for s in pair)


def headers_from_blob(blob: str | None) -> list[tuple[str, str]]:
    if not blob:
        return []
    it = iter(blob.split("\0"))
    return list(zip(it, it))


def logs_from_blob(blob: str | None) -> list[tuple[str, str]]:
    """runtime.lua's take_logs(): "level\0length\0message" repeated (messages may hold NULs)."""
    out: list[tuple[str, str]] = []
    pos = 0
    while blob and pos < len(blob):
        a = blob.index("\0", pos)
        b = blob.index("\0", a + 1)
        end = b + 1 + int(blob[a + 1:b])
        out.append((blob[pos:a], text(blob[b + 1:end])))
        pos = end
    return out


class Callouts:
    """What a script reaches outside Lua for. `call` answers httpCall:
    call(ctx, cluster, headers, body, timeout_ms, asynchronous) -> (status, headers, body)."""

    def __init__(self, has_cluster: Callable[[str], bool], call: Callable[..., tuple[int, list, bytes]],
                 now_us: Callable[[], int], stats: "StatsStore | None" = None):
        self.has_cluster = has_cluster
        self.call = call
        self.now_us = now_us
        self.stats = stats if stats is not None else StatsStore("")
        self._keys: dict[int, Any] = {}

    # -- functions handed to Lua ------------------------------------------------------------------
    def http_call(self, ctx, cluster, blob, body, timeout_ms, asynchronous):
        status, headers, rbody = self.call(ctx, text(cluster), headers_from_blob(blob),
                                           b"" if body is None else body.encode("latin-1"),
                                           int(timeout_ms), bool(asynchronous))
        return str(status), headers_blob([(":status", str(status))] + list(headers)), rbody.decode("latin-1")

    @staticmethod
    def b64encode(s: str) -> str:
        return base64.b64encode(s.encode("latin-1")).decode("ascii")

    @staticmethod
    def b64decode(s: str):
        # absl::Base64Unescape accepts padded or unpadded standard base64; nil on anything else.
        raw = s.encode("latin-1")
        try:
            stripped = raw.rstrip(b"=")
            if len(raw) - len(stripped) > 2 or b"=" in stripped:
                return None
            return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            return None

    def import_public_key(self, der: str):
        from cryptography.hazmat.primitives.serialization import load_der_public_key
        try:
            key = load_der_public_key(der.encode("latin-1"))
        except (ValueError, TypeError):
            return None
        ident = len(self._keys) + 1
        self._keys[ident] = key
        return ident

    def verify_signature(self, hash_name: str, ident: int, sig: str, data: str):
        """Envoy's Crypto::UtilityImpl::verifySignature: EVP_DigestVerify with the key's default
        padding (PKCS#1 v1.5 for RSA), its messages on failure."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        algo = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
                "sha384": hashes.SHA384, "sha512": hashes.SHA512}.get(hash_name.lower())
        if algo is None:
            return False, f"{hash_name} is not supported."
        key = self._keys[int(ident)]
        sig_b, data_b = sig.encode("latin-1"), data.encode("latin-1")
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(sig_b, data_b, padding.PKCS1v15(), algo())
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig_b, data_b, ec.ECDSA(algo()))
            else:
                key.verify(sig_b, data_b)
        except (InvalidSignature, ValueError, TypeError):
            return False, "Failed to verify digest. Error code: 0"
        return True, None

    @staticmethod
    def is_ip_authority(host: str) -> bool:
        """Http::Utility::parseAuthority(host).is_ip_address_: an IP, optionally with a port."""
        h = host
        if h.startswith("["):
            end = h.find("]")
            if end < 0:
                return False
            h = h[1:end]
        elif h.count(":") == 1:
            h = h.split(":", 1)[0]
        try:
            ipaddress.ip_address(h)
            return True
        except ValueError:
            return False


class StatsStore:
    """The filter's stats scope as Envoy's store keeps it, shared by every script of one filter:
    names are `prefix + name` (admin /stats names). Counters and gauges are uint64 in Envoy: a
    gauge taken below zero wraps (observed: 10 - 100 reads back as 2^64 - 90)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, int] = {}
        self.histograms: dict[str, list[float]] = {}

    def op(self, kind: int, name: str, amount: float):
        """kind 1: counter add (0: create/read), 2: gauge add, 3: gauge set, 4: histogram record
        (-1: create). Returns a counter's or gauge's value as Lua reads it (a double)."""
        full = self.prefix + text(name)
        n = int(amount)
        if kind == 1:
            v = self.counters[full] = self.counters.get(full, 0) + n
            return float(v)
        if kind == 2:
            v = self.gauges[full] = (self.gauges.get(full, 0) + n) % 2**64
            return float(v)
        if kind == 3:
            self.gauges[full] = n
            return float(n)
        values = self.histograms.setdefault(full, [])
        if n >= 0:
            values.append(float(n))
        return None

    def values(self) -> dict[str, int]:
        """Counters and gauges as admin /stats lists them: one entry per name, a histogram's name
        hiding a counter's and a counter's a gauge's (observed)."""
        out = {k: v for k, v in self.gauges.items() if k not in self.histograms}
        out.update((k, v) for k, v in self.counters.items() if k not in self.histograms)
        return out


class ScriptLoadError(BuildError):
    """Envoy rejects the configuration: 'script load error: <Lua message>'."""


class LuaScript:
    """One script in its own LuaJIT state, loaded as Envoy loads it."""

    def __init__(self, code: str, callouts: Callouts, *, source: str = "<lua>"):
        self.lua = lupa.LuaRuntime(encoding="latin-1", register_eval=False, register_builtins=False,
                                   unpack_returned_tuples=True)
        self.lua.execute("jit.off()")
        self.deadline_ms = DEFAULT_RESPONSE_TIMEOUT_MS
        self._deadline = 0.0
        self._arm = self.lua.execute(DEADLINE_GUARD)(self._expired)
        self._disarm = self.lua.eval("debug.sethook")  # called from Python: no Lua instruction to hook
        g = self.lua.globals()
        rt = self.lua.execute(RUNTIME_SOURCE)
        rt.install_compat(g)
        g.python = None  # scripts see what Envoy's state has, not lupa's bridge
        g.EnvoyTimestampResolution = self.lua.table_from({"MILLISECOND": 0, "MICROSECOND": 1})
        c = callouts
        rt.init(self.lua.table_from({
            "has_cluster": c.has_cluster, "http_call": c.http_call, "local_address": ASYNC_CLIENT_ADDRESS,
            "b64encode": c.b64encode, "b64decode": c.b64decode, "now_us": c.now_us,
            "import_public_key": c.import_public_key, "verify_signature": c.verify_signature,
            "is_ip_authority": c.is_ip_authority, "stat": c.stats.op,
            "request_headers": lambda ctx: headers_blob(ctx.request_headers()),
            "stream_facts": lambda ctx: ctx.stream_facts(self), "inline": self._inline_headers()}))
        err = rt.load(wire(code), g)
        if err is not None:
            raise ScriptLoadError(f"script load error: {text(err)}", file=source)
        self.rt = rt
        self._run = rt.run
        self.null = rt.NULL
        self.has_request = rt.functions.envoy_on_request is not None
        self.has_response = rt.functions.envoy_on_response is not None

    def _inline_headers(self):
        """Envoy's inline header names per map (envoyext.envoy.facts), as the runtime's sets."""
        maps = {"request_headers": facts.INLINE_REQUEST_HEADERS, "request_trailers": facts.INLINE_REQUEST_TRAILERS,
                "response_headers": facts.INLINE_RESPONSE_HEADERS,
                "response_trailers": facts.INLINE_RESPONSE_TRAILERS}
        return self.lua.table_from({key: self.lua.table_from(dict.fromkeys(names, True))
                                    for key, names in maps.items()})

    def _expired(self) -> bool:
        return time.monotonic() > self._deadline

    def counters(self) -> tuple[int, int]:
        errors, executions = self.rt.counters()
        return int(errors), int(executions)

    def to_lua(self, value: Any):
        """A google.protobuf.Value-shaped Python value (from YAML/JSON) in the runtime's stored
        form: structs as tables, lists marked with __list, null as the runtime's NULL."""
        if value is None:
            return self.null
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return wire(value)
        if isinstance(value, dict):
            return self.lua.table_from({wire(str(k)): self.to_lua(v) for k, v in value.items()})
        if isinstance(value, (list, tuple)):
            t = self.lua.table_from([self.to_lua(v) for v in value])
            t["__list"] = len(value)
            return t
        return wire(str(value))

    def run(self, function: str, ctx, stream, headers, body: bytes | None, trailers, split: bool = True):
        """Run envoy_on_request / envoy_on_response over a whole message.

        `ctx` answers stream_facts() when the script first asks about the stream; `stream` is
        the previous direction's RunResult.stream (None for a new stream). `split`: the body
        arrives as an HTTP/1 codec delivers it (the data, then an empty end-of-stream chunk).
        Returns None when the script does not define the function."""
        self._deadline = time.monotonic() + self.deadline_ms / 1000
        self._arm()
        try:
            res = self._run(function, ctx, stream, headers_blob(headers),
                            None if body is None else body.decode("latin-1"),
                            None if trailers is None else headers_blob(trailers), split)
        except lupa.LuaError:
            if self._expired():  # the guard's error escaped the runtime's own handlers
                raise FilterDidNotReturn(f"{function} did not return within {self.deadline_ms} ms") from None
            raise
        finally:
            self._disarm()
        if self._expired():
            raise FilterDidNotReturn(f"{function} did not return within {self.deadline_ms} ms")
        if res is None:
            return None
        return RunResult(headers, *res)


class RunResult:
    """What one direction changed. Each field is None when unchanged."""
    __slots__ = ("stream", "headers", "body", "trailers", "reply_status", "reply_headers", "reply_body",
                 "clear_route", "logs", "drain", "override_strict")

    def __init__(self, sent, stream, headers, body, clear_route, extra):
        self.stream = stream
        if headers is False:
            self.headers = None
        elif headers[:1] == "\x01":  # only appended: the new entries after what was sent
            self.headers = list(sent) + headers_from_blob(headers[1:])
        else:
            self.headers = headers_from_blob(headers)
        self.body = body.encode("latin-1") if body is not False else None
        self.clear_route = clear_route
        if extra is False:
            self.trailers = self.reply_status = self.reply_body = None
            self.reply_headers, self.logs, self.drain = [], [], False
            self.override_strict = False
            return
        self.drain = bool(extra["drain"])
        self.override_strict = bool(extra["override_strict"])
        t, status, rbody = extra["trailers"], extra["reply_status"], extra["reply_body"]
        self.trailers = headers_from_blob(t) if t is not None else None
        self.reply_status = int(status) if status is not None else None
        self.reply_headers = headers_from_blob(extra["reply_headers"])
        self.reply_body = rbody.encode("latin-1") if rbody is not None else None
        self.logs = logs_from_blob(extra["logs"])
