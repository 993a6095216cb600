"""A Wasm module as an OCI image Istio's WasmPlugin can pull, and the module found again in one.

Two formats, as Istio's image fetcher (istio/istio `pkg/wasm/imagefetcher.go`) accepts them:

- "compat": an ordinary OCI image (manifest `application/vnd.oci.image.manifest.v1+json`, image config
  `application/vnd.oci.image.config.v1+json`) whose one layer, `application/vnd.oci.image.layer.v1.tar+gzip`,
  is a tar holding `plugin.wasm`; the manifest carries the spec's annotation
  `module.wasm.image/variant: compat`. Istio reads the *last* layer of such an image and takes the
  first tar entry whose base name is `plugin.wasm` (a Docker schema-2 manifest likewise, with the
  layer type `application/vnd.docker.image.rootfs.diff.tar.gzip`).
- "oci": the Wasm artifact of solo-io's Wasm image spec: config `application/vnd.module.wasm.config.v1+json`
  (the runtime config: type envoy_proxy, ABI versions, root ids) and exactly two layers, that same
  runtime config and the module itself as `application/vnd.module.wasm.content.layer.v1+wasm` (raw bytes,
  not compressed). Istio refuses this variant unless it has exactly two layers ("number of layers
  must be 2"), one of them of the Wasm content type: an image with the module as its only layer
  would not load in a cluster.

Either way Istio then checks the bytes start with the Wasm magic number. Pure functions here (bytes
in, bytes out); `write_layout` is the one that touches the disk. The bytes are deterministic (tar
entries with mtime 0, uid/gid 0, no user names; gzip with mtime 0 and no file name; JSON with a fixed
key order and no spaces), so the same module gives the same digest on every run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from envoyext import tempfiles
from envoyext.errors import UserError

Format = Literal["compat", "oci"]
FORMATS: tuple[Format, ...] = ("oci", "compat")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
PLUGIN_FILE = "plugin.wasm"
VARIANT = "module.wasm.image/variant"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
WASM_MAGIC = b"\0asm"
# Istio's ISTIO_WASM_MAX_BINARY_SIZE_BYTES default: a module (or a layer read for one) past this is refused.
MAX_MODULE_BYTES = 256 * 1024 * 1024

Json = dict[str, Any]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(doc: Any) -> bytes:
    """JSON bytes with the keys in the order written and no spaces: the same document, the same digest."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return digest_of(self.data)

    def descriptor(self) -> Json:
        out: Json = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Image:
    """One image: its manifest's exact bytes and the blobs it names (config first, then layers)."""
    manifest: bytes
    media_type: str
    blobs: tuple[Blob, ...]

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    def descriptor(self) -> Json:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.manifest)}

    def blob(self, digest: str) -> bytes:
        for b in self.blobs:
            if b.digest == digest:
                return b.data
        raise KeyError(digest)


# --- building ----------------------------------------------------------------------------------
def plugin_tar_gz(module: bytes) -> tuple[bytes, bytes]:
    """The compat layer: (gzip bytes, the tar's own bytes) of a tar with `plugin.wasm` alone."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size, info.mode, info.mtime = len(module), 0o644, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue(), raw.getvalue()


def runtime_config(root_id: str | None) -> bytes:
    """The oci variant's config (solo-io Wasm image spec: the runtime, its ABI, the root ids)."""
    return canonical_json({"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"],
                           "config": {"rootIds": [root_id] if root_id else []}})


def _manifest(config: Blob, layers: list[Blob], annotations: dict[str, str] | None = None) -> bytes:
    doc: Json = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                 "layers": [layer.descriptor() for layer in layers]}
    if annotations:
        doc["annotations"] = annotations
    return canonical_json(doc)


def build(module: bytes, fmt: Format = "oci", root_id: str | None = None) -> Image:
    """The image of `module` in format `fmt` (see the module docstring)."""
    if not module.startswith(WASM_MAGIC):
        raise ValueError("not a Wasm module (no \\0asm magic number)")
    if fmt == "compat":
        layer_bytes, tar_bytes = plugin_tar_gz(module)
        config = Blob(OCI_CONFIG, canonical_json({
            "architecture": "wasm", "os": "wasip1", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(tar_bytes)]}}))
        layer = Blob(OCI_LAYER, layer_bytes)
        return Image(_manifest(config, [layer], {VARIANT: "compat"}), OCI_MANIFEST, (config, layer))
    if fmt == "oci":
        config_bytes = runtime_config(root_id)
        config = Blob(WASM_CONFIG, config_bytes)
        layers = [Blob(WASM_CONFIG, config_bytes, {TITLE: "runtime-config.json"}),
                  Blob(WASM_LAYER, module, {TITLE: PLUGIN_FILE})]
        return Image(_manifest(config, layers), OCI_MANIFEST, (config, *layers))
    raise ValueError(f"unknown image format {fmt!r} (compat or oci)")


