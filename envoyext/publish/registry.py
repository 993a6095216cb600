"""Push an image to an OCI registry and pull one back, through oras-py's registry client.

oras-py (`oras.provider.Registry`) brings the registry protocol: blob upload (POST then PUT with the
digest), token and basic authentication answered from Docker's usual credentials
(`~/.docker/config.json`: `auths`, `credsStore`, `credHelpers`, i.e. what `docker login` wrote), and
http instead of https when asked (`insecure`). Two of its high-level calls do not fit an image whose
digest must be known before it is pushed, so the lower-level request call is used for them:

- `upload_manifest` sends the manifest as a dict re-serialised by `requests` (other bytes, so another
  digest than the one built) and always as an OCI manifest; the manifest is PUT here as its exact
  bytes with its own media type, and the registry's `Docker-Content-Digest` is checked against it.
- `get_manifest` returns parsed JSON, and the digest of what was received cannot be checked from it;
  the manifest is fetched here as bytes and its sha256 compared with the digest asked for.

oras-py retries a failed request five times with sleeps of 3 s to 83 s; a registry that is down or
a wrong port would hang a command for minutes, so requests here are made once, with a timeout.
Plain http is used for loopback registries (127.0.0.0/8, localhost, ::1), https elsewhere.

Authentication: the registry's /v2/ challenge picks oras-py's backend: Bearer (Docker Hub, ghcr.io,
Harbor, a distribution registry behind a token server) its "token" backend, which sends the
Basic credentials from Docker's config to the token realm; Basic (an htpasswd registry) its "basic"
backend, which sends them to the registry itself.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.provider
import requests

from envoyext import tempfiles
from envoyext.artifact import Artifact
from envoyext.errors import UserError, read_bytes
from envoyext.publish import oci
from envoyext.publish.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_MODULE_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    Json,
    Reference,
    digest_of,
)

ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST])
# oras-py logs what goes wrong itself (to stderr, through logging's last resort); envoyext says it
# once, as the one-line UserError of the call that failed.
logging.getLogger("oras.logger").setLevel(logging.CRITICAL)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.endswith("]") or "]:" in host else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Registry(oras.provider.Registry):  # type: ignore[misc]
    """oras-py's registry client, each request made once (its own do_request retries for minutes)."""

    def do_request(self, *args: Any, **kwargs: Any) -> Any:
        return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)


