"""Certificates to Envoy by file-based SDS, so a rotated certificate needs no restart.

Istio's agent serves two secrets over SDS (`pkg/model/authentication.go`, shared reference §13):
`default` (the workload's certificate chain and key) and `ROOTCA` (the trust bundle). Here each is
a DiscoveryResponse file in the proxy's directory (its Envoy's cwd):

    <proxy dir>/sds/default.yaml   Secret{tls_certificate}      names the two files below
    <proxy dir>/sds/ROOTCA.yaml    Secret{validation_context}   the roots the proxy trusts
    <proxy dir>/sds/cert-chain-<v>.pem, key-<v>.pem               the SVID; the key mode 0600

A TLS context names them with `secret_config("default")` / `secret_config("ROOTCA")`: an
SdsSecretConfig whose `path_config_source` is the file and whose `watched_directory` is `sds/`, so
Envoy re-reads the file when a new one is moved into that directory. The key is NOT inline in the
secret: Envoy 1.40 with the `config` component at debug logs every accepted file-based xDS update
verbatim ("Filesystem config update accepted for sds/default.yaml: ..."), key included. So the
secret names key and chain files by path, fresh names per version: certificate and key still change
in one rename (of default.yaml) and Envoy never pairs a new certificate with an old key. The
previous pair is kept (an Envoy may still be reading it); older ones are removed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from envoyext.envoy import xds
from envoyext.mesh import pki
from envoyext.mesh.model import Json, Mesh, Proxy

SDS_DIR = "sds"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SECRET = xds.T + "envoy.extensions.transport_sockets.tls.v3.Secret"
CA_DIR = "ca"  # under a mesh work dir: ca/<trust domain>/ (Istio's plugged-in CA file names)

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- pure builders ---------------------------------------------------------------------------------

def secret_path(name: str, sds_dir: str | Path = SDS_DIR) -> Path:
    """Where secret `name` is delivered, relative to the proxy's directory (Envoy's cwd)."""
    if name not in (WORKLOAD_SECRET, ROOT_SECRET):
        raise ValueError(f"unknown SDS secret {name!r}: Istio's are {WORKLOAD_SECRET!r} and {ROOT_SECRET!r}")
    return Path(sds_dir) / f"{name}.yaml"


def secret_config(name: str, sds_dir: str | Path = SDS_DIR) -> Json:
    """The SdsSecretConfig a TLS context uses for `default` or `ROOTCA` (file-based, watched)."""
    return {"name": name,
            "sds_config": {"path_config_source": {"path": str(secret_path(name, sds_dir)),
                                                  "watched_directory": {"path": str(sds_dir)}},
                           "resource_api_version": "V3"}}


def validation_context(match_sans: list[str] | None = None, sds_dir: str | Path = SDS_DIR) -> Json:
    """`combined_validation_context`: roots from ROOTCA, plus exact URI SAN matches (Istio's
    ISTIO_MUTUAL SAN verification) when given; a prefix match such as `spiffe://<td>/` is the
    caller's to build with `san_prefix`."""
    default: Json = {}
    if match_sans:
        default["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": s}} for s in match_sans]
    return {"default_validation_context": default,
            "validation_context_sds_secret_config": secret_config(ROOT_SECRET, sds_dir)}


def san_prefix(trust_domain: str) -> Json:
    """The inbound side's SAN matcher: any identity of the trust domain (Istio's BuildInboundTLS)."""
    return {"san_type": "URI", "matcher": {"prefix": f"spiffe://{trust_domain}/"}}


def cert_files(version: str, sds_dir: str | Path = SDS_DIR) -> tuple[Path, Path]:
    """(chain, key) file paths of one delivered version, relative to the proxy dir."""
    return Path(sds_dir) / f"cert-chain-{version}.pem", Path(sds_dir) / f"key-{version}.pem"


