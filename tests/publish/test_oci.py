"""Wasm filters as OCI images, against a real registry on loopback (tests/publish/conftest.py): the
OCI layout of both image formats is valid, a push pulls back by digest to the same bytes, a WasmPlugin
pinned by digest translates to an Envoy config loading exactly those bytes, and `envoyext publish
--push` ships a library filter that then runs in a live mesh.

Negative controls: a digest that is not in the registry, a tag that does not exist, an image whose
layer is not Wasm, and a WasmPlugin sha256 that does not match are each refused with one line; the
mesh scenario fails without the published WasmPlugin."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import io
import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoyext import project as project_mod
from envoyext.errors import UserError
from envoyext.mesh import resources
from envoyext.mesh.fetch import Fetcher
from envoyext.mesh.translate import translate
from envoyext.publish import oci
from envoyext.publish.registry import Client
from envoyext.runners.mesh import build as build_mesh
from tests.conftest import REPO, run_cli

BOOKINFO = REPO / "examples" / "bookinfo"
TESTDATA = Path(__file__).parent / "testdata"
# A valid Wasm module: the magic number, version 1, and a custom section naming this test (so its
# images differ from other tests').
MODULE = b"\0asm\x01\0\0\0" + bytes([0, 9, 8]) + b"envoyext" + bytes([0, 4, 3]) + b"oci"


def one_line(e: pytest.ExceptionInfo[UserError], *needles: str) -> str:
    text = str(e.value)
    assert "\n" not in text and "fix:" in text, text
    for n in needles:
        assert n in text, text
    return text


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the image layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", oci.FORMATS)
def test_the_layout_is_a_valid_oci_image_layout(fmt: oci.Format, tmp_path: Path) -> None:
    oci.write_layout(oci.build(MODULE, fmt, "cors"), tmp_path / "layout", tag="v1")
    root = tmp_path / "layout"
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["mediaType"] == oci.OCI_INDEX
    [entry] = index["manifests"]
    assert entry["mediaType"] == oci.OCI_MANIFEST and entry["annotations"] == {oci.REF_NAME: "v1"}

    def blob(desc: dict[str, Any]) -> bytes:
        algo, hexdigest = desc["digest"].split(":")
        data = (root / "blobs" / algo / hexdigest).read_bytes()
        assert algo == "sha256" and sha(data) == desc["digest"] and len(data) == desc["size"], desc
        return data

    manifest = json.loads(blob(entry))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == oci.OCI_MANIFEST
    config = blob(manifest["config"])
    layers = [(d["mediaType"], blob(d)) for d in manifest["layers"]]
    if fmt == "compat":
        assert manifest["config"]["mediaType"] == oci.OCI_CONFIG
        assert manifest["annotations"] == {oci.VARIANT: "compat"}
        [(media, layer)] = layers
        assert media == oci.OCI_LAYER
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
            [member] = tar.getmembers()
            assert (member.name, member.mtime, member.uid, member.gid) == ("plugin.wasm", 0, 0, 0)
            assert tar.extractfile(member).read() == MODULE  # type: ignore[union-attr]
        image_config = json.loads(config)
        assert image_config["rootfs"] == {"type": "layers", "diff_ids": [sha(gzip.decompress(layer))]}
    else:
        # Istio's oci variant: exactly two layers, the runtime config and the module, raw.
        assert manifest["config"]["mediaType"] == oci.WASM_CONFIG
        assert [m for m, _ in layers] == [oci.WASM_CONFIG, oci.WASM_LAYER]
        assert layers[1][1] == MODULE and layers[0][1] == config
        assert json.loads(config) == {"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"],
                                      "config": {"rootIds": ["cors"]}}
    # read back through the module's own reader, and by Istio's rules
    image = oci.read_layout(root, "v1")
    assert oci.extract(image.manifest, lambda d: image.blob(d["digest"])) == MODULE


def test_the_same_module_gives_the_same_digest(tmp_path: Path) -> None:
    for fmt in oci.FORMATS:
        a, b = oci.build(MODULE, fmt, "cors"), oci.build(bytes(MODULE), fmt, "cors")
        assert a.manifest == b.manifest and a.digest == b.digest
        oci.write_layout(a, tmp_path / f"{fmt}-1")
        oci.write_layout(b, tmp_path / f"{fmt}-2")
        files = sorted(p.relative_to(tmp_path / f"{fmt}-1") for p in (tmp_path / f"{fmt}-1").rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(tmp_path / f"{fmt}-2") for p in (tmp_path / f"{fmt}-2").rglob("*")
                               if p.is_file())
        for f in files:
            assert (tmp_path / f"{fmt}-1" / f).read_bytes() == (tmp_path / f"{fmt}-2" / f).read_bytes(), f
    # control: another module, another digest; the two formats differ from each other
    assert oci.build(MODULE + b"x", "oci").digest != oci.build(MODULE, "oci").digest
    assert oci.build(MODULE, "compat").digest != oci.build(MODULE, "oci").digest


def test_a_layout_dir_that_is_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as e:
        oci.write_layout(oci.build(MODULE), tmp_path)
    one_line(e, "not an OCI image layout")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- push and pull -----------------------------------------------------------------------------------
def push(registry: str, repo: str, image: oci.Image, tag: str | None = "v1") -> str:
    ref = oci.Reference(registry, repo, tag)
    return Client(registry, field="test").push(ref, image)


@pytest.mark.parametrize("fmt", oci.FORMATS)
def test_push_then_pull_by_digest_gives_the_module_back(registry: str, fmt: oci.Format, tmp_path: Path) -> None:
    image = oci.build(MODULE, fmt, "cors")
    digest = push(registry, f"roundtrip/{fmt}", image)
    assert digest == image.digest
    # the registry serves the exact manifest bytes, by digest and by tag
    client = Client(registry, field="test")
    assert client.manifest(oci.Reference(registry, f"roundtrip/{fmt}", None, digest)) == image.manifest
    assert client.manifest(oci.Reference(registry, f"roundtrip/{fmt}", "v1")) == image.manifest
    fetch = Fetcher(tmp_path / "cache")
    path = fetch(f"oci://{registry}/roundtrip/{fmt}@{digest}", None)
    assert path.read_bytes() == MODULE and path == tmp_path / "cache" / "oci" / f"{digest.split(':')[1]}.wasm"
    # by tag too, and the same digest pushed twice is the same digest
    assert fetch(f"oci://{registry}/roundtrip/{fmt}:v1", None).read_bytes() == MODULE
    assert push(registry, f"roundtrip/{fmt}", oci.build(MODULE, fmt, "cors"), tag="again") == digest


def test_a_docker_schema2_compat_image_pulls_back(registry: str, tmp_path: Path) -> None:
    """Istio's third form: a Docker image (docker build of FROM scratch + plugin.wasm)."""
    layer, tar = oci.plugin_tar_gz(MODULE)
    config = oci.Blob("application/vnd.docker.container.image.v1+json", oci.canonical_json(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}))
    blob = oci.Blob(oci.DOCKER_LAYER, layer)
    manifest = oci.canonical_json({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
                                   "config": config.descriptor(), "layers": [blob.descriptor()]})
    digest = push(registry, "docker/compat", oci.Image(manifest, oci.DOCKER_MANIFEST, (config, blob)))
    assert Fetcher(tmp_path)(f"oci://{registry}/docker/compat@{digest}", None).read_bytes() == MODULE


