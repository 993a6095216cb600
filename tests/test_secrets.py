"""Secrets (issue 14 item 5): the commands a user runs, each in its own process, and then every byte
envoyext wrote searched for private key material.

Run: `jwt mint`, `jwt jwks`, `jwt serve` (its jwksUri named by a RequestAuthentication), `mesh
render`, `mesh certs` (from files and from the running mesh), `mesh up` on examples/bookinfo (demo
profile: Zipkin and access logs; STRICT mTLS; 4 s certificates, so keys rotate while it runs; a
JWT-checked productpage) with requests through the gateway and a Ctrl-C, `envoyext new` + `test` on
a library filter with an mTLS case (connection.mtls: test CA, listener and client keys) and
`publish`. Every command runs with TMPDIR and ENVOYEXT_CACHE_DIR pointed at fresh directories, so
everything it writes is under the scanned roots; files are sampled while the commands run too, so
temporary files removed at the end (an `envoyext test` work dir and its Envoy log, the TLS test
keys, `mesh render`'s throwaway validation CA) are scanned as well. Captured stdout and stderr are
scanned with the files.

What is searched for: any PEM `PRIVATE KEY` block; and, for every key envoyext generated (read
from where it stores them: the mesh CA's ca-key.pem, each proxy's sds/key-*.pem as they rotate, the
JWT key store, the test TLS keys), its PEM body lines, its DER (PKCS#8 and traditional), its
private scalar raw and as the JWK `d` (base64url) and in hex. Properties: every place a key
appears is a key file (one PEM key, nothing else) of mode 0600; no rendered config, published
resource, log or command output holds one. Negative control: copies of a key planted in the tree
(PEM in a config, DER in a binary, the JWK `d` in JSON) are each found by the same scan.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import ENVOYEXT, REPO

BOOKINFO = REPO / "examples" / "bookinfo"
ISSUER = "https://issuer.test"
PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
MAX_READ = 64 << 20


# --- capturing what envoyext writes --------------------------------------------------------------
@dataclass
class Seen:
    """One version of one file (or one command's output), as the sampler read it."""
    where: str
    mode: int | None      # None: command output, not a file
    data: bytes


@dataclass
class Capture:
    roots: list[Path]
    seen: dict[tuple[str, str], Seen] = field(default_factory=dict)
    _stat: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self) -> None:
        """Read every file under the roots whose size, mtime or mode changed since last time."""
        for root in self.roots:
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                        if not stat.S_ISREG(st.st_mode):
                            continue
                        key = (st.st_size, st.st_mtime_ns, st.st_mode)
                        if self._stat.get(path) == key:
                            continue
                        with open(path, "rb") as f:
                            data = f.read(MAX_READ)
                    except OSError:   # removed meanwhile
                        continue
                    self._stat[path] = key
                    self.add(path, stat.S_IMODE(st.st_mode), data)

    def add(self, where: str, mode: int | None, data: bytes) -> None:
        with self._lock:
            self.seen.setdefault((where, hashlib.sha256(data).hexdigest() + str(mode)), Seen(where, mode, data))

    def output(self, what: str, r: subprocess.CompletedProcess[str] | tuple[str, str]) -> None:
        out, err = (r.stdout, r.stderr) if isinstance(r, subprocess.CompletedProcess) else r
        self.add(f"<stdout of {what}>", None, out.encode())
        self.add(f"<stderr of {what}>", None, err.encode())


class Sampler:
    """Samples the roots in a thread while a command runs (temp files live only that long)."""

    def __init__(self, capture: Capture, every: float = 0.2):
        self.capture, self.every = capture, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.capture.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.capture.sample()


