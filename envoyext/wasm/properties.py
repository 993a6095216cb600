"""proxy_get_property / proxy_set_property: Envoy's attributes and their byte encodings.

Paths arrive as NUL-separated segments ("request\\0headers\\0x-a"). Envoy resolves the first
segment to a CEL value (its StreamActivation plus the Wasm-specific plugin_* and connection_id)
and walks maps by key; the result is serialized natively: strings and bytes as is, int64/uint64,
timestamps and durations (ns) as 8 little-endian bytes, bools as one byte, maps as serialized
pairs, messages as protobuf bytes. A value set with proxy_set_property is kept in the stream's
filter state under "wasm.<path>" and read back by the same path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.wasm import headers as H
from envoyext.wasm.abi import WasmResult, serialize_pairs

if TYPE_CHECKING:
    from envoyext.wasm.context import Context


def i64(v: int) -> bytes:
    return struct.pack("<q", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def _proto_string(field: int, value: str) -> bytes:
    return _proto_bytes(field, value.encode())


def _proto_bytes(field: int, data: bytes) -> bytes:
    out = bytes([(field << 3) | 2])
    n = len(data)
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n]) + data


# Route metadata (xds.route_metadata), as Envoy 1.40 serializes it (measured): the whole value is
# the Metadata proto; `filter_metadata` and each Struct below it are maps (serialized pairs);
# strings are raw bytes, numbers 8-byte doubles, bools one byte. The order of a map's entries in
# a whole value is protobuf's hash order in Envoy (no order a filter can rely on); here the config's.


def metadata_value(filter_metadata: dict[str, dict]) -> Lazy:
    namespaces = {ns: _struct_value(fields) for ns, fields in filter_metadata.items()}
    return Lazy({"filter_metadata": namespaces}.get, lambda: _metadata_proto(filter_metadata))


def _struct_value(fields: dict) -> dict:
    return {k: _value(v) for k, v in fields.items()}


def _value(v: Any) -> Any:
    if isinstance(v, dict):
        return _struct_value(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return struct.pack("<d", float(v))
    return v


def _metadata_proto(filter_metadata: dict[str, dict]) -> bytes:
    """google.protobuf Metadata{filter_metadata: map<string, Struct> = 1}."""
    return b"".join(_proto_bytes(1, _proto_string(1, ns) + _proto_bytes(2, _struct_proto(fields)))
                    for ns, fields in filter_metadata.items())


def _struct_proto(fields: dict) -> bytes:
    """Struct{fields: map<string, Value> = 1}."""
    return b"".join(_proto_bytes(1, _proto_string(1, str(k)) + _proto_bytes(2, _value_proto(v)))
                    for k, v in fields.items())


def _value_proto(v: Any) -> bytes:
    """Value{null_value = 1; number_value = 2; string_value = 3; bool_value = 4; struct_value = 5;
    list_value = 6 (ListValue{values = 1})}."""
    if v is None:
        return bytes([1 << 3, 0])
    if isinstance(v, bool):
        return bytes([4 << 3, int(v)])
    if isinstance(v, (int, float)):
        return bytes([(2 << 3) | 1]) + struct.pack("<d", float(v))
    if isinstance(v, str):
        return _proto_string(3, v)
    if isinstance(v, dict):
        return _proto_bytes(5, _struct_proto(v))
    return _proto_bytes(6, b"".join(_proto_bytes(1, _value_proto(x)) for x in v))


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port or 0)


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_ASCII_SPACE = " \t\n\v\f\r"


def simple_atoi(text: str | None) -> int | None:
    """absl::SimpleAtoi into an int64, as Envoy's attributes parse a header: ASCII whitespace
    around an optional sign and ASCII digits; anything else, or a value outside int64, is None
    (the attribute is then absent, never an error)."""
    if text is None:
        return None
    t = text.strip(_ASCII_SPACE)
    digits = t[1:] if t[:1] in ("+", "-") else t
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(t)
    return value if INT64_MIN <= value <= INT64_MAX else None


def encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return i64(value)
    if isinstance(value, str):
        return H.raw(value)
    if isinstance(value, dict):
        return serialize_pairs([(H.raw(str(k)), encode(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return serialize_pairs([(encode(v), b"") for v in value])
    raise TypeError(type(value))


class Lazy:
    """A map-valued attribute whose keys are resolved on demand (Envoy's CEL wrappers)."""

    def __init__(self, lookup: Callable[[str], Any], items: Callable[[], dict] | None = None):
        self.lookup = lookup
        self.items = items

    def get(self, key: str):
        return self.lookup(key)

    def whole(self):
        return self.items() if self.items else None


# The TLS fields of `connection` (CEL's extractSslInfo), each from one Ssl::ConnectionInfo value:
# strings as they are; of the SAN lists only the first entry, absent when the list is empty.
_TLS_STRINGS = {"tls_version": "tlsVersion", "subject_local_certificate": "subjectLocalCertificate",
                "subject_peer_certificate": "subjectPeerCertificate",
                "sha256_peer_certificate_digest": "sha256PeerCertificateDigest"}
_TLS_FIRST = {"uri_san_local_certificate": "uriSanLocalCertificate",
              "uri_san_peer_certificate": "uriSanPeerCertificate",
              "dns_san_local_certificate": "dnsSansLocalCertificate",
              "dns_san_peer_certificate": "dnsSansPeerCertificate"}


def tls_attribute(tls: dict, key: str) -> str | None:
    """`connection.<key>` of a TLS connection whose Ssl::ConnectionInfo is `tls`."""
    if key in _TLS_STRINGS:
        return str(tls.get(_TLS_STRINGS[key], ""))
    if key in _TLS_FIRST:
        values = tls.get(_TLS_FIRST[key]) or []
        return values[0] if values else None
    return None


class PropertySource:
    """The attributes one context can see (a stream's only while it has one)."""

    def __init__(self, ctx: "Context", connection_id: int = 0, identity: ProxyIdentity = TEST_PROXY):
        self.ctx = ctx
        self.connection_id = connection_id
        self.identity = identity   # the proxy's node (xds.node)
        self.stream = getattr(ctx, "stream", None)

    # -- the top level --------------------------------------------------------------------------
    def top(self, name: str):
        plugin = self.ctx.wasm.plugin
        if name == "plugin_name":
            return plugin.name
        if name == "plugin_root_id":
            return plugin.root_id
        if name == "plugin_vm_id":
            return plugin.vm_id
        if name == "node":   # Envoy 1.40 answers NotFound for the bare name; xds.node has it
            return None
        if name == "xds_node":
            node = {"id": self.identity.node_id, "cluster": self.identity.node_cluster}
            return Lazy(node.get, lambda: _proto_string(1, node["id"]) + _proto_string(2, node["cluster"]))
        s = self.stream
        if s is None:
            return None
        if name == "connection_id":
            return ("u64", self.connection_id)
        if name == "request":
            return Lazy(self._request)
        if name == "response":
            return Lazy(self._response)
        if name == "source":
            return Lazy(lambda k: self._peer(s.downstream_address, k))
        if name == "destination":
            return Lazy(lambda k: self._peer(s.downstream_local_address, k))
        if name == "connection":
            return Lazy(self._connection)
        if name == "upstream":
            return Lazy(self._upstream)
        if name == "xds":
            return Lazy(self._xds)
        return getattr(s, "filter_state", {}).get("wasm." + name)

    def _headers_map(self, headers) -> Lazy:
        def lookup(k):
            return H.get(headers, k)

        def whole():
            merged: dict[str, str] = {}
            for k, v in headers:
                merged[k] = merged[k] + "," + v if k in merged else v
            return merged
        return Lazy(lookup, whole)

    def _request(self, k: str):
        s = self.stream
        rh = s.request_headers

        def hdr(name):
            return H.get(rh, name)
        if k == "headers":
            return self._headers_map(rh)
        if k == "time":
            return ("i64", s.start_ns)
        if k == "protocol":
            return "HTTP/1.1"
        if k == "size":
            # Envoy: the content-length header when it parses, no value when it does not
            # (a guest may have set it to anything), the bytes received without one.
            cl = hdr("content-length")
            if cl is not None:
                return simple_atoi(cl)
            return len(s.request_body)
        if k == "total_size":
            return len(s.request_body) + H.byte_size(rh)
        if k == "duration":
            return None
        if k == "path":
            return hdr(":path")
        if k == "url_path":
            p = hdr(":path") or ""
            return p.split("?", 1)[0]
        if k == "query":
            p = hdr(":path") or ""
            return p.split("?", 1)[1] if "?" in p else ""
        if k == "host":
            return hdr(":authority")
        if k == "scheme":
            return hdr(":scheme")
        if k == "method":
            return hdr(":method")
        if k == "referer":
            return hdr("referer")
        if k == "useragent":
            return hdr("user-agent")
        if k == "id":
            return hdr("x-request-id")
        return None

    def _response(self, k: str):
        s = self.stream
        rh = s.response_headers
        if k == "headers":
            return self._headers_map(rh)
        if k == "trailers":
            return self._headers_map(s.response_trailers)
        if k == "code":
            # Unparseable (a guest may set :status to anything): no value, never a host error.
            return simple_atoi(H.get(rh, ":status"))
        if k == "size":
            return len(s.response_body)
        if k == "total_size":
            return len(s.response_body) + H.byte_size(rh)
        if k == "flags":
            return 0
        if k == "code_details":
            return getattr(s, "response_code_details", None) or None
        return None

    @staticmethod
    def _peer(address: str | None, k: str):
        if not address:
            return None
        if k == "address":
            return address
        if k == "port":
            return _split_host_port(address)[1]
        return None

    def _connection(self, k: str):
        tls = getattr(self.stream, "tls", None)   # Ssl::ConnectionInfo (envoyext.envoy.peer_tls)
        if k == "mtls":   # TLS, and the peer presented a certificate
            return tls is not None and bool(tls.get("peerCertificatePresented"))
        if k == "requested_server_name":
            return ""
        if k == "id":
            return ("u64", self.connection_id)
        if tls is None:
            return None   # the TLS fields exist only on TLS connections
        return tls_attribute(tls, k)

    def _upstream(self, k: str):
        addr = self.stream.upstream_address
        if k in ("address", "port"):
            return self._peer(addr, k)
        return None

    def _xds(self, k: str):
        s = self.stream
        if k == "route_name":
            r = s.route
            return r.name if r is not None else None
        if k == "cluster_name":   # known once the route is: already in on_request_headers
            if s.cluster_name:
                return s.cluster_name
            r = s.route
            return r.cluster if r is not None else None
        if k == "node":
            return self.top("xds_node")
        if k == "route_metadata":   # the whole Metadata: any filter's namespace (the bare name is NotFound)
            r = s.route
            return None if r is None else metadata_value(r.filter_metadata(self.ctx.wasm.plugin.name))
        return None

    # -- the ABI ----------------------------------------------------------------------------------
    def get(self, path: bytes) -> tuple[WasmResult, bytes]:
        parts = [H.text(p) for p in path.split(b"\0")]
        if path.endswith(b"\0"):
            parts = parts[:-1]
        if not parts or not parts[0]:
            return WasmResult.NotFound, b""
        value = self.top(parts[0])
        for part in parts[1:]:
            if value is None:
                return WasmResult.NotFound, b""
            if isinstance(value, (Lazy, dict)):
                value = value.get(part)
            else:
                return WasmResult.NotFound, b""
        if value is None:
            return WasmResult.NotFound, b""
        if isinstance(value, Lazy):
            value = value.whole()
            if value is None:
                return WasmResult.SerializationFailure, b""
        if isinstance(value, tuple):
            kind, v = value
            return WasmResult.Ok, (u64(v) if kind == "u64" else i64(v))
        return WasmResult.Ok, encode(value)

    def set(self, path: bytes, value: bytes) -> WasmResult:
        s = self.stream
        if s is None:
            return WasmResult.NotFound
        state = s.__dict__.setdefault("filter_state", {})
        state["wasm." + H.text(path)] = value
        return WasmResult.Ok
