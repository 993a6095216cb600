"""HTTP messages as envoyext handles them: ordered header pairs (names lower-case, repeats
allowed), the request a case sends, the response it gets, and a request as an upstream saw it.
Shared by the scenario format, the test upstreams and every runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoyext.envoy.identity import TEST_PROXY

Headers = list[tuple[str, str]]

def header_list(spec: dict | None) -> Headers:
    """YAML header mapping (values may be lists for repeated headers) -> ordered pairs."""
    out: Headers = []
    for name, value in (spec or {}).items():
        name = str(name).lower()
        if isinstance(value, list):
            out += [(name, header_text(v)) for v in value]
        else:
            out.append((name, value if isinstance(value, str) else header_text(value)))
    return out


def wire_bytes(s: str) -> bytes:
    """A header str as octets: one byte per char (header strs are Latin-1-decoded wire bytes);
    text beyond Latin-1, which only the Python APIs can hand in, goes as UTF-8, as aiohttp sends it."""
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def header_text(v: Any) -> str:
    """A YAML scalar as a header value (YAML booleans as HTTP spells them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def values(headers: Headers, name: str) -> list[str]:
    name = name.lower()
    return [v for k, v in headers if k == name]


def first(headers: Headers, name: str) -> str | None:
    vs = values(headers, name)
    return vs[0] if vs else None


# How long a case waits for its response, in every runner (request.timeout_ms): longer than
# Envoy's default route timeout (15 s), so whatever Envoy answers by its own timeouts arrives.
DEFAULT_RESPONSE_TIMEOUT_MS = 20_000
NO_RESPONSE = "no response within"


def no_response(timeout_ms: int) -> str:
    """What every runner reports for a case that got no response in time. Live Envoy cannot say
    why (its worker may be spinning in the filter); the emulators say the same, so the two agree."""
    return (f"{NO_RESPONSE} {timeout_ms} ms: the filter did not return (endless loop?) or the exchange "
            "takes longer (fix: end the loop, or raise the case's request.timeout_ms)")


def is_no_response(error: str | None) -> bool:
    return bool(error) and error.startswith(NO_RESPONSE)


@dataclass
class Request:
    method: str = "GET"
    path: str | None = "/"          # None for CONNECT: its target is the authority
    authority: str = "example.com"
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trailers: Headers = field(default_factory=list)
    timeout_ms: int = DEFAULT_RESPONSE_TIMEOUT_MS

    @property
    def target(self) -> str:
        """The request line's target: the path, or for CONNECT the authority (authority form)."""
        return self.authority if self.path is None else self.path

    def framing(self) -> Headers:
        """The framing headers the test client adds unless the case sets its own: chunked when
        there are trailers, else a length for a body or for a method that carries one."""
        if any(k in ("content-length", "transfer-encoding") for k, _ in self.headers):
            return []
        if self.trailers:
            return [("transfer-encoding", "chunked")]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            return [("content-length", str(len(self.body)))]
        return []


@dataclass
class Received:
    """One request as a test upstream (or named cluster) received it."""
    method: str
    path: str
    headers: Headers
    body: bytes = b""
    proxy: str = TEST_PROXY.name  # the proxy that sent it (its ProxyIdentity.name)


@dataclass
class Response:
    status: int
    headers: Headers
    body: bytes = b""


# ---------------------------------------------------------------------------------------------
# What the live client (http.client) can put on the wire, and what Envoy 1.40's HTTP/1 codec takes.

# RFC 9110 tchar: a header name or method outside these is not a token.
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Methods Envoy's Balsa codec knows (balsa_parser.cc isMethodValid); any other gets a 400 of its own
# shape before a filter runs (measured: `QUERY` an empty body, `M-SEARCH` "Bad Request").
ENVOY_METHODS = frozenset(
    "ACL BIND CHECKOUT CONNECT COPY DELETE GET HEAD LINK LOCK MERGE MKACTIVITY MKCALENDAR MKCOL MOVE MSEARCH "
    "NOTIFY OPTIONS PATCH POST PROPFIND PROPPATCH PURGE PUT REBIND REPORT SEARCH SOURCE SUBSCRIBE TRACE UNBIND "
    "UNLINK UNLOCK UNSUBSCRIBE".split())


def is_token(s: str) -> bool:
    return bool(s) and all(c in TOKEN_CHARS for c in s)


def _latin1(s: str) -> bool:
    return all(ord(c) < 256 for c in s)


def _value_problem(value: str) -> str | None:
    """Why http.client will not send this header value as written: it encodes values as
    Latin-1, refuses a bare CR/LF and turns CR/LF + space into a folded line (another value)."""
    if not _latin1(value):
        return "has characters outside Latin-1, which HTTP/1 cannot carry"
    if "\r" in value or "\n" in value:
        return "holds a CR or LF, which would end the header line"
    return None


def _name_problem(name: str) -> str | None:
    """Why http.client will not send this header name: ASCII only, no ':', CR or LF, and no
    whitespace first (whitespace later is sent, and Envoy answers 400: a runner matter)."""
    if not name.isascii() or not name or name[0].isspace() or any(c in name for c in ":\r\n"):
        return "cannot be sent: HTTP/1 names are ASCII, without ':', CR, LF or leading whitespace"
    return None


def unsendable(rq: Request) -> tuple[str, str, str] | None:
    """The first part of `rq` the live client cannot send as written: (field under `request`,
    what is wrong, the fix); None when it can all go on the wire.

    What the client can send but Envoy refuses (a name that is not a token, a control
    character in a value, oversized headers) is left to the runners: both answer as Envoy does.
    Trailers are held to Envoy's rules too: Envoy refuses a bad trailer only after the filter and
    the upstream have seen the request, a race no runner can report the same way twice."""
    if rq.method not in ENVOY_METHODS:
        return ("method", f"'{rq.method}' is not a method Envoy 1.40's HTTP/1 codec accepts "
                "(it answers 400 itself)", "use a method such as GET, POST, PUT, PATCH, DELETE, OPTIONS")
    if not rq.target.isascii() or any(c <= " " or c == "\x7f" for c in rq.target):
        return ("path", "holds a space, a control or a non-ASCII character, which a request line cannot carry",
                "percent-encode it: %20 for a space, %C3%A9 for é")
    why = _value_problem(rq.authority)
    if why:
        return ("authority", why, "use a plain host[:port]")
    for part, pairs in (("headers", rq.headers), ("trailers", rq.trailers)):
        for name, value in pairs:
            why = _name_problem(name)
            if why is None and part == "trailers" and not is_token(name):
                why = "is not an HTTP token (RFC 9110): Envoy refuses it mid-request"
            if why:
                return (f"{part}.{name}", f"header name {why}",
                        "use letters, digits and - (method, path, authority have their own fields)")
            why = _value_problem(value)
            if why is None and part == "trailers" and codec_bad_value(value):
                why = "holds a control character, which Envoy refuses mid-request"
            if why:
                return (f"{part}.{name}", f"value {why}", "percent-encode or base64 the value")
    return None


def codec_bad_value(value: str) -> bool:
    """A header value Envoy's codec answers 400 to: a control character other than tab (measured:
    NUL, 0x01, DEL); obs-text (0x80-0xff) passes."""
    return any((c < " " and c != "\t") or c == "\x7f" for c in value)


def request_head(rq: Request) -> bytes:
    """The request line and header block exactly as the live client writes them (http.client:
    `name: value` lines, CRLF-separated, an empty line last); Envoy's size limit counts these bytes."""
    lines = [f"{rq.method} {rq.target} HTTP/1.1", f"host: {rq.authority}"]
    lines += [f"{k}: {v}" for k, v in [*rq.headers, *rq.framing()] if k != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