def tls_certificate_secret(version: str, sds_dir: str | Path = SDS_DIR) -> Json:
    chain, key = cert_files(version, sds_dir)
    return {"@type": SECRET, "name": WORKLOAD_SECRET,
            "tls_certificate": {"certificate_chain": {"filename": str(chain)}, "private_key": {"filename": str(key)}}}


def root_secret(roots: list[x509.Certificate]) -> Json:
    bundle = b"".join(pki.cert_pem(r) for r in roots).decode()
    return {"@type": SECRET, "name": ROOT_SECRET, "validation_context": {"trusted_ca": {"inline_string": bundle}}}


def response(version: str, secret: Json) -> Json:
    return {"version_info": version, "resources": [secret]}


# -- writing ---------------------------------------------------------------------------------------

def write(proxy_dir: Path, issued: pki.Issued, roots: list[x509.Certificate], version: str) -> None:
    """(Re)write both secrets of one proxy, each atomically (temp file + rename in `sds/`). ROOTCA
    first: a new certificate must never arrive before the roots that verify it."""
    d = Path(proxy_dir) / SDS_DIR
    chain, key = (Path(proxy_dir) / p for p in cert_files(version))
    previous = _delivered_version(d / f"{WORKLOAD_SECRET}.yaml")
    pki.write_public(d / f"{ROOT_SECRET}.yaml", _dump(response(version, root_secret(roots))))
    pki.write_key(key, issued.key_pem())
    pki.write_public(chain, issued.chain_pem())
    pki.write_public(d / f"{WORKLOAD_SECRET}.yaml", _dump(response(version, tls_certificate_secret(version))))
    keep = {chain.name, key.name} | ({p.name for p in cert_files(previous)} if previous else set())
    for old in [*d.glob("cert-chain-*.pem"), *d.glob("key-*.pem")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)