def test_the_fetch_cache_is_keyed_by_digest(registry: str, tmp_path: Path) -> None:
    image = oci.build(MODULE, "oci", "cache")
    digest = push(registry, "cache/me", image)
    fetch = Fetcher(tmp_path)
    path = fetch(f"oci://{registry}/cache/me@{digest}", None)
    path.write_bytes(MODULE + b"cached")     # pinned by digest and cached: not pulled again
    assert fetch(f"oci://{registry}/cache/me@{digest}", None).read_bytes() == MODULE + b"cached"
    assert Fetcher(tmp_path / "fresh")(f"oci://{registry}/cache/me@{digest}", None).read_bytes() == MODULE


# --- refusals ----------------------------------------------------------------------------------------
def test_a_digest_not_in_the_registry_is_refused(registry: str, tmp_path: Path) -> None:
    image = oci.build(MODULE, "oci", "neg")
    digest = push(registry, "neg/digest", image)
    assert Fetcher(tmp_path)(f"oci://{registry}/neg/digest@{digest}", None).read_bytes() == MODULE   # control
    wrong = oci.build(MODULE + b"other", "oci", "neg").digest
    with pytest.raises(UserError) as e:
        Fetcher(tmp_path)(f"oci://{registry}/neg/digest@{wrong}", None)
    one_line(e, "spec.url", wrong, "manifest unknown")
    with pytest.raises(UserError) as e:
        Fetcher(tmp_path)(f"oci://{registry}/neg/digest@sha256:abc", None)
    one_line(e, "spec.url", "not sha256:<64 lower-case hex>")


