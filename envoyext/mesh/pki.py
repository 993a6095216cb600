"""The mesh CA: a root per trust domain (optionally an intermediate) and an X.509 SVID per workload.

What istiod's built-in CA and the pilot-agent do, with Istio's defaults (shared reference §13,
citing istio/istio `pilot/cmd/pilot-agent/options/options.go` and `security/pkg/cmd/constants.go`):
  - identity  spiffe://<trust domain>/ns/<namespace>/sa/<service account> as the only URI SAN
    (`pkg/spiffe/spiffe.go`); the workload cert has no subject, so the SAN extension is critical
    (RFC 5280 §4.2.1.6 requires that when the subject is empty);
  - keys      RSA 2048 (`WORKLOAD_RSA_KEY_SIZE`; ECDSA P-256 is Istio's opt-in, offered here too);
  - lifetime  24 h for workloads (`SECRET_TTL`, `DEFAULT_WORKLOAD_CERT_TTL`), 10 years for the
    self-signed root;
  - rotation  when `SECRET_GRACE_PERIOD_RATIO` (0.5) of the lifetime remains, i.e. at half-life
    (`security/pkg/nodeagent/cache/secretcache.go` rotateTime). Istio adds ±1% jitter so a fleet
    does not renew at once; a local mesh has no fleet, so there is none here (tests stay exact).

Private keys leave this module only through `write_key` (0600, created so, never chmod'ed after)
or as bytes a caller writes the same way (sds.py). Nothing here logs or prints a key.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from envoyext import tempfiles
from envoyext.errors import UserError

KeyType = Literal["rsa", "ecdsa"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

DEFAULT_KEY: KeyType = "rsa"
RSA_KEY_SIZE = 2048
WORKLOAD_TTL = dt.timedelta(hours=24)
MAX_WORKLOAD_TTL = dt.timedelta(days=90)
ROOT_TTL = dt.timedelta(days=3650)
INTERMEDIATE_TTL = dt.timedelta(days=365)
GRACE_PERIOD_RATIO = 0.5

# File names Istio uses for a plugged-in CA (`cacerts` secret) and that the agent writes.
ROOT_CERT = "root-cert.pem"
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CERT_CHAIN = "cert-chain.pem"
KEY = "key.pem"


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_key(kind: KeyType = DEFAULT_KEY) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Issued:
    """A certificate, its key and the chain above it (intermediates, not the root)."""
    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def rotate_at(self) -> dt.datetime:
        return rotation_time(self.cert)

    def chain_pem(self) -> bytes:
        """Leaf first, then intermediates: what a TLS peer is sent (Envoy's certificate_chain)."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain))

    def key_pem(self) -> bytes:
        return key_pem(self.key)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def rotation_time(cert: x509.Certificate, ratio: float = GRACE_PERIOD_RATIO) -> dt.datetime:
    """When the agent renews: once `ratio` of the lifetime remains (at half-life for 0.5)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return end - (end - start) * ratio


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


def identity_of(cert: x509.Certificate) -> str:
    """The SPIFFE ID (first URI SAN), else the subject (a client cert without one)."""
    sans = uri_sans(cert)
    return sans[0] if sans else cert.subject.rfc4514_string()


class CA:
    """A signing CA: a self-signed root, or an intermediate below one (`chain` = certs above the
    leaf it signs, excluding the root). `root` is what peers trust (the ROOTCA bundle)."""

    def __init__(self, trust_domain: str, cert: x509.Certificate, key: PrivateKey,
                 root: x509.Certificate | None = None, chain: tuple[x509.Certificate, ...] = ()):
        self.trust_domain = trust_domain
        self.cert = cert
        self.key = key
        self.root = root or cert
        self.chain = chain

    @classmethod
    def create_root(cls, trust_domain: str, *, now: dt.datetime | None = None, ttl: dt.timedelta = ROOT_TTL,
                    key_type: KeyType = DEFAULT_KEY, name: str = "Root CA") -> CA:
        """A self-signed root like istiod's (organisation = trust domain). Two calls give two
        independent CAs: the second is the "another CA" a negative test presents."""
        now = now or utcnow()
        key = new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (_ca_builder(subject, subject, key, now, ttl, path_length=None)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
                .sign(key, _hash(key)))
        return cls(trust_domain, cert, key)

    def create_intermediate(self, *, now: dt.datetime | None = None, ttl: dt.timedelta = INTERMEDIATE_TTL,
                            key_type: KeyType = DEFAULT_KEY) -> CA:
        """An intermediate signed by this CA: it signs workloads; peers still trust only the root."""
        now = now or utcnow()
        key = new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain),
                             x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA")])
        not_after = min(now + ttl, self.cert.not_valid_after_utc)  # never outlive the issuer
        cert = (_ca_builder(subject, self.cert.subject, key, now, not_after - now, path_length=0)
                .add_extension(self._aki(), critical=False)
                .sign(self.key, _hash(self.key)))
        return CA(self.trust_domain, cert, key, root=self.root, chain=(cert, *self.chain))

    def issue_workload(self, namespace: str, service_account: str, *, now: dt.datetime | None = None,
                       ttl: dt.timedelta = WORKLOAD_TTL, key_type: KeyType = DEFAULT_KEY) -> Issued:
        """An SVID for one workload identity: no subject, one critical URI SAN, server+client auth."""
        if ttl <= dt.timedelta(0) or ttl > MAX_WORKLOAD_TTL:
            raise UserError(f"certificate lifetime {ttl} is out of range", field="ttl",
                            fix=f"use more than 0 and at most {MAX_WORKLOAD_TTL.days} days "
                                "(Istio's MAX_WORKLOAD_CERT_TTL)")
        uri = spiffe_id(self.trust_domain, namespace, service_account)
        return self._issue(x509.Name([]), [x509.UniformResourceIdentifier(uri)], now, ttl, key_type)

    def issue_client(self, common_name: str, *, spiffe: str | None = None, now: dt.datetime | None = None,
                     ttl: dt.timedelta = WORKLOAD_TTL, key_type: KeyType = DEFAULT_KEY) -> Issued:
        """A certificate for a test client (curl, a Python client): CN plus an optional SPIFFE ID."""
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe)] if spiffe else []
        return self._issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), sans,
                           now, ttl, key_type)

    def issue_server(self, dns_names: list[str], *, now: dt.datetime | None = None,
                     ttl: dt.timedelta = WORKLOAD_TTL, key_type: KeyType = DEFAULT_KEY) -> Issued:
        """A DNS-named server certificate (a gateway's credentialName stand-in)."""
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        return self._issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]), sans,
                           now, ttl, key_type)

    def _issue(self, subject: x509.Name, sans: list[x509.GeneralName], now: dt.datetime | None,
               ttl: dt.timedelta, key_type: KeyType) -> Issued:
        now = now or utcnow()
        key = new_key(key_type)
        b = (x509.CertificateBuilder()
             .subject_name(subject).issuer_name(self.cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(_second(now)).not_valid_after(_second(now) + ttl)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(_key_usage(cert_sign=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             .add_extension(self._aki(), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
        return Issued(b.sign(self.key, _hash(self.key)), key, self.chain)

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())

    # -- files -------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Istio's plugged-in CA layout: ca-cert.pem, ca-key.pem (0600), root-cert.pem, cert-chain.pem."""
        directory.mkdir(parents=True, exist_ok=True)
        write_public(directory / ROOT_CERT, cert_pem(self.root))
        write_public(directory / CA_CERT, cert_pem(self.cert))
        # Istio's cert-chain.pem: the signing cert, the intermediates above it, then the root.
        write_public(directory / CERT_CHAIN, b"".join(cert_pem(c) for c in (*self.chain, self.root)))
        write_key(directory / CA_KEY, key_pem(self.key))

    @classmethod
    def load(cls, directory: Path, trust_domain: str) -> CA:
        try:
            cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
            root = x509.load_pem_x509_certificate((directory / ROOT_CERT).read_bytes())
            loaded = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
            chain_pems = x509.load_pem_x509_certificates((directory / CERT_CHAIN).read_bytes())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the mesh CA: {e}", file=directory,
                            fix="remove the directory to let envoyext make a new CA") from None
        if not isinstance(loaded, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise UserError("the CA key is neither RSA nor ECDSA", file=directory / CA_KEY,
                            fix="use an RSA or ECDSA P-256 key")
        chain = tuple(c for c in chain_pems if c != root)
        return cls(trust_domain, cert, loaded, root=root, chain=chain)

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str, *, intermediate: bool = False) -> CA:
        """The mesh's CA for `trust_domain` kept in `directory` (made on first use)."""
        if (directory / CA_KEY).exists():
            return cls.load(directory, trust_domain)
        root = cls.create_root(trust_domain)
        ca = root.create_intermediate() if intermediate else root
        ca.save(directory)
        return ca


def _ca_builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey, now: dt.datetime, ttl: dt.timedelta,
                path_length: int | None) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_second(now)).not_valid_after(_second(now) + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def _second(t: dt.datetime) -> dt.datetime:
    """X.509 times have whole seconds: truncate, so not_before is never after the issuing moment
    (every peer here shares one clock) and lifetime and half-life are exact."""
    return t.replace(microsecond=0)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_encipherment=not cert_sign, content_commitment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _hash(key: PrivateKey) -> hashes.SHA256:
    return hashes.SHA256()


# -- writing files ---------------------------------------------------------------------------------

def write_key(path: Path, data: bytes) -> None:
    """Write secret bytes atomically, mode 0600 from the first byte (never world-readable, not even
    between create and chmod): a temp file created 0600 beside `path`, then renamed over it."""
    _atomic(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    _atomic(path, data, 0o644)


def _atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfiles.temp_beside(path)  # mkstemp: created 0600, owner only, before any byte is written
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