class Client:
    """One registry (`host[:port]`); `field` names the option or resource field errors are about."""

    def __init__(self, host: str, *, field: str, insecure: bool | None = None, timeout: float = 30):
        self.host = host
        self.field = field
        self.insecure = is_loopback(host) if insecure is None else insecure
        self.scheme = "http" if self.insecure else "https"
        self.timeout = timeout
        self._oras: Any = None

    # --- plumbing ------------------------------------------------------------------------------
    @property
    def _registry(self) -> Any:
        assert self._oras is not None, "_container() connects first"
        return self._oras

    def _connect(self, what: str) -> None:
        """oras-py's client for this registry, with the auth backend its /v2/ challenge asks for:
        a Basic challenge (an htpasswd registry) gets oras-py's basic backend, anything else (a
        Bearer challenge, or none) its token backend."""
        if self._oras is not None:
            return
        probe = self._call(what, requests.get, f"{self.scheme}://{self.host}/v2/", timeout=self.timeout)
        basic = probe.status_code == 401 and probe.headers.get("WWW-Authenticate", "").lower().startswith("basic")
        registry = _Registry(hostname=self.host, insecure=self.insecure, auth_backend="basic" if basic else "token")
        if basic and not hasattr(registry.auth, "_basic_auth"):
            registry.auth._basic_auth = None      # no credentials: answered 401, reported as denied
        session = registry.session                # shared with its auth backend
        session.request = functools.partial(session.request, timeout=self.timeout)
        self._oras = registry

    def _container(self, ref: Reference, what: str) -> Any:
        self._connect(what)
        container = self._registry.get_container(f"{ref.host}/{ref.repository}")
        self._registry.auth.load_configs(container)
        return container

    def _request(self, what: str, url: str, method: str = "GET", **kwargs: Any) -> Any:
        return self._call(what, self._registry.do_request, url, method, **kwargs)

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """`call(*args, **kwargs)`, a failure to talk to the registry turned into a one-line UserError."""
        try:
            return call(*args, **kwargs)
        except requests.exceptions.SSLError as e:
            raise UserError(f"{what}: TLS with {self.host} failed ({_reason(e)})", field=self.field,
                            fix="a plain-http registry is only spoken to on loopback; give its https address, "
                                "or trust its certificate (REQUESTS_CA_BUNDLE)") from None
        except requests.exceptions.ConnectionError as e:
            raise UserError(f"{what}: cannot reach the registry at {self.scheme}://{self.host} ({_reason(e)})",
                            field=self.field, fix="start the registry, or check the host and port") from None
        except requests.exceptions.Timeout:
            raise UserError(f"{what}: the registry at {self.host} did not answer in time", field=self.field,
                            fix="check the registry") from None
        except requests.exceptions.RequestException as e:
            raise UserError(f"{what}: {_reason(e)}", field=self.field, fix="check the registry") from None
        except ValueError as e:   # oras-py: "Cannot respond to request for authentication.", no upload session
            text = str(e)
            if any(word in text for word in ("authentication", "UNAUTHORIZED", "DENIED")):
                raise self._denied(what, "authentication required") from None
            raise UserError(f"{what}: {text[:200]}", field=self.field, fix="check the registry") from None

    def _denied(self, what: str, detail: str) -> UserError:
        return UserError(f"{what}: {self.host} refused access ({detail})", field=self.field,
                         fix=f"log in with 'docker login {self.host}' (envoyext reads ~/.docker/config.json)")

    def _fail(self, what: str, response: Any) -> UserError:
        if response.status_code in (401, 403):
            return self._denied(what, f"HTTP {response.status_code}")
        return UserError(f"{what}: the registry answered HTTP {response.status_code} {_errors(response)}",
                         field=self.field, fix="check the reference and the registry")

    # --- push ----------------------------------------------------------------------------------
    def push(self, ref: Reference, image: Image) -> str:
        """Upload `image`'s blobs and then its manifest under `ref`'s tag (or by digest alone when
        `ref` has no tag); returns the manifest digest, which is the registry's own."""
        container = self._container(ref, f"pushing to {ref.name}")
        folder = tempfiles.mkdtemp("oci")
        try:
            for blob in {b.digest: b for b in image.blobs}.values():
                path = folder / blob.digest.replace(":", "-")
                path.write_bytes(blob.data)
                what = f"pushing blob {blob.digest[:19]} to {ref.name}"
                response = self._call(what, self._registry.upload_blob, str(path), container, blob.descriptor())
                if response.status_code not in (200, 201):
                    raise self._fail(what, response)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        target = ref.tag or image.digest
        what = f"pushing the manifest of {ref.name}:{target}" if ref.tag else f"pushing {ref.name}@{target}"
        response = self._request(what, f"{self.scheme}://{container.manifest_url(target)}", "PUT",
                                 data=image.manifest, headers={"Content-Type": image.media_type})
        if response.status_code != 201:
            raise self._fail(what, response)
        echoed = response.headers.get("Docker-Content-Digest")
        if echoed and echoed != image.digest:
            raise UserError(f"{what}: the registry stored it as {echoed}, not {image.digest}", field=self.field,
                            fix="the registry rewrote the manifest; push to another registry")
        return image.digest

    # --- pull ----------------------------------------------------------------------------------
    def manifest(self, ref: Reference) -> bytes:
        """The manifest's exact bytes; when `ref` names a digest, they are checked against it."""
        what = f"pulling {ref}"
        container = self._container(ref, what)
        response = self._request(what, f"{self.scheme}://{container.manifest_url(ref.identifier)}",
                                 headers={"Accept": ACCEPT})
        if response.status_code == 404:
            which = f"digest {ref.digest}" if ref.digest else f"tag {ref.identifier!r}"
            raise UserError(f"{what}: no image with {which} in {ref.name} (manifest unknown)", field=self.field,
                            fix="push it first (envoyext publish --push), or correct the tag or digest")
        if response.status_code != 200:
            raise self._fail(what, response)
        data: bytes = response.content
        if len(data) > MAX_MANIFEST_BYTES:
            raise UserError(f"{what}: the manifest is {len(data)} bytes", field=self.field, fix="check the image")
        if ref.digest and digest_of(data) != ref.digest:
            raise UserError(f"{what}: the registry's manifest has digest {digest_of(data)}, not the one asked for",
                            field=self.field, fix="the registry is not serving what was pushed; check it")
        return data

    def blob(self, ref: Reference, desc: Json) -> bytes:
        """A blob the manifest names, checked against its descriptor's digest and size."""
        digest, size = str(desc["digest"]), int(desc["size"])
        what = f"pulling blob {digest[:19]} of {ref.name}"
        container = self._container(ref, what)
        if size > MAX_MODULE_BYTES:
            raise UserError(f"{what}: {size} bytes, over Istio's limit of {MAX_MODULE_BYTES}", field=self.field,
                            fix="a Wasm module this large is refused by Istio too")
        response = self._request(what, f"{self.scheme}://{container.get_blob_url(digest)}", stream=True)
        try:
            if response.status_code != 200:
                raise self._fail(what, response)
            chunks, got = [], 0
            for chunk in response.iter_content(chunk_size=1 << 16):
                got += len(chunk)
                if got > size:
                    break
                chunks.append(chunk)
        finally:
            response.close()
        data = b"".join(chunks)
        if got != size or digest_of(data) != digest:
            raise UserError(f"{what}: the bytes received do not match the manifest's digest and size",
                            field=self.field, fix="the registry is not serving what was pushed; check it")
        return data