def test_a_tag_that_does_not_exist_is_refused(registry: str, tmp_path: Path) -> None:
    push(registry, "neg/tag", oci.build(MODULE, "oci", "neg"), tag="v1")
    assert Fetcher(tmp_path)(f"oci://{registry}/neg/tag:v1", None).read_bytes() == MODULE   # control
    with pytest.raises(UserError) as e:
        Fetcher(tmp_path)(f"oci://{registry}/neg/tag:v2", None)
    one_line(e, "spec.url", "tag 'v2'", "manifest unknown")


def _image(config: oci.Blob, layers: list[oci.Blob], annotations: dict[str, str] | None = None) -> oci.Image:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config.descriptor(),
                           "layers": [x.descriptor() for x in layers]}
    if annotations:
        doc["annotations"] = annotations
    return oci.Image(oci.canonical_json(doc), oci.OCI_MANIFEST, (config, *layers))


def test_an_image_whose_layer_is_not_wasm_is_refused(registry: str, tmp_path: Path) -> None:
    config = oci.Blob(oci.WASM_CONFIG, oci.runtime_config("neg"))
    cases = {
        # one layer of another type: neither variant
        "text": (_image(config, [oci.Blob("text/plain", MODULE)]), "its last layer is text/plain"),
        # a tar+gzip layer without plugin.wasm
        "tar": (_image(oci.Blob(oci.OCI_CONFIG, b"{}"), [oci.Blob(oci.OCI_LAYER, _tar_gz("other.wasm", MODULE))]),
                "plugin.wasm not found"),
        # the oci variant's shape, but the content layer holds no Wasm
        "bytes": (_image(config, [config, oci.Blob(oci.WASM_LAYER, b"#!/bin/sh\necho not wasm\n")]),
                  "not a Wasm module"),
        # the module as the only layer: Istio wants the oci variant's two layers
        "one-layer": (_image(config, [oci.Blob(oci.WASM_LAYER, MODULE)]), "it has 1 layer(s), not 2"),
    }
    for name, (image, reason) in cases.items():
        digest = push(registry, f"neg/layer-{name}", image)
        with pytest.raises(UserError) as e:
            Fetcher(tmp_path)(f"oci://{registry}/neg/layer-{name}@{digest}", None)
        one_line(e, "spec.url", "is not a Wasm image Istio can load", reason)
    # control: the same tar with the file named plugin.wasm (below a directory, as Istio allows) loads
    good = _image(oci.Blob(oci.OCI_CONFIG, b"{}"), [oci.Blob(oci.OCI_LAYER, _tar_gz("./dist/plugin.wasm", MODULE))])
    digest = push(registry, "neg/layer-good", good)
    assert Fetcher(tmp_path)(f"oci://{registry}/neg/layer-good@{digest}", None).read_bytes() == MODULE


