"""Test JWTs for a mesh's RequestAuthentications: issuer keys, tokens (PyJWT), their JWKS, and a
JWKS server on loopback that `jwksUri` can name.

A `KeyStore` is a directory with one RSA key per issuer (`<slug>.pem`, mode 0600, and the issuer
name beside it in `<slug>.json`), made on first use. `mint` signs RS256 tokens with the issuer's key
and its `kid` (the RFC 7638 thumbprint), so a RequestAuthentication whose `jwks` or `jwksUri` gives
the store's JWKS verifies them, as Envoy's jwt_authn does: issuer, audiences, expiry, signature.

The translator inlines a `jwksUri`'s keys as istiod does (it fetches them while translating):
`fetch_jwks` is the fetcher the runtime gives it. Keys never leave the store: the JWKS holds public
halves only.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_decode, base64url_encode

from envoyext.errors import UserError
from envoyext.mesh import pki

FETCH_TIMEOUT = 3.0   # seconds, for a jwksUri while translating (istiod's default is 5 s)


def _slug(issuer: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", issuer).strip("-")[:40] or "issuer"
    return f"{readable}-{hashlib.sha256(issuer.encode()).hexdigest()[:8]}"


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    e, n = jwk["e"], jwk["n"]
    # The kid: RFC 7638's thumbprint, the required members in lexicographic order, no whitespace.
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    kid = base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()
    return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "e": e, "n": n}


class KeyStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def key(self, issuer: str) -> rsa.RSAPrivateKey:
        """The issuer's signing key, made (and written 0600) the first time it is asked for."""
        if not issuer:
            raise UserError("an empty issuer", field="--issuer", fix="name the issuer, e.g. --issuer https://issuer.test")
        pem = self.directory / f"{_slug(issuer)}.pem"
        if pem.exists():
            loaded = serialization.load_pem_private_key(pem.read_bytes(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise UserError("not an RSA key", file=pem, fix="remove it; a new key is made on next use")
            return loaded
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pki.write_key(pem, pki.key_pem(key))
        pki.write_public(pem.with_suffix(".json"), json.dumps({"issuer": issuer}).encode())
        return key

    def issuers(self) -> list[str]:
        out = []
        for meta in sorted(self.directory.glob("*.json")):
            try:
                out.append(str(json.loads(meta.read_text())["issuer"]))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def jwks(self, issuer: str) -> str:
        """The issuer's JSON Web Key Set (public key only), as a RequestAuthentication's `jwks`."""
        return json.dumps({"keys": [public_jwk(self.key(issuer))]}, separators=(",", ":"))

    def mint(self, issuer: str, subject: str, *, audiences: list[str] | None = None,
             claims: dict[str, Any] | None = None, expires_in: float = 3600, now: float | None = None) -> str:
        """An RS256 token from `issuer` for `subject`; `expires_in` <= 0 gives one already expired."""
        key = self.key(issuer)
        issued = int(now if now is not None else time.time())
        payload: dict[str, Any] = {"iss": issuer, "sub": subject, "iat": issued, "exp": issued + int(expires_in)}
        if expires_in <= 0:   # expired a minute ago (beyond any clock-skew allowance), issued before that
            payload["iat"], payload["exp"] = issued - 3600, issued - 60
        if audiences:
            payload["aud"] = audiences[0] if len(audiences) == 1 else list(audiences)
        payload.update(claims or {})
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": public_jwk(key)["kid"]})


def tampered(token: str, **changes: Any) -> str:
    """The token with claims changed (default: sub becomes admin) and the original signature kept,
    as an attacker would forge it: well-formed, but the signature no longer matches."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64url_decode(payload))
    claims.update(changes or {"sub": "admin"})
    return ".".join([head, base64url_encode(json.dumps(claims, separators=(",", ":")).encode()).decode(), signature])


def fetch_jwks(uri: str, issuer: str) -> str | None:
    """A jwksUri's document, or None if it cannot be had (the translator then fails closed)."""
    try:
        with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT) as rsp:
            text: str = rsp.read().decode()
            return text
    except (OSError, urllib.error.URLError, UnicodeDecodeError, ValueError):
        return None


class JwksServer:
    """Serves every issuer of a KeyStore at `http://127.0.0.1:<port>/<slug>/jwks.json` (`url(issuer)`)."""

    def __init__(self, store: KeyStore, host: str = "127.0.0.1", port: int = 0):
        self.store = store
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = owner.document(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "application/json")
                data = (body or '{"error": "no such issuer"}').encode()
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="envoyext-jwks", daemon=True)

    def document(self, path: str) -> str | None:
        for issuer in self.store.issuers():
            if path == f"/{_slug(issuer)}/jwks.json":
                return self.store.jwks(issuer)
        return None

    def url(self, issuer: str) -> str:
        self.store.key(issuer)   # exists from now on
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/{_slug(issuer)}/jwks.json"

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