def _delivered_version(path: Path) -> str | None:
    try:
        doc = yaml.load(path.read_text(), Loader=_Loader)
        return str(doc["version_info"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def _dump(doc: Json) -> bytes:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False).encode()


class Rotator:
    """One proxy's workload certificate: issue, deliver, and renew at half-life (Istio's
    SECRET_GRACE_PERIOD_RATIO). The runtime polls `due(now)` and calls `rotate(proxy_dir)`."""

    def __init__(self, ca: pki.CA, namespace: str, service_account: str, *, ttl: dt.timedelta = pki.WORKLOAD_TTL,
                 ratio: float = pki.GRACE_PERIOD_RATIO, key_type: pki.KeyType = pki.DEFAULT_KEY):
        self.ca = ca
        self.namespace = namespace
        self.service_account = service_account
        self.ttl = ttl
        self.ratio = ratio
        self.key_type = key_type
        self.current: pki.Issued | None = None
        self.rotations = 0

    @property
    def spiffe_id(self) -> str:
        return pki.spiffe_id(self.ca.trust_domain, self.namespace, self.service_account)

    def next_rotation(self) -> dt.datetime | None:
        return None if self.current is None else pki.rotation_time(self.current.cert, self.ratio)

    def due(self, now: dt.datetime | None = None) -> bool:
        at = self.next_rotation()
        return at is None or (now or pki.utcnow()) >= at

    def rotate(self, proxy_dir: Path, now: dt.datetime | None = None) -> pki.Issued:
        issued = self.ca.issue_workload(self.namespace, self.service_account, now=now, ttl=self.ttl,
                                        key_type=self.key_type)
        self.rotations += 1
        # The version only has to change with every delivery; the serial says which cert it is.
        write(proxy_dir, issued, [self.ca.root], f"{self.rotations}-{issued.cert.serial_number:x}")
        self.current = issued
        return issued


# -- a mesh's certificates -------------------------------------------------------------------------

def identity(proxy: Proxy) -> tuple[str, str]:
    """(namespace, service account) a proxy's certificate names."""
    return proxy.workload.namespace, proxy.workload.service_account


def provision(mesh: Mesh, workdir: Path, *, ttl: dt.timedelta = pki.WORKLOAD_TTL,
              intermediate: bool = False) -> dict[str, Rotator]:
    """The mesh CA (made once under `workdir/ca/<trust domain>/`) and a first certificate in every
    proxy's `workdir/<pod>/sds/`; returns each proxy's Rotator by proxy name."""
    td = mesh.config.trust_domain
    ca = pki.CA.load_or_create(Path(workdir) / CA_DIR / td, td, intermediate=intermediate)
    rotators = {}
    for proxy in mesh.proxies:
        r = Rotator(ca, *identity(proxy), ttl=ttl)
        r.rotate(Path(workdir) / proxy.name)
        rotators[proxy.name] = r
    return rotators


def validation_home(mesh: Mesh, directory: Path) -> Path:
    """SDS files under `directory/sds/` for `envoy --mode validate` (which checks that each SDS
    file a config names exists, resolved from its own cwd): a throwaway CA's, so nothing of the
    mesh's real keys is needed to check a config. Returns `directory`."""
    ca = pki.CA.create_root(mesh.config.trust_domain)
    Rotator(ca, "default", "envoyext-validate").rotate(Path(directory))
    return Path(directory)


def rotate_due(rotators: dict[str, Rotator], workdir: Path, now: dt.datetime | None = None) -> list[str]:
    """Renew every certificate past its rotation time; returns the proxies renewed."""
    done = []
    for name, r in rotators.items():
        if r.due(now):
            r.rotate(Path(workdir) / name, now)
            done.append(name)
    return done


# -- reading back (envoyext mesh certs) ------------------------------------------------------------

@dataclass(frozen=True)
class CertRow:
    proxy: str
    identity: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    next_rotation: dt.datetime
    serial: str


def row(proxy: str, cert: x509.Certificate, ratio: float = pki.GRACE_PERIOD_RATIO) -> CertRow:
    return CertRow(proxy, pki.identity_of(cert), cert.issuer.rfc4514_string(), cert.not_valid_before_utc,
                   cert.not_valid_after_utc, pki.rotation_time(cert, ratio), f"{cert.serial_number:x}")


def rows_for_mesh(mesh: Mesh, *, now: dt.datetime | None = None, ttl: dt.timedelta = pki.WORKLOAD_TTL) -> list[CertRow]:
    """What `provision` would issue now, from a throwaway CA (nothing is written)."""
    now = now or pki.utcnow()
    ca = pki.CA.create_root(mesh.config.trust_domain, now=now)
    return [row(p.name, ca.issue_workload(*identity(p), now=now, ttl=ttl).cert) for p in mesh.proxies]


def rows_from_workdir(workdir: Path) -> list[CertRow]:
    """The certificates a running mesh delivered: each `<workdir>/<pod>/sds/default.yaml`."""
    out = []
    for f in sorted(Path(workdir).glob(f"*/{SDS_DIR}/{WORKLOAD_SECRET}.yaml")):
        cert = delivered_cert(f)
        if cert is not None:
            out.append(row(f.parent.parent.name, cert))
    return out


def delivered_cert(path: Path) -> x509.Certificate | None:
    """The leaf certificate a delivered `default` secret names (its key file is not read)."""
    try:
        doc = yaml.load(Path(path).read_text(), Loader=_Loader)
        chain = doc["resources"][0]["tls_certificate"]["certificate_chain"]["filename"]
        # the secret's paths are relative to the proxy dir (Envoy's cwd), which holds sds/
        return x509.load_pem_x509_certificates((Path(path).parent.parent / chain).read_bytes())[0]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return None


def table(rows: list[CertRow]) -> str:
    """Rows as a plain-text table (UTC times, to the second)."""
    def t(d: dt.datetime) -> str:
        return d.strftime("%Y-%m-%d %H:%M:%SZ")
    head = ("PROXY", "IDENTITY", "ISSUER", "NOT BEFORE", "NOT AFTER", "NEXT ROTATION")
    body = [(r.proxy, r.identity, r.issuer, t(r.not_before), t(r.not_after), t(r.next_rotation)) for r in rows]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *body))
