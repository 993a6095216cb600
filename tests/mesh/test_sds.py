"""File-based SDS (envoyext.mesh.sds): the SdsSecretConfig builders (golden), the secret files
(modes, contents), the Rotator's schedule, `envoyext mesh certs`, and a real Envoy that takes a
rotated certificate without a restart while a TLS client keeps handshaking."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509

from envoyext.envoy import xds
from envoyext.envoy.identity import ProxyIdentity
from envoyext.envoy.process import EnvoyProcess
from envoyext.mesh import pki, sds

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)
GOLDEN = Path(__file__).parent / "golden" / "sds" / "secret_configs.yaml"
BOOKINFO = Path(__file__).resolve().parents[2] / "examples" / "bookinfo"


@pytest.fixture(scope="module")
def ca() -> pki.CA:
    return pki.CA.create_root("cluster.local", now=NOW)


def test_secret_configs_golden() -> None:
    got = {"default": sds.secret_config("default"), "ROOTCA": sds.secret_config("ROOTCA"),
           "validation_context": sds.validation_context(["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]),
           "validation_context_no_sans": sds.validation_context(),
           "inbound_san_prefix": sds.san_prefix("cluster.local")}
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(yaml.safe_dump(got, sort_keys=False))
    assert got == yaml.safe_load(GOLDEN.read_text())


def test_only_istio_secret_names() -> None:
    assert sds.secret_path("default") == Path("sds/default.yaml")
    with pytest.raises(ValueError):
        sds.secret_path("kubernetes://foo")


def test_written_secrets(tmp_path: Path, ca: pki.CA) -> None:
    issued = ca.issue_workload("default", "reviews", now=NOW)
    sds.write(tmp_path, issued, [ca.root], "1")
    default, root = tmp_path / "sds" / "default.yaml", tmp_path / "sds" / "ROOTCA.yaml"
    key = tmp_path / "sds" / "key-1.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600                     # the key
    assert stat.S_IMODE((tmp_path / "sds" / "cert-chain-1.pem").stat().st_mode) == 0o644  # the control
    assert key.read_bytes() == issued.key_pem()
    doc = yaml.safe_load(default.read_text())
    secret = doc["resources"][0]
    assert doc["version_info"] == "1" and secret["@type"] == sds.SECRET and secret["name"] == "default"
    assert secret["tls_certificate"]["private_key"] == {"filename": "sds/key-1.pem"}
    assert "PRIVATE KEY" not in default.read_text()
    # the next version keeps the previous pair (Envoy may be reading it), drops older ones
    sds.write(tmp_path, issued, [ca.root], "2")
    sds.write(tmp_path, issued, [ca.root], "3")
    assert sorted(p.name for p in (tmp_path / "sds").glob("*.pem")) == [
        "cert-chain-2.pem", "cert-chain-3.pem", "key-2.pem", "key-3.pem"]
    assert sds.delivered_cert(default) == issued.cert
    rdoc = yaml.safe_load(root.read_text())["resources"][0]
    assert rdoc["name"] == "ROOTCA"
    assert x509.load_pem_x509_certificate(rdoc["validation_context"]["trusted_ca"]["inline_string"].encode()) == ca.root
    assert "PRIVATE KEY" not in root.read_text()


def test_rotator_schedule(tmp_path: Path, ca: pki.CA) -> None:
    r = sds.Rotator(ca, "default", "reviews", ttl=dt.timedelta(hours=24))
    assert r.due(NOW)  # nothing issued yet
    first = r.rotate(tmp_path, NOW)
    assert r.spiffe_id == "spiffe://cluster.local/ns/default/sa/reviews"
    assert r.next_rotation() == NOW + dt.timedelta(hours=12)
    assert not r.due(NOW + dt.timedelta(hours=12) - dt.timedelta(seconds=1))   # the control
    assert r.due(NOW + dt.timedelta(hours=12))
    assert sds.rotate_due({"p": r}, tmp_path.parent, NOW + dt.timedelta(hours=1)) == []
    (tmp_path.parent / "p").mkdir(exist_ok=True)
    assert sds.rotate_due({"p": r}, tmp_path.parent, NOW + dt.timedelta(hours=13)) == ["p"]
    assert r.current is not None and r.current.cert.serial_number != first.cert.serial_number
    assert sds.delivered_cert(tmp_path.parent / "p" / "sds" / "default.yaml") == r.current.cert


def test_table_rows(tmp_path: Path, ca: pki.CA) -> None:
    for name, sa in (("reviews-v1-0", "bookinfo-reviews"), ("details-v1-0", "bookinfo-details")):
        sds.write(tmp_path / name, ca.issue_workload("default", sa, now=NOW), [ca.root], "1")
    rows = sds.rows_from_workdir(tmp_path)
    assert [r.proxy for r in rows] == ["details-v1-0", "reviews-v1-0"]
    assert rows[1].identity == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert rows[1].issuer == "CN=Root CA,O=cluster.local"
    assert rows[1].next_rotation == NOW + dt.timedelta(hours=12)
    text = sds.table(rows)
    assert text.splitlines()[0].split() == ["PROXY", "IDENTITY", "ISSUER", "NOT", "BEFORE", "NOT", "AFTER", "NEXT",
                                            "ROTATION"]
    assert "2026-12-06 00:00:00Z" in text and "PRIVATE" not in text


def test_certs_command_for_a_mesh_and_a_workdir(tmp_path: Path, ca: pki.CA) -> None:
    from envoyext.cli_mesh import mesh
    files = ["-f", str(BOOKINFO / "platform.yaml"), "-f", str(BOOKINFO / "gateway.yaml")]
    run = CliRunner().invoke(mesh, ["certs", *files])
    assert run.exit_code == 0, run.output
    assert "spiffe://cluster.local/ns/default/sa/bookinfo-productpage" in run.output
    assert "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account" in run.output
    sds.write(tmp_path / "ratings-v1-0", ca.issue_workload("default", "bookinfo-ratings", now=NOW), [ca.root], "1")
    run = CliRunner().invoke(mesh, ["certs", "--workdir", str(tmp_path)])
    assert run.exit_code == 0, run.output
    assert "ratings-v1-0" in run.output and "2026-12-06 00:00:00Z" in run.output


@pytest.mark.parametrize("args", [[], ["--workdir", "."]])
def test_certs_command_bad_input_is_one_line(args: list[str], tmp_path: Path) -> None:
    from envoyext.cli_mesh import mesh
    args = [a if a != "." else str(tmp_path) for a in args]
    run = CliRunner().invoke(mesh, ["certs", *args])
    assert run.exit_code == 2
    assert len(run.output.strip().splitlines()) == 1 and "fix:" in run.output


# -- live: a real Envoy takes a rotated certificate without a restart -------------------------------

def _tls_bootstrap() -> dict:
    tls = {"@type": xds.T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "require_client_certificate": True,
           "common_tls_context": {
               "tls_certificate_sds_secret_configs": [sds.secret_config("default")],
               "combined_validation_context": {
                   "default_validation_context": {"match_typed_subject_alt_names": [sds.san_prefix("cluster.local")]},
                   "validation_context_sds_secret_config": sds.secret_config("ROOTCA")}}}
    hcm = xds.http_connection_manager("ingress_http", xds.route_config("local", [xds.virtual_host(
        "all", ["*"], [xds.route("ok", {"prefix": "/"}, direct_response=xds.direct_response(200, "ok"))])]),
        [xds.router_filter()])
    listener = xds.listener("envoyext", ("127.0.0.1", 0), [xds.filter_chain(
        [xds.network_filter(xds.HCM_NAME, hcm)],
        transport_socket=xds.transport_socket("envoy.transport_sockets.tls", tls))])
    return xds.bootstrap(node=xds.node("sidecar~127.0.0.1~reviews-v1-0.default~default.svc.cluster.local", "reviews"),
                         admin=("127.0.0.1", 0), listeners=[listener], clusters=[])


def _client_context(client: pki.Issued, trust: x509.Certificate, d: Path) -> ssl.SSLContext:
    pki.write_public(d / "client.pem", client.chain_pem())
    pki.write_key(d / "client-key.pem", client.key_pem())
    pki.write_public(d / "trust.pem", pki.cert_pem(trust))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE SVIDs name no host; the chain is still verified
    ctx.load_verify_locations(d / "trust.pem")
    ctx.load_cert_chain(d / "client.pem", d / "client-key.pem")
    return ctx


def _get(ctx: ssl.SSLContext | None, addr: tuple[str, int]) -> tuple[int, bytes]:
    """One request on a fresh connection (a fresh handshake); (server cert serial, response head)."""
    with socket.create_connection(addr, timeout=10) as raw:
        if ctx is None:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return 0, raw.recv(100)
        with ctx.wrap_socket(raw) as s:
            serial = x509.load_der_x509_certificate(s.getpeercert(binary_form=True) or b"").serial_number
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return serial, s.recv(100)


def _refused(ctx: ssl.SSLContext | None, addr: tuple[str, int]) -> bool:
    """No HTTP response: the handshake failed, or the connection closed without a byte."""
    try:
        _, head = _get(ctx, addr)
    except (ssl.SSLError, OSError):
        return True
    return not head.startswith(b"HTTP/1.1 200")


def _served_serials(envoy: EnvoyProcess) -> set[int]:
    assert envoy.admin is not None
    doc = json.loads(envoy.admin.get("/certs"))
    return {int(c["serial_number"], 16) for entry in doc.get("certificates", []) for c in entry.get("cert_chain", [])}


def _wait(cond, what: str, limit: float = 30) -> None:
    """Poll until `cond()`; a limit only so a broken run ends (not a timing assertion)."""
    import time
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_envoy_takes_rotated_cert_without_restart(tmp_path: Path) -> None:
    ca = pki.CA.create_root("cluster.local")
    other = pki.CA.create_root("cluster.local")  # another CA: its clients must be refused
    proxy_dir = tmp_path / "reviews-v1-0"
    # a 6 s certificate: due at half-life, 3 s after issue, on the real clock (a certificate issued
    # "in the future" would not yet be valid to the client)
    rotator = sds.Rotator(ca, "default", "bookinfo-reviews", ttl=dt.timedelta(seconds=6))
    first = rotator.rotate(proxy_dir)
    good = _client_context(ca.issue_client("client", spiffe=pki.spiffe_id("cluster.local", "default", "sleep")),
                           ca.root, tmp_path / "good")
    foreign = _client_context(other.issue_client("client", spiffe=pki.spiffe_id("cluster.local", "default", "sleep")),
                              ca.root, tmp_path / "foreign")
    boot = _tls_bootstrap()
    assert "PRIVATE KEY" not in json.dumps(boot)
    # check_config=False: validate mode runs elsewhere than the proxy dir, where sds/ paths resolve
    with EnvoyProcess(boot, workdir=proxy_dir / "run", cwd=proxy_dir, check_config=False,
                      identity=ProxyIdentity(component_log_level="config:debug,secret:debug")) as envoy:
        assert envoy.listener is not None and envoy.proc is not None
        addr, pid = envoy.listener, envoy.proc.pid
        assert _served_serials(envoy) == {first.cert.serial_number}

        # negative controls: a plaintext client and a client of another CA get no response
        assert _refused(None, addr) and _refused(foreign, addr) and not _refused(good, addr)

        results: list[tuple[int, bytes] | BaseException] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    results.append(_get(good, addr))
                except BaseException as e:  # every failure counts
                    results.append(e)

        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        _wait(lambda: len(results) >= 5, "traffic before rotation")
        # the runtime's path: poll due(), renew with rotate_due once it is
        due_at = rotator.next_rotation()
        assert due_at is not None and not rotator.due(due_at - dt.timedelta(seconds=1))
        _wait(rotator.due, "half-life on the clock")
        assert sds.rotate_due({"reviews-v1-0": rotator}, tmp_path) == ["reviews-v1-0"]
        second = rotator.current
        assert second is not None and second.cert.serial_number != first.cert.serial_number
        _wait(lambda: _served_serials(envoy) == {second.cert.serial_number}, "admin /certs shows the new serial")
        _wait(lambda: any(isinstance(r, tuple) and r[0] == second.cert.serial_number for r in results[-3:])
              and sum(1 for r in results if isinstance(r, tuple) and r[0] == second.cert.serial_number) >= 5,
              f"handshakes with the new certificate (results: {_summary(results)})")
        stop.set()
        t.join(15)
        assert envoy.proc.pid == pid and envoy.proc.poll() is None  # same process, no restart
        failures = [r for r in results if not (isinstance(r, tuple) and r[1].startswith(b"HTTP/1.1 200"))]
        assert failures == []
        seen = [r[0] for r in results if isinstance(r, tuple)]
        assert seen[0] == first.cert.serial_number and seen[-1] == second.cert.serial_number
        dump = envoy.admin.get("/config_dump?include_eds").decode() if envoy.admin else ""
        log = envoy.log_text()
        bootstrap_file = (proxy_dir / "run" / "envoy.json").read_text()

    # no private key anywhere but the 0600 secret (the scan's control: it does find it there)
    secrets = [first.key_pem().decode(), second.key_pem().decode()]

    def leaks(text: str) -> bool:
        return "PRIVATE KEY-----" in text or any(_key_body(k) in text for k in secrets)
    assert not leaks(dump), "config_dump"
    assert not leaks(bootstrap_file), "bootstrap"
    assert not leaks(log), [ln[:160] for ln in log.splitlines() if "PRIVATE KEY" in ln or "private_key" in ln]
    assert "sds/key-" in log  # the control for the log scan: debug lines name the key file, not its bytes
    assert not leaks((proxy_dir / "sds" / "default.yaml").read_text())
    keys = sorted((proxy_dir / "sds").glob("key-*.pem"))
    assert keys and all(leaks(k.read_text()) and stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)


def _summary(results: list) -> str:
    from collections import Counter
    return str(Counter(f"{r[0]:x}"[:8] + " " + r[1][:12].decode() if isinstance(r, tuple) else repr(r)[:80]
                       for r in list(results)))


def _key_body(pem: str) -> str:
    """A distinctive line of the key (base64), found even if re-wrapped or escaped into JSON."""
    return pem.splitlines()[5]


def test_provision_a_mesh(tmp_path: Path) -> None:
    from envoyext.runners.mesh import build, load_resources
    m = build(load_resources([BOOKINFO / "platform.yaml", BOOKINFO / "gateway.yaml"]))
    rotators = sds.provision(m, tmp_path, ttl=dt.timedelta(hours=1), intermediate=True)
    assert set(rotators) == {p.name for p in m.proxies}
    assert stat.S_IMODE((tmp_path / "ca" / "cluster.local" / "ca-key.pem").stat().st_mode) == 0o600
    rows = {r.proxy: r for r in sds.rows_from_workdir(tmp_path)}
    assert set(rows) == set(rotators)
    assert rows["productpage-v1-0"].identity == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert rows["productpage-v1-0"].issuer == "CN=Intermediate CA,O=cluster.local"
    assert rows["productpage-v1-0"].not_after - rows["productpage-v1-0"].not_before == dt.timedelta(hours=1)
    assert sds.rotate_due(rotators, tmp_path) == []  # nothing due before half-life (the control)
    # a second provision reuses the CA on disk: certificates from both chain to one root
    again = sds.provision(m, tmp_path)
    assert again["productpage-v1-0"].ca.root == rotators["productpage-v1-0"].ca.root