def _tar_gz(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def test_an_unreachable_registry_is_one_line(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # bound, not listening: refused
        with pytest.raises(UserError) as e:
            Fetcher(tmp_path)(f"oci://127.0.0.1:{port}/x/y:v1", None)
    one_line(e, "cannot reach the registry", "Connection refused")


# --- credentials from Docker's config ----------------------------------------------------------------
TOKEN = "registry-token"


@contextlib.contextmanager
def auth_proxy(upstream: str, user: str, password: str, scheme: str) -> Iterator[str]:
    """A registry front that asks for credentials, passing what it lets through to `upstream`.
    scheme "bearer", as Docker Hub or ghcr.io: /v2/ answers 401 with a Bearer challenge and /token
    hands out a token for the right Basic credentials; "basic", as an htpasswd registry: a Basic
    challenge, and the Basic credentials on every request."""
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    allowed = f"Bearer {TOKEN}" if scheme == "bearer" else basic
    challenge = 'Basic realm="registry"' if scheme == "basic" else None

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def handle_one(self) -> None:
            port = self.server.server_address[1]
            if self.path.startswith("/token"):
                if self.headers.get("Authorization") != basic:
                    self._reply(401, b'{"details":"bad credentials"}', {"Content-Type": "application/json"})
                else:
                    self._reply(200, json.dumps({"token": TOKEN}).encode(), {"Content-Type": "application/json"})
                return
            if self.headers.get("Authorization") != allowed:
                self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                            {"Content-Type": "application/json", "WWW-Authenticate": challenge or
                             f'Bearer realm="http://127.0.0.1:{port}/token",service="test"'})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            conn = http.client.HTTPConnection(upstream, timeout=30)
            passed = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "connection")}
            conn.request(self.command, self.path, body=body or None, headers=passed)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            self._reply(resp.status, data, {k: v for k, v in resp.getheaders()
                                            if k.lower() not in ("content-length", "transfer-encoding", "connection")})

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def docker_config(home: Path, host: str, user: str, password: str) -> None:
    (home / ".docker").mkdir(parents=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_credentials_come_from_dockers_config(registry: str, scheme: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    image = oci.build(MODULE, "oci", f"auth-{scheme}")
    with auth_proxy(registry, "alice", "s3cret", scheme) as host:
        monkeypatch.setenv("HOME", str(tmp_path / "nobody"))            # no ~/.docker/config.json
        with pytest.raises(UserError) as e:
            push(host, "auth/filter", image)
        one_line(e, "refused access", f"docker login {host}")
        docker_config(tmp_path / "wrong", host, "alice", "guess")
        monkeypatch.setenv("HOME", str(tmp_path / "wrong"))
        with pytest.raises(UserError) as e:
            push(host, "auth/filter", image)
        one_line(e, "refused access")
        docker_config(tmp_path / "alice", host, "alice", "s3cret")     # what `docker login` writes
        monkeypatch.setenv("HOME", str(tmp_path / "alice"))
        assert push(host, "auth/filter", image) == image.digest
        assert Fetcher(tmp_path / "cache")(f"oci://{host}/auth/filter@{image.digest}", None).read_bytes() == MODULE
        monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
        with pytest.raises(UserError) as e:                              # pulling needs them too
            Fetcher(tmp_path / "cache2")(f"oci://{host}/auth/filter@{image.digest}", None)
        one_line(e, "spec.url", "refused access")


# --- a WasmPlugin pinned by digest, translated -------------------------------------------------------
def wasm_plugin(tmp_path: Path, url: str, sha256: str | None = None) -> Path:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "reviews"}}, "url": url, "pluginName": "cors"}
    if sha256:
        spec["sha256"] = sha256
    path = tmp_path / "wasmplugin.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                                    "metadata": {"name": "cors", "namespace": "default"}, "spec": spec}))
    return path


def translated_module(plugin: Path, cache: Path) -> Path:
    mesh = build_mesh(resources.load([BOOKINFO / "platform.yaml", plugin]))
    configs = translate(mesh, fetch=Fetcher(cache), only=["reviews-v1-0"])
    found = {f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
             for lis in configs["reviews-v1-0"].listeners for fc in lis.get("filter_chains", [])
             for net in fc.get("filters", []) for f in net.get("typed_config", {}).get("http_filters", [])
             if f["name"] == "extensions.istio.io/wasmplugin/default.cors"}
    [filename] = found
    return Path(filename)


def test_a_wasmplugin_pinned_by_digest_loads_the_pushed_bytes(registry: str, tmp_path: Path) -> None:
    image = oci.build(MODULE, "oci", "cors")
    digest = push(registry, "mesh/cors", image)
    path = translated_module(wasm_plugin(tmp_path, f"oci://{registry}/mesh/cors@{digest}"), tmp_path / "cache")
    assert path.read_bytes() == MODULE
    # sha256 of an oci:// module is the manifest digest (Istio's rule): the right one is accepted ...
    ok = wasm_plugin(tmp_path, f"oci://{registry}/mesh/cors:v1", sha256=digest.split(":")[1])
    assert translated_module(ok, tmp_path / "cache2").read_bytes() == MODULE
    # ... and one that does not match is refused, naming the resource's file and field
    for bad in (hashlib.sha256(MODULE).hexdigest(), "0" * 64):   # the module's own digest is not it either
        plugin = wasm_plugin(tmp_path, f"oci://{registry}/mesh/cors:v1", sha256=bad)
        with pytest.raises(UserError) as e:
            translated_module(plugin, tmp_path / "cache3")
        one_line(e, "wasmplugin.yaml", "spec.sha256", "WasmPlugin default/cors", "does not match the manifest digest")