# --- reading: Istio's rules ----------------------------------------------------------------------
class NotWasmImage(Exception):
    """The manifest is an image, but not one Istio finds a Wasm module in (the reason is the message)."""


def parse_manifest(data: bytes) -> Json:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise NotWasmImage(f"the manifest is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise NotWasmImage("the manifest is not a JSON object")
    media = doc.get("mediaType")
    if media in (OCI_INDEX, DOCKER_LIST) or "manifests" in doc:
        raise NotWasmImage("the reference names an image index (several platforms), not one image")
    if doc.get("schemaVersion") != 2 or not isinstance(doc.get("layers"), list):
        raise NotWasmImage("not an image manifest (schemaVersion 2 with layers)")
    for layer in doc["layers"]:
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str) \
                or not isinstance(layer.get("size"), int):
            raise NotWasmImage("a layer descriptor lacks its digest or size")
    return doc


def plugin_from_tar_gz(data: bytes) -> bytes:
    """Istio's compat rule: the first tar entry whose base name is plugin.wasm."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise NotWasmImage(f"the layer is not tar+gzip ({e})") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for entry in tar:
                if os.path.basename(entry.name) == PLUGIN_FILE and entry.isfile():
                    f = tar.extractfile(entry)
                    if f is not None:
                        return f.read()
    except tarfile.TarError as e:
        raise NotWasmImage(f"the layer is not a tar archive ({e})") from None
    raise NotWasmImage(f"{PLUGIN_FILE} not found in the layer's archive")


def _checked_size(layer: Json) -> Json:
    if layer["size"] > MAX_MODULE_BYTES:
        raise NotWasmImage(f"its module layer is {layer['size']} bytes, over Istio's limit of {MAX_MODULE_BYTES}")
    return layer


def check_module(module: bytes) -> bytes:
    """Istio's last check (isValidWasmBinary): at least 8 bytes, starting with the Wasm magic number."""
    if len(module) < 8 or not module.startswith(WASM_MAGIC):
        raise NotWasmImage("the file it holds is not a Wasm module (no \\0asm magic number)")
    return module


def extract(manifest_bytes: bytes, get_blob: Callable[[Json], bytes]) -> bytes:
    """The Wasm module of an image by Istio's rules; `get_blob(descriptor)` returns a blob's bytes
    (the caller checks them against the descriptor's digest and size). Raises NotWasmImage.

    Istio's order: a Docker schema-2 manifest must end in a Docker tar+gzip layer holding plugin.wasm;
    otherwise the compat variant is tried (last layer OCI tar+gzip, holding plugin.wasm), then the oci
    variant (exactly two layers, one of the Wasm content type, taken as it is). Only the layer used is
    downloaded."""
    manifest = parse_manifest(manifest_bytes)
    layers: list[Json] = manifest["layers"]
    if manifest.get("mediaType") == DOCKER_MANIFEST:
        if not layers:
            raise NotWasmImage("a Docker image with no layer")
        if layers[-1].get("mediaType") != DOCKER_LAYER:
            raise NotWasmImage(f"Docker image: its last layer is {layers[-1].get('mediaType')}, not {DOCKER_LAYER}")
        return check_module(plugin_from_tar_gz(get_blob(_checked_size(layers[-1]))))
    if not layers:
        compat = "it has no layer"
    elif layers[-1].get("mediaType") != OCI_LAYER:
        compat = f"its last layer is {layers[-1].get('mediaType')}, not {OCI_LAYER}"
    else:
        try:
            return check_module(plugin_from_tar_gz(get_blob(_checked_size(layers[-1]))))
        except NotWasmImage as e:
            if "magic number" in str(e):
                raise
            compat = str(e)
    if len(layers) != 2:
        oci = f"it has {len(layers)} layer(s), not 2"
    else:
        wasm = [x for x in layers if x.get("mediaType") == WASM_LAYER]
        if wasm:
            return check_module(get_blob(_checked_size(wasm[0])))
        oci = f"no layer of type {WASM_LAYER}"
    raise NotWasmImage(f"compat variant: {compat}; oci variant: {oci}")


# --- references ------------------------------------------------------------------------------------
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"^(?P<host>[^/@\s]+)/(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
                        r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>[^@\s]+))?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REFERENCE_FIX = "write REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:<64 hex>, e.g. 127.0.0.1:5000/cors:v1"


@dataclass(frozen=True)
class Reference:
    host: str            # registry host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What the manifest is asked by: the digest when there is one, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def at(self, digest: str) -> Reference:
        """This repository's image by digest (the tag dropped: the digest alone says which image)."""
        return Reference(self.host, self.repository, None, digest)


