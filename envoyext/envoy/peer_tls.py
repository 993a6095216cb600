"""A case's downstream mTLS: the test certificates, and what Envoy reports about such a connection.

A scenario case may say it arrives over mTLS with a client certificate for a peer identity
(`connection: {mtls: {peer: spiffe://...}}`, `MtlsPeer`). Both runners then see the same
certificates: a test CA, the listener's own certificate (`LOCAL_URI_SAN`) and one client
certificate per peer, all derived deterministically from their names (ECDSA P-256 keys derived
from a hash of the name, RFC 6979 deterministic signatures, fixed serials and validity), so the
emulator can answer `sha256_peer_certificate_digest`, the serial and the PEM exactly as live Envoy
does for the certificate the live client really presents.

These are test fixtures for a listener on 127.0.0.1, not a PKI: anyone can derive their keys.
The mesh's own CA (issue 11 item 1) makes random keys. Still, key files are written 0600 and the
bootstrap names only their paths.

`connection_facts(spec)` is Envoy's Ssl::ConnectionInfo for such a connection, as a plain dict
(`TlsFacts`) both emulators read: the Wasm `connection.*` attributes and the Lua SSL object.
Negotiated values (TLS version, cipher suite) are those live Envoy 1.40 picks with the test
client (Python's ssl, TLS 1.3); so is the session id, empty on those connections.
"""

from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import os
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from envoyext.envoy import xds
from envoyext.scenario.model import MtlsPeer

# The listener's own identity (Ssl uriSanLocalCertificate), an Istio-shaped SPIFFE ID.
LOCAL_URI_SAN = "spiffe://cluster.local/ns/default/sa/envoyext-test"
CA_SUBJECT = "O=envoyext test CA"
# Fixed validity: the same certificate bytes on every run (and a digest the emulator can know).
NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2045, 1, 1, tzinfo=datetime.timezone.utc)
# What live Envoy 1.40 negotiates with the test client (Python ssl, OpenSSL 3), measured: TLS 1.3
# with the client's first choice, AES-256-GCM.
TLS_VERSION = "TLSv1.3"
CIPHERSUITE_ID = "0x1302"
CIPHERSUITE = "TLS_AES_256_GCM_SHA384"

TlsFacts = dict[str, Any]


@dataclass
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _key(label: str) -> ec.EllipticCurvePrivateKey:
    n = int.from_bytes(hashlib.sha256(b"envoyext test key\0" + label.encode()).digest(), "big")
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's group order
    return ec.derive_private_key(n % (order - 1) + 1, ec.SECP256R1())


def _serial(label: str) -> int:
    return int.from_bytes(hashlib.sha256(b"envoyext serial\0" + label.encode()).digest()[:8], "big") >> 1 | 1


def _name(rfc4514: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(rfc4514) if rfc4514 else x509.Name([])


def _issue(label: str, subject: str, issuer: _Issued | None, *, ca: bool = False,
           uris: tuple[str, ...] = (), dns: tuple[str, ...] = (), client: bool = False) -> _Issued:
    key = _key(label)
    name = _name(subject)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.cert.subject if issuer else name)
         .public_key(key.public_key()).serial_number(_serial(label))
         .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                   else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName(d) for d in dns]
    if sans:  # an empty subject makes the SAN critical (RFC 5280 4.2.1.6), as in Istio's SVIDs
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=not subject)
    signer = issuer.key if issuer else key
    return _Issued(b.sign(signer, hashes.SHA256(), ecdsa_deterministic=True), key)


def _ca() -> _Issued:
    return _issue("ca", CA_SUBJECT, None, ca=True)


def _server(ca: _Issued) -> _Issued:
    return _issue("server", "", ca, uris=(LOCAL_URI_SAN,))


def _client(ca: _Issued, spec: MtlsPeer) -> _Issued:
    return _issue(f"client\0{spec.peer}\0{spec.subject}\0{','.join(spec.dns)}", spec.subject, ca,
                  uris=(spec.peer,), dns=spec.dns, client=True)


# OpenSSL's short names for the attribute types a case's subject may use (model.SUBJECT_KEYS).
_SHORT_NAMES = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
                NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.COUNTRY_NAME: "C",
                NameOID.STREET_ADDRESS: "street", NameOID.DOMAIN_COMPONENT: "DC", NameOID.USER_ID: "UID"}


def _escape_2253(value: str) -> str:
    """One attribute value as OpenSSL's ASN1_STRFLGS_RFC2253 prints it: ,+"\\<>; backslashed, a
    leading # or space and a trailing space backslashed, control characters and every byte of a
    non-ASCII character's UTF-8 as \\XX."""
    out = []
    data = value.encode()
    for i, b in enumerate(data):
        c = chr(b)
        if b < 0x20 or b >= 0x7f:
            out.append(f"\\{b:02X}")
        elif c in ',+"\\<>;' or (c in "# " and i == 0) or (c == " " and i == len(data) - 1):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _rfc2253(name: x509.Name) -> str:
    """X509_NAME_print_ex(XN_FLAG_RFC2253), which Envoy's subject and issuer are: the name's
    attributes in reverse of their encoded order, a multi-valued RDN's included, "+" within an
    RDN and "," between them."""
    flat = [(i, a) for i, rdn in enumerate(name.rdns) for a in rdn]
    out, previous = "", None
    for i, a in reversed(flat):
        if previous is not None:
            out += "+" if i == previous else ","
        key = _SHORT_NAMES.get(a.oid, a.oid.dotted_string)
        out += f"{key}={_escape_2253(str(a.value))}"
        previous = i
    return out


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _url_encoded(pem: str) -> str:
    """Envoy's urlEncodedPemEncoded*: the PEM percent-encoded (letters, digits and -_.~ kept)."""
    return urllib.parse.quote(pem, safe="-_.~")