# --- what a key looks like ----------------------------------------------------------------------
def needles(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, bytes]:
    """Every form of `key` that would give it away, by name."""
    out: dict[str, bytes] = {}
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    for i, line in enumerate(body[:-1]):      # the last line may be short enough to be a coincidence
        out[f"PEM line {i}"] = line
    for label, fmt in (("PKCS8", serialization.PrivateFormat.PKCS8),
                       ("traditional", serialization.PrivateFormat.TraditionalOpenSSL)):
        out[f"DER {label}"] = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
    if isinstance(key, rsa.RSAPrivateKey):
        secret = key.private_numbers().d
    else:
        secret = key.private_numbers().private_value
    raw = secret.to_bytes((secret.bit_length() + 7) // 8, "big")
    out["private scalar"] = raw
    out["JWK d"] = base64.urlsafe_b64encode(raw).rstrip(b"=")
    out["hex"] = raw.hex().encode()
    return out


def load_key(data: bytes) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
    return key


def stored_keys(capture: Capture, stores: list[re.Pattern[str]]) -> dict[str, bytes]:
    """The keys envoyext keeps where it says it does (every version seen), as named needles."""
    out: dict[str, bytes] = {}
    for seen in capture.seen.values():
        if seen.mode is not None and any(p.search(seen.where) for p in stores):
            assert PEM_BLOCK.match(seen.data), seen.where
            for name, needle in needles(load_key(seen.data)).items():
                out[f"{seen.where} ({name})"] = needle
    return out


def tls_test_keys() -> dict[str, bytes]:
    """The test TLS keys `envoyext test` makes for mTLS cases (derived from their names)."""
    from envoyext.envoy import peer_tls
    from envoyext.scenario.model import MtlsPeer
    ca = peer_tls._ca()
    keys = {"test CA": ca.key, "listener": peer_tls._server(ca).key}
    for peer in PEERS:
        keys[f"client {peer}"] = peer_tls._client(ca, MtlsPeer(peer=peer)).key
    return {f"{label} ({name})": n for label, k in keys.items() for name, n in needles(k).items()}


def is_key_file(seen: Seen) -> bool:
    """One PEM private key and nothing else, mode 0600."""
    text = seen.data.strip()
    return (seen.mode == 0o600 and text.startswith(b"-----BEGIN PRIVATE KEY-----")
            and text.endswith(b"-----END PRIVATE KEY-----") and text.count(b"-----BEGIN") == 1)


def leaks(capture: Capture, keys: dict[str, bytes]) -> list[str]:
    """Every place key material appears that is not a 0600 key file."""
    found = []
    for seen in capture.seen.values():
        hits = [name for name, needle in keys.items() if needle in seen.data]
        if PEM_BLOCK.search(seen.data):
            hits.insert(0, "a PEM PRIVATE KEY block")
        if hits and not is_key_file(seen):
            mode = "output" if seen.mode is None else oct(seen.mode)
            found.append(f"{seen.where} [{mode}]: {', '.join(hits[:3])}")
    return sorted(set(found))


# --- the run ------------------------------------------------------------------------------------
PEERS = ["spiffe://cluster.local/ns/default/sa/productpage", "spiffe://cluster.local/ns/default/sa/details"]
MTLS_SCENARIO = f"""\
name: mtls
cases:
  - name: over mTLS as productpage
    connection: {{mtls: {{peer: "{PEERS[0]}"}}}}
    request: {{method: GET, path: /x, headers: {{origin: "https://nobody.example"}}}}
    expect: {{status: 200}}
  - name: over mTLS as details
    connection: {{mtls: {{peer: "{PEERS[1]}"}}}}
    expect: {{status: 200}}
  - name: plaintext
    expect: {{status: 200}}
"""
OPERATOR = """\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: secrets, namespace: istio-system}
spec:
  profile: demo
  meshConfig:
    defaultConfig:
      proxyMetadata: {SECRET_TTL: 4s}
"""
REQUEST_AUTHN = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: productpage-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  jwtRules: [{issuer: "%s", jwksUri: "%s"}]
"""


@dataclass
class Run:
    capture: Capture
    home: Path
    env: dict[str, str]
    stores: list[re.Pattern[str]]
    statuses: dict[str, list[int]] = field(default_factory=dict)
    left_in_tmp: dict[str, list[str]] = field(default_factory=dict)   # command: key files left in TMPDIR
    tmp: str = ""


def _cli(run: Run, what: str, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    with Sampler(run.capture):
        r = subprocess.run([*ENVOYEXT, *map(str, args)], capture_output=True, text=True, cwd=run.home,
                           env=run.env, timeout=timeout)
    run.capture.output(what, r)
    assert r.returncode == 0, (what, r.stdout[-3000:], r.stderr[-3000:])
    run.left_in_tmp[what] = _keys_under(Path(run.tmp))
    return r


def _keys_under(root: Path) -> list[str]:
    """Files under `root` holding a PEM private key, now (the next command would remove a dead
    command's temp dirs, so this is read as each command ends)."""
    out = []
    for p in root.rglob("*"):
        try:
            if p.is_file() and PEM_BLOCK.search(p.read_bytes()):
                out.append(str(p))
        except OSError:
            pass
    return sorted(out)


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            rsp.read()
            return int(rsp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _background(run: Run, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*ENVOYEXT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1, cwd=run.home, env={**run.env, "PYTHONUNBUFFERED": "1"})


def _read_until(proc: subprocess.Popen[str], needle: str, lines: list[str], limit: int = 400) -> str:
    assert proc.stdout is not None
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("ended early:\n" + "".join(lines) + (proc.stderr.read() if proc.stderr else ""))
        lines.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no {needle!r} in:\n" + "".join(lines))


def _interrupt(run: Run, what: str, proc: subprocess.Popen[str], lines: list[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    run.capture.output(what, ("".join(lines) + out, err))
    assert proc.returncode == 0 and "stopped" in out, (what, proc.returncode, out[-2000:], err[-2000:])


@pytest.fixture(scope="module")
def everything(tmp_path_factory) -> Run:
    top = tmp_path_factory.mktemp("secrets")
    home, tmp, cache = top / "work", top / "tmp", top / "cache"
    for d in (home, tmp, cache):
        d.mkdir()
    env = {**os.environ, "NO_COLOR": "1", "TMPDIR": str(tmp), "ENVOYEXT_CACHE_DIR": str(cache)}
    stores = [re.compile(p) for p in (r"/ca/[^/]+/ca-key\.pem$", r"/sds/key-[^/]+\.pem$",
                                      r"/\.envoyext/jwt/[^/]+\.pem$")]
    run = Run(Capture([home, tmp, cache]), home, env, stores, tmp=str(tmp) + "/")
    mesh_files = [BOOKINFO / "platform.yaml", BOOKINFO / "gateway.yaml", BOOKINFO / "destination-rules.yaml",
                  BOOKINFO / "routing" / "all-v1.yaml", BOOKINFO / "security" / "strict-mtls.yaml",
                  home / "operator.yaml", home / "request-authn.yaml"]
    (home / "operator.yaml").write_text(OPERATOR)
    f_args = [a for f in mesh_files for a in ("-f", f)]

    # Test tokens, and the issuer's JWKS served for the mesh's jwksUri.
    token = _cli(run, "jwt mint", "jwt", "mint", "--issuer", ISSUER, "--sub", "alice", "--aud", "bookinfo",
                 "--claim", "group=admins").stdout.strip()
    _cli(run, "jwt mint --expired", "jwt", "mint", "--issuer", ISSUER, "--sub", "alice", "--expired")
    _cli(run, "jwt jwks", "jwt", "jwks", "--issuer", ISSUER)
    serve_lines: list[str] = []
    serve = _background(run, "jwt", "serve", "--issuer", ISSUER)
    try:
        uri = _read_until(serve, ISSUER, serve_lines).split("\t", 1)[1].strip()
        _read_until(serve, "Ctrl-C to stop", serve_lines)
        (home / "request-authn.yaml").write_text(REQUEST_AUTHN % (ISSUER, uri))

        _cli(run, "mesh render", "mesh", "render", *f_args, "-o", home / "rendered")
        _cli(run, "mesh certs -f", "mesh", "certs", *f_args)

        up_lines: list[str] = []
        with Sampler(run.capture):
            up = _background(run, "mesh", "up", "--workdir", home / "mesh", *f_args)
            try:
                gateway = _read_until(up, "gateway: http://", up_lines).split("gateway: ", 1)[1].strip()
                _read_until(up, "Ctrl-C to stop", up_lines)
                # Long enough for the 4 s certificates to rotate at least twice under traffic.
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    run.statuses.setdefault("token", []).append(
                        _get(gateway + "productpage", {"authorization": f"Bearer {token}"}))
                    run.statuses.setdefault("none", []).append(_get(gateway + "productpage"))
                    run.statuses.setdefault("forged", []).append(
                        _get(gateway + "productpage", {"authorization": f"Bearer {token[:-4]}AAAA"}))
                    time.sleep(0.2)
                _cli(run, "mesh certs --workdir", "mesh", "certs", "--workdir", home / "mesh")
            finally:
                _interrupt(run, "mesh up", up, up_lines)
    finally:
        _interrupt(run, "jwt serve", serve, serve_lines)

    # A mesh scenario (STRICT mTLS, an identity-based policy): its mesh runs in a temporary work dir.
    r = _cli(run, "mesh test", "mesh", "test", "--scenario", BOOKINFO / "scenarios" / "mtls.yaml")
    assert "0 failed" in r.stdout, r.stdout

    # A library filter with mTLS cases, tested (emulator and live Envoy) and published.
    _cli(run, "new", "new", "cors", "mycors", "--lang", "lua", "--dir", home / "mycors")
    for extra in (home / "mycors" / "scenarios").glob("*.yaml"):
        extra.unlink()
    (home / "mycors" / "scenarios" / "mtls.yaml").write_text(MTLS_SCENARIO)
    r = _cli(run, "test", "test", home / "mycors")
    assert "3 passed" in r.stdout, r.stdout
    _cli(run, "publish", "publish", home / "mycors", "-o", home / "mycors.yaml", "--selector", "app=reviews")
    run.capture.sample()
    return run


def test_the_commands_did_their_work(everything):
    """What was scanned is a real run: keys made and rotated, tokens checked, mTLS cases passed."""
    seen = {s.where for s in everything.capture.seen.values()}
    keys = [w for w in seen if any(p.search(w) for p in everything.stores)]
    assert any("/ca/cluster.local/ca-key.pem" in w for w in keys), sorted(seen)[:50]
    assert any("/.envoyext/jwt/" in w for w in keys)
    workload_keys = [w for w in keys if "/sds/key-" in w]
    # 7 proxies, each rotated at least once (4 s certificates, 6 s of traffic)
    assert len(workload_keys) >= 14, workload_keys
    assert any(w.endswith("/listener.key") for w in seen), "the mTLS cases' keys were not seen"
    assert any(w.endswith("envoy.log") for w in seen) and any("/rendered/" in w for w in seen)
    s = everything.statuses
    assert set(s["token"]) == {200} and set(s["none"]) == {200} and set(s["forged"]) == {401}, s


def test_no_key_anywhere_but_its_0600_key_file(everything):
    keys = {**stored_keys(everything.capture, everything.stores), **tls_test_keys()}
    assert len(keys) > 100
    assert leaks(everything.capture, keys) == []


def test_no_key_outlives_the_command_that_used_a_temporary_dir(everything):
    """Temporary work dirs that held keys (the mTLS cases', `mesh test`'s mesh, `mesh render`'s
    validation CA) are gone once their command ends: nothing with a key is left in TMPDIR."""
    tmp_keys = [s.where for s in everything.capture.seen.values()
                if s.mode is not None and s.where.startswith(everything.tmp) and PEM_BLOCK.search(s.data)]
    assert any("envoyext-mesh-" in w for w in tmp_keys) and any("envoyext-tls-" in w for w in tmp_keys), tmp_keys
    assert {"mesh test", "test", "mesh render"} <= set(everything.left_in_tmp)
    assert {what: left for what, left in everything.left_in_tmp.items() if left} == {}


def test_every_key_file_is_0600_and_its_directory_not_writable_by_others(everything):
    key_files = [s for s in everything.capture.seen.values() if s.mode is not None and PEM_BLOCK.search(s.data)]
    assert key_files
    for s in key_files:
        assert s.mode == 0o600, (s.where, oct(s.mode or 0))
        parent = Path(s.where).parent
        if parent.exists():
            assert not parent.stat().st_mode & 0o002, parent


def test_a_planted_copy_of_a_key_is_found(everything):
    """Negative control: the same scan over the same tree, with copies of real keys planted."""
    run = everything
    stored = [s for s in run.capture.seen.values() if s.mode is not None and any(p.search(s.where) for p in run.stores)]
    ca = next(s for s in stored if s.where.endswith("ca-key.pem"))
    jwt = next(s for s in stored if "/.envoyext/jwt/" in s.where)
    workload = next(s for s in stored if "/sds/key-" in s.where)
    keys = {**stored_keys(run.capture, run.stores), **tls_test_keys()}
    plant = run.home / "planted"
    plant.mkdir()
    (plant / "bootstrap.yaml").write_bytes(b"static_resources:\n  secret: |\n" + ca.data)
    (plant / "blob.bin").write_bytes(b"\x00garbage" + needles(load_key(workload.data))["DER PKCS8"] + b"\x00")
    (plant / "jwks.json").write_text('{"keys": [{"kty": "RSA", "d": "%s"}]}'
                                     % needles(load_key(jwt.data))["JWK d"].decode())
    exact = plant / "copy.pem"        # a key file's exact copy, but world-readable
    exact.write_bytes(ca.data)
    exact.chmod(0o644)
    capture = Capture([plant])
    capture.sample()
    found = leaks(capture, keys)
    assert len(found) == 4, found
    assert any("bootstrap.yaml" in f and "PEM PRIVATE KEY block" in f for f in found)
    assert any("blob.bin" in f and "DER PKCS8" in f for f in found)
    assert any("jwks.json" in f and "JWK d" in f for f in found)
    assert any("copy.pem" in f and "0o644" in f for f in found)
    # and in command output
    out = Capture([])
    out.output("a leaky command", ("token: " + needles(load_key(jwt.data))["JWK d"].decode(), ""))
    assert len(leaks(out, keys)) == 1


def test_a_killed_runs_test_keys_are_removed_by_the_next_run(everything, tmp_path):
    """The mTLS cases' keys live in a temp dir named for the run's process (envoyext-tls-<pid>-*),
    so a run killed with SIGKILL (no cleanup) leaves them only until the next run starts."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**everything.env, "TMPDIR": str(tmp)}
    project = everything.home / "mycors"
    slow = project / "scenarios" / "zz-slow.yaml"
    slow.write_text(MTLS_SCENARIO.replace("name: plaintext", "name: plaintext\n    wait_ms: 30000"))
    try:
        proc = subprocess.Popen([*ENVOYEXT, "test", str(project), "--only", "live"], cwd=everything.home, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not list(tmp.glob("envoyext-tls-*/listener.key")) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = list(tmp.glob("envoyext-tls-*"))
        assert left and left[0].name.startswith(f"envoyext-tls-{proc.pid}-"), left
        assert stat.S_IMODE(left[0].stat().st_mode) == 0o700
        proc.kill()
        proc.wait(30)
        assert list(tmp.glob("envoyext-tls-*/listener.key")), "SIGKILL ran a cleanup?"
    finally:
        slow.unlink()
    r = subprocess.run([*ENVOYEXT, "test", str(project), "--only", "live"], cwd=everything.home, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not left[0].exists() and list(tmp.glob("envoyext-tls-*")) == []