def test_an_http_module_is_downloaded_and_checked(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading
    served = tmp_path / "www"
    served.mkdir()
    (served / "plugin.wasm").write_bytes(MODULE)
    (served / "plugin.wasm.gz").write_bytes(gzip.compress(MODULE))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        good = hashlib.sha256(MODULE).hexdigest()
        assert Fetcher(tmp_path / "c1")(f"{base}/plugin.wasm", good).read_bytes() == MODULE
        assert Fetcher(tmp_path / "c2")(f"{base}/plugin.wasm.gz", good).read_bytes() == MODULE   # unboxed
        with pytest.raises(UserError) as e:
            Fetcher(tmp_path / "c3")(f"{base}/plugin.wasm", "0" * 64)
        one_line(e, "spec.sha256", "does not match")
        with pytest.raises(UserError) as e:
            Fetcher(tmp_path / "c4")(f"{base}/missing.wasm", None)
        one_line(e, "spec.url", "HTTP 404")
    finally:
        server.shutdown()
        server.server_close()


# --- envoyext publish --push, and the pushed filter running in a mesh --------------------------------
@pytest.fixture(scope="module")
def cors_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library's C CORS filter, copied (the repository's tree is not written to) and built."""
    dest = tmp_path_factory.mktemp("cors") / "cors"
    shutil.copytree(REPO / "filters" / "cors", dest, ignore=shutil.ignore_patterns("build", "__pycache__"))
    project_mod.build(project_mod.load(dest / "c"))
    return dest / "c"


def test_publish_push_pins_what_was_pushed(registry: str, cors_project: Path, tmp_path: Path) -> None:
    out, layout = tmp_path / "published.yaml", tmp_path / "layout"
    r = run_cli("publish", cors_project, "-o", out, "--selector", "app=productpage", "--push",
                f"{registry}/filters/cors:v1", "--image-format", "compat", "--oci-layout", layout)
    assert r.returncode == 0, r.stdout + r.stderr
    [res] = resources.load([out])
    image = oci.read_layout(layout, "v1")
    assert res.spec["url"] == f"oci://{registry}/filters/cors@{image.digest}" and "sha256" not in res.spec
    module = project_mod.build(project_mod.load(cors_project)).path.read_bytes()
    assert oci.extract(image.manifest, lambda d: image.blob(d["digest"])) == module
    client = Client(registry, field="test")
    assert client.manifest(oci.Reference(registry, "filters/cors", "v1")) == image.manifest
    # the layout alone, without a push: the same image, the WasmPlugin keeps its file:// url
    r = run_cli("publish", cors_project, "--image-format", "compat", "--oci-layout", tmp_path / "alone")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["spec"]["url"].startswith("file://")
    assert oci.read_layout(tmp_path / "alone").digest == image.digest


@pytest.mark.parametrize("args, needles", [
    (["--push", "cors:v1"], ["--push", "not an image reference"]),
    (["--push", "127.0.0.1:1/cors:v1"], ["--push", "cannot reach the registry"]),
    (["--as", "envoyfilter", "--push", "127.0.0.1:1/cors:v1"], ["--push", "WasmPlugin"]),
])
def test_publish_push_bad_input_is_one_line(cors_project: Path, tmp_path: Path, args: list[str],
                                            needles: list[str]) -> None:
    out = tmp_path / "published.yaml"
    r = run_cli("publish", cors_project, "-o", out, *args)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()


def test_nothing_is_pushed_or_written_when_the_resource_is_refused(registry: str, cors_project: Path,
                                                                   tmp_path: Path) -> None:
    """The resource is checked against Istio's schema before any image leaves: a refused one
    pushes nothing (the tag stays unknown to the registry) and writes no layout."""
    out, layout = tmp_path / "published.yaml", tmp_path / "layout"
    r = run_cli("publish", cors_project, "-o", out, "--namespace", "Not_A_Namespace", "--push",
                f"{registry}/filters/refused:v1", "--oci-layout", layout)
    assert r.returncode == 2 and "namespace" in r.stderr, r.stderr
    assert not out.exists() and not layout.exists()
    with pytest.raises(UserError, match="manifest unknown|not found|unknown"):
        Client(registry, field="test").manifest(oci.Reference(registry, "filters/refused", "v1"))
    # control: the same command with a valid namespace pushes the tag
    r = run_cli("publish", cors_project, "-o", out, "--push", f"{registry}/filters/refused:v1")
    assert r.returncode == 0, r.stderr
    assert Client(registry, field="test").manifest(oci.Reference(registry, "filters/refused", "v1"))


def test_a_pushed_filter_runs_in_the_mesh(registry: str, cors_project: Path, tmp_path: Path) -> None:
    """Published with --push, pulled by digest by the mesh runtime, and a CORS preflight to
    productpage is answered by the filter in its sidecar; without the WasmPlugin it is not."""
    published = tmp_path / "cors-wasmplugin.yaml"
    r = run_cli("publish", cors_project, "-o", published, "--selector", "app=productpage",
                "--push", f"{registry}/mesh/cors-filter:v1")
    assert r.returncode == 0, r.stderr
    assert "@sha256:" in yaml.safe_load(published.read_text())["spec"]["url"]
    scenario = TESTDATA / "cors-preflight.yaml"
    env_cache = {"ENVOYEXT_CACHE_DIR": str(tmp_path / "cache")}
    r = run_cli("mesh", "test", "-f", BOOKINFO / "platform.yaml", "-f", published, "--scenario", scenario,
                env=env_cache, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed, 0 failed" in r.stdout, r.stdout
    assert list((tmp_path / "cache" / "wasm" / "oci").glob("*.wasm")), "the module was pulled into the cache"
    # control: the same scenario without the published WasmPlugin fails
    r = run_cli("mesh", "test", "-f", BOOKINFO / "platform.yaml", "--scenario", scenario, env=env_cache,
                timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr


def test_a_pushed_filter_passes_its_own_scenario_pulled_by_digest(registry: str, cors_project: Path,
                                                                  tmp_path: Path) -> None:
    """What you test is what you publish, for an image: the filter's own scenario run with
    `mesh test --filter` on the WasmPlugin that pins the pushed image, the module pulled from the
    registry by that digest into an empty cache. Control: the image's digest changed to another
    pushed image (the blank csrf filter's) fails the same cases."""
    scenario = cors_project.parent / "scenarios" / "policy.yaml"
    published = tmp_path / "cors.yaml"
    r = run_cli("publish", cors_project, "-o", published, "--selector", "app=productpage", "--scenario", scenario,
                "--push", f"{registry}/filters/cors-policy:v1")
    assert r.returncode == 0, r.stderr
    env_cache = {"ENVOYEXT_CACHE_DIR": str(tmp_path / "cache")}
    r = run_cli("mesh", "test", "-f", BOOKINFO / "platform.yaml", "--filter", published, "--scenario", scenario,
                env=env_cache, timeout=600)
    assert r.returncode == 0 and "8 passed, 0 failed" in r.stdout, r.stdout + r.stderr
    module = project_mod.build(project_mod.load(cors_project)).path.read_bytes()
    pulled = [p.read_bytes() for p in (tmp_path / "cache" / "wasm" / "oci").glob("*.wasm")]
    assert pulled == [module], "the pushed module, pulled into the empty cache"
    # control: another module behind the url
    other = shutil.copytree(REPO / "filters" / "csrf", tmp_path / "csrf", ignore=shutil.ignore_patterns("build"))
    r = run_cli("publish", other / "c", "--push", f"{registry}/filters/other:v1")
    assert r.returncode == 0, r.stderr
    other_url = yaml.safe_load(r.stdout)["spec"]["url"]
    doc = yaml.safe_load(published.read_text())
    doc["spec"]["url"] = other_url
    published.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = run_cli("mesh", "test", "-f", BOOKINFO / "platform.yaml", "--filter", published, "--scenario", scenario,
                env=env_cache, timeout=600)
    assert r.returncode == 1 and "FAIL" in r.stdout, r.stdout + r.stderr