def _serial_hex(cert: x509.Certificate) -> str:
    """BN_bn2hex of the serial (whole bytes), lower-cased."""
    n = cert.serial_number
    return n.to_bytes((n.bit_length() + 7) // 8 or 1, "big").hex()


def _sans(cert: x509.Certificate, kind: type) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.value.get_values_for_type(kind)]


def connection_facts(spec: MtlsPeer) -> TlsFacts:
    """Envoy's Ssl::ConnectionInfo for a downstream mTLS connection presenting `spec`'s certificate
    to the test listener. Keys are the Lua SSL object's method names (envoyext/lua/runtime.lua)."""
    return copy.deepcopy(_facts(spec))


@functools.lru_cache(maxsize=64)
def _facts(spec: MtlsPeer) -> TlsFacts:
    ca = _ca()
    local = _server(ca).cert
    peer = _client(ca, spec).cert
    # the subject as encoded (a multi-valued RDN's attributes in DER's order), as Envoy reads it
    subject = x509.load_der_x509_certificate(peer.public_bytes(serialization.Encoding.DER)).subject
    return {
        "peerCertificatePresented": True,
        "peerCertificateValidated": True,
        "uriSanPeerCertificate": _sans(peer, x509.UniformResourceIdentifier),
        "uriSanLocalCertificate": _sans(local, x509.UniformResourceIdentifier),
        "dnsSansPeerCertificate": _sans(peer, x509.DNSName),
        "dnsSansLocalCertificate": _sans(local, x509.DNSName),
        "sha256PeerCertificateDigest": hashlib.sha256(peer.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "serialNumberPeerCertificate": _serial_hex(peer),
        "issuerPeerCertificate": _rfc2253(peer.issuer),
        "subjectPeerCertificate": _rfc2253(subject),
        "subjectLocalCertificate": _rfc2253(local.subject),
        "parsedSubjectPeerCertificate": {
            "commonName": next((str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)), ""),
            "organizationName": [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]},
        "urlEncodedPemEncodedPeerCertificate": _url_encoded(_pem(peer)),
        # the verified chain, trust anchor included (measured on 1.40: peer then test CA)
        "urlEncodedPemEncodedPeerCertificateChain": _url_encoded(_pem(peer) + _pem(ca.cert)),
        "oidsPeerCertificate": [e.oid.dotted_string for e in peer.extensions],
        "oidsLocalCertificate": [e.oid.dotted_string for e in local.extensions],
        "validFromPeerCertificate": int(peer.not_valid_before_utc.timestamp()),
        "expirationPeerCertificate": int(peer.not_valid_after_utc.timestamp()),
        "sessionId": "",   # measured on 1.40: empty on these TLS 1.3 connections
        "ciphersuiteId": CIPHERSUITE_ID,
        "ciphersuiteString": CIPHERSUITE,
        "tlsVersion": TLS_VERSION,
    }


# -- files for live Envoy and the test client --------------------------------------------------

@dataclass
class ListenerTls:
    """Paths of the listener's certificate, key and client CA, and the clients' files per peer."""
    ca: Path
    cert: Path
    key: Path
    clients: dict[MtlsPeer, tuple[Path, Path]] = field(default_factory=dict)

    def client_context(self, spec: MtlsPeer) -> ssl.SSLContext:
        """The test client's TLS: trusts the test CA, presents `spec`'s certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.check_hostname = False  # the listener's certificate names a SPIFFE ID, not 127.0.0.1
        cert, key = self.clients[spec]
        ctx.load_cert_chain(str(cert), str(key))
        return ctx


def _write(path: Path, data: bytes, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_files(directory: Path, peers: list[MtlsPeer]) -> ListenerTls:
    """The CA, the listener's certificate and key, and each peer's certificate and key, in
    `directory` (which the caller owns and removes). Keys 0600, certificates 0644."""
    ca = _ca()
    server = _server(ca)
    cert_pem = serialization.Encoding.PEM
    files = ListenerTls(ca=_write(directory / "ca.pem", ca.cert.public_bytes(cert_pem), 0o644),
                        cert=_write(directory / "listener.pem", server.cert.public_bytes(cert_pem), 0o644),
                        key=_write(directory / "listener.key", _key_pem(server.key), 0o600))
    for i, spec in enumerate(dict.fromkeys(peers)):
        client = _client(ca, spec)
        files.clients[spec] = (_write(directory / f"peer{i}.pem", client.cert.public_bytes(cert_pem), 0o644),
                               _write(directory / f"peer{i}.key", _key_pem(client.key), 0o600))
    return files


def downstream_tls_context(files: ListenerTls) -> dict[str, Any]:
    """The listener's DownstreamTlsContext: its certificate, client certificates required and
    verified against the test CA. Files by path only: no key material in the config."""
    return {
        "@type": xds.DOWNSTREAM_TLS,
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(files.cert)},
                                  "private_key": {"filename": str(files.key)}}],
            "validation_context": {"trusted_ca": {"filename": str(files.ca)}},
        },
    }