def parse_reference(text: str, *, field: str = "reference") -> Reference:
    """`host[:port]/repo[/more][:tag][@sha256:hex]`, with an explicit registry host (there is no default)."""
    ref = text[len("oci://"):] if text.startswith("oci://") else text
    m = _REFERENCE.match(ref)
    host = m["host"] if m else ""
    if m is None:
        raise UserError(f"{text!r} is not an image reference (the repository: lower-case letters, digits, . _ - "
                        "and /)", field=field, fix=REFERENCE_FIX)
    if not ("." in host or ":" in host or host == "localhost"):
        raise UserError(f"{text!r} names no registry host (there is no default registry)", field=field,
                        fix=REFERENCE_FIX)
    if m["digest"] and not _DIGEST.match(m["digest"]):
        raise UserError(f"{text!r}: the digest {m['digest']!r} is not sha256:<64 lower-case hex>", field=field,
                        fix=REFERENCE_FIX)
    return Reference(host, m["repo"], m["tag"], m["digest"])


# --- the OCI image layout (a directory) ----------------------------------------------------------
LAYOUT_FILE = "oci-layout"


def layout_files(image: Image, tag: str | None = None,
                 index: Json | None = None) -> dict[str, bytes]:
    """Each file of an OCI image layout holding `image` (path relative to the layout -> bytes).
    `index`: an existing layout's index.json, kept, with this image added (replacing the entry of
    the same tag)."""
    files = {f"blobs/sha256/{b.digest.split(':', 1)[1]}": b.data for b in image.blobs}
    files[f"blobs/sha256/{image.digest.split(':', 1)[1]}"] = image.manifest
    entry = image.descriptor()
    if tag:
        entry["annotations"] = {REF_NAME: tag}
    kept = [m for m in (index or {}).get("manifests", [])
            if not (tag and (m.get("annotations") or {}).get(REF_NAME) == tag) and m.get("digest") != image.digest]
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*kept, entry]}
    files["index.json"] = json.dumps(doc, indent=2).encode() + b"\n"
    files[LAYOUT_FILE] = canonical_json({"imageLayoutVersion": "1.0.0"})
    return files


def write_layout(image: Image, directory: Path, tag: str | None = None) -> Path:
    """Write (or add to) the OCI image layout at `directory`; blobs are written before index.json,
    each whole (a temporary file renamed into place). A non-empty directory that is not a layout is refused."""
    directory = Path(directory)
    index: Json | None = None
    if directory.exists():
        if not directory.is_dir():
            raise UserError("exists and is not a directory", file=directory, fix="give a directory for the layout")
        if (directory / LAYOUT_FILE).is_file():
            try:
                index = json.loads((directory / "index.json").read_text())
            except (OSError, ValueError):
                raise UserError("an OCI layout without a readable index.json", file=directory,
                                fix="remove the directory or give another") from None
        elif any(directory.iterdir()):
            raise UserError("is not empty and not an OCI image layout", file=directory,
                            fix="give an empty or new directory, or an existing layout")
    files = layout_files(image, tag, index)
    try:
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for rel in sorted(files, key=lambda r: r == "index.json"):   # index.json last
            target = directory / rel
            tempfiles.write_atomically(target, files[rel])
    except OSError as e:
        raise UserError(f"cannot write the OCI layout: {e.strerror or e}", file=directory,
                        fix="choose a writable directory") from None
    return directory


def read_layout(directory: Path, tag: str | None = None) -> Image:
    """The image a layout's index.json names (by tag when given, else its only entry), every blob
    checked against its digest and size."""
    directory = Path(directory)
    try:
        index = json.loads((directory / "index.json").read_text())
        entries = index["manifests"]
        if tag:
            entries = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == tag]
        if len(entries) != 1:
            raise UserError(f"{len(entries)} images match in the layout's index.json", file=directory,
                            fix="name one by tag")
        desc = entries[0]
        blob = _layout_blob(directory, desc)
        manifest = json.loads(blob)
        blobs = [Blob(d["mediaType"], _layout_blob(directory, d), d.get("annotations") or {})
                 for d in [manifest["config"], *manifest["layers"]]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"not a readable OCI image layout ({e})", file=directory, fix="write it again") from None
    return Image(blob, desc["mediaType"], tuple(blobs))


def _layout_blob(directory: Path, desc: Json) -> bytes:
    algo, _, hexdigest = str(desc["digest"]).partition(":")
    data = (directory / "blobs" / algo / hexdigest).read_bytes()
    if digest_of(data) != desc["digest"] or len(data) != desc["size"]:
        raise ValueError(f"blob {desc['digest']} does not match its digest or size")
    return data
