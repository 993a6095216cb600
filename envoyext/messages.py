"""HTTP messages as envoyext handles them: ordered header pairs (names lower-case, repeats
allowed), the request a case sends, the response it gets, and a request as an upstream saw it.
Shared by the scenario format, the test upstreams and every runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class Request:
    method: str = "GET"
    path: str | None = "/"          # None for CONNECT: its target is the authority
    authority: str = "example.com"
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trailers: Headers = field(default_factory=list)

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


@dataclass
class Response:
    status: int
    headers: Headers
    body: bytes = b""
