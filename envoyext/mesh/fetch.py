"""A WasmPlugin's module brought to a local file before Envoy loads it, as istio-agent does
(istio/istio `pkg/wasm/cache.go`, `imagefetcher.go`, `httpfetcher.go`); the translator's `fetch` callback.

- `oci://host/repo:tag` or `oci://host/repo@sha256:<hex>` (no scheme means oci, as in Istio): the
  manifest is pulled (its bytes checked against the digest in the url), the module found by Istio's
  rules for the compat and oci image variants (envoyext.publish.oci.extract), each blob checked
  against its digest and size. A given `sha256` is compared, as Istio compares it, with the image's
  *manifest* digest, not with the module's bytes.
- `http(s)://`: downloaded (a gzip or tar around the module is unpacked, as Istio does); a given
  `sha256` is compared with the module's bytes.

Modules are cached under `<cache>/wasm/{oci,http}/` by digest (oci: the manifest digest, as Istio keys
its cache; http: the module's sha256), written whole (a temporary file renamed into place). A url
pinned by digest that is already cached is not fetched again; a tag is resolved on every translation.
The cache is the one the istio_stats module is built into (telemetry.cache_dir: `$ENVOYEXT_CACHE_DIR`,
else `$XDG_CACHE_HOME/envoyext`, else `~/.cache/envoyext`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from envoyext import tempfiles
from envoyext.errors import UserError
from envoyext.mesh import telemetry
from envoyext.publish import oci, registry

SCHEMES = ("oci://", "http://", "https://")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def _expected(sha256: str | None) -> str | None:
    if not sha256:
        return None
    value = sha256.lower()
    value = value[len("sha256:"):] if value.startswith("sha256:") else value
    if not _HEX.match(value):
        raise UserError(f"sha256 {sha256!r} is not 64 hex digits", field="spec.sha256",
                        fix="give the digest as 64 lower-case hex digits, or leave sha256 out")
    return value


class Fetcher:
    """`fetcher(url, sha256) -> Path`: the local module file for a WasmPlugin's url."""

    def __init__(self, cache: Path | None = None, *, timeout: float = 30):
        self.cache = Path(cache) if cache is not None else telemetry.cache_dir() / "wasm"
        self.timeout = timeout

    def __call__(self, url: str, sha256: str | None) -> Path:
        expected = _expected(sha256)
        if url.startswith(("http://", "https://")):
            return self.http(url, expected)
        if url.startswith("oci://") or "://" not in url:
            return self.oci(url, expected)
        raise UserError(f"the url scheme of {url!r} is not one Istio fetches", field="spec.url",
                        fix="use oci://, http:// or https:// (or file:// for a module on this machine)")

    # --- oci ---------------------------------------------------------------------------------------
    def oci(self, url: str, expected: str | None) -> Path:
        ref = oci.parse_reference(url, field="spec.url")
        if ref.digest:
            pinned = ref.digest.split(":", 1)[1]
            cached = self.cache / "oci" / f"{pinned}.wasm"
            if cached.is_file() and expected in (None, pinned):
                return cached
        client = registry.Client(ref.host, field="spec.url", timeout=self.timeout)
        manifest = client.manifest(ref)
        digest = oci.digest_of(manifest).split(":", 1)[1]
        if expected and expected != digest:
            raise UserError(f"sha256 {expected} does not match the manifest digest of {ref} (sha256:{digest}); for an "
                            "oci:// url Istio compares sha256 with the image's manifest digest", field="spec.sha256",
                            fix="set sha256 to the manifest digest, or leave it out and pin the url with @sha256:")
        path = self.cache / "oci" / f"{digest}.wasm"
        if path.is_file():
            return path
        try:
            module = oci.extract(manifest, lambda desc: client.blob(ref, desc))
        except oci.NotWasmImage as e:
            raise UserError(f"{ref} is not a Wasm image Istio can load: {e}", field="spec.url",
                            fix="push a compat image (a tar+gzip layer holding plugin.wasm) or an oci one (a "
                                f"{oci.WASM_LAYER} layer beside the runtime config); 'envoyext publish --push' "
                                "builds either") from None
        return self._store(path, module)

    # --- http(s) -------------------------------------------------------------------------------------
    def http(self, url: str, expected: str | None) -> Path:
        if expected:
            cached = self.cache / "http" / f"{expected}.wasm"
            if cached.is_file():
                return cached
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                data: bytes = response.read(oci.MAX_MODULE_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise UserError(f"downloading {url}: HTTP {e.code} {e.reason}", field="spec.url",
                            fix="check the url") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise UserError(f"downloading {url}: {reason}", field="spec.url",
                            fix="check the url and the server") from None
        if len(data) > oci.MAX_MODULE_BYTES:
            raise UserError(f"downloading {url}: over Istio's limit of {oci.MAX_MODULE_BYTES} bytes", field="spec.url",
                            fix="a Wasm module this large is refused by Istio too")
        module = unbox(data)
        got = hashlib.sha256(module).hexdigest()
        if expected and got != expected:
            raise UserError(f"sha256 {expected} does not match the module downloaded from {url} ({got})",
                            field="spec.sha256", fix="set sha256 to the module's digest, or fix the url")
        try:
            oci.check_module(module)
        except oci.NotWasmImage:
            raise UserError(f"what {url} serves is not a Wasm module (no \\0asm magic number)", field="spec.url",
                            fix="point the url at a .wasm file") from None
        return self._store(self.cache / "http" / f"{got}.wasm", module)

    def _store(self, path: Path, module: bytes) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tempfiles.write_atomically(path, module)
        except OSError as e:
            raise UserError(f"cannot write the Wasm module cache: {e.strerror or e}", file=path.parent,
                            fix="make it writable, or set ENVOYEXT_CACHE_DIR to a writable directory") from None
        return path


def unbox(data: bytes) -> bytes:
    """Istio's httpfetcher unboxIfPossible: while not Wasm, a gzip is decompressed and a POSIX tar
    gives its first file; anything else (or a broken archive) leaves the original bytes."""
    current = data
    for _ in range(8):
        if current.startswith(oci.WASM_MAGIC) and len(current) >= 8:
            return current
        try:
            if current[:2] == b"\x1f\x8b":
                current = gzip.decompress(current)
            elif len(current) > 262 and current[257:262] == b"ustar":
                with tarfile.open(fileobj=io.BytesIO(current), mode="r:") as tar:
                    first = tar.next()
                    f = tar.extractfile(first) if first is not None else None
                    if f is None:
                        return data
                    current = f.read()
            else:
                return data
        except (OSError, EOFError, tarfile.TarError):
            return data
    return data


def fetch(url: str, sha256: str | None) -> Path:
    """The translator's callback: a Fetcher on the default cache (read from the environment now)."""
    return Fetcher()(url, sha256)