def _reason(e: BaseException) -> str:
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out", "WRONG_VERSION_NUMBER",
                   "CERTIFICATE_VERIFY_FAILED", "No route to host"):
        if marker in text:
            return marker
    return text.splitlines()[0][:120] if text else type(e).__name__


def _errors(response: Any) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))[:200]
    except ValueError:
        return ""


@dataclass(frozen=True)
class Planned:
    """`envoyext publish --push/--oci-layout`, decided but not yet done: the image (its digest is
    known before any byte leaves) and the url a WasmPlugin pins it by, so the resource can be
    checked against its schema before anything is pushed or written."""
    image: oci.Image
    ref: oci.Reference | None
    layout: Path | None

    @property
    def url(self) -> str | None:
        return f"oci://{self.ref.at(self.image.digest)}" if self.ref is not None else None

    def carry_out(self) -> str | None:
        """Write the layout and push; returns the url pushed to (None when nothing was pushed)."""
        if self.layout is not None:
            oci.write_layout(self.image, self.layout, tag=(self.ref.tag if self.ref else None) or "latest")
        if self.ref is None:
            return None
        # push() refuses a registry that stores the manifest under another digest than the one pinned.
        Client(self.ref.host, field="--push").push(self.ref, self.image)
        return self.url


def plan(artifact: Artifact, *, form: str | None, fmt: oci.Format, push: str | None,
         layout: Path | None) -> Planned | None:
    """The image `--push`/`--oci-layout` ask for, built in `fmt` (None when neither is given)."""
    if push is None and layout is None:
        return None
    option = "--push" if push else "--oci-layout"
    if artifact.kind != "wasm" or form == "envoyfilter":
        raise UserError("an image carries a Wasm module for a WasmPlugin", field=option,
                        fix="publish a Wasm filter, as a WasmPlugin (not --as envoyfilter)")
    ref = oci.parse_reference(push, field="--push") if push else None
    if ref is not None and ref.digest:
        raise UserError(f"{push!r} names a digest; a push names a tag (or none), the digest is what it yields",
                        field="--push", fix="drop the @sha256:... part")
    image = oci.build(read_bytes(artifact.path, what="Wasm module"), fmt, artifact.root_id)
    return Planned(image, ref, layout)
