"""Mesh security against live Envoys (issue 11): Bookinfo with STRICT mTLS.

- examples/bookinfo/scenarios/mtls.yaml: productpage's SPIFFE identity reaches reviews (in the
  x-forwarded-client-cert its sidecar adds) and an AuthorizationPolicy on that identity lets only
  productpage's GETs in; the ingress gateway reaches productpage over mTLS.
- examples/bookinfo/scenarios/cert-rotation.yaml: 4-second certificates renewed while every
  request makes a new handshake, with zero failures; the control stops rotation and sees failures.
- Here directly: a plaintext client and a client whose certificate is from another CA are refused
  by reviews' sidecar, while a client with a certificate from the mesh CA is answered (control).

Every scenario check has a negative control: the same observation judged against a wrong
expectation must fail.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path

import pytest

from envoyext import scenario
from envoyext.mesh import build, pki, resources, runtime
from envoyext.mesh.runtime import MeshRuntime
from tests.mesh.test_bookinfo import SCENARIOS, SUITE, _failures, _judge_again, run

STRICT_FILES = [SUITE / f for f in ("platform.yaml", "gateway.yaml", "destination-rules.yaml", "routing/all-v1.yaml",
                                    "security/strict-mtls.yaml")]
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"


def _loaded_and_run(name: str):
    sc = scenario.load(SCENARIOS / name)
    return sc, run(sc)


@pytest.fixture(scope="module")
def mtls():
    return _loaded_and_run("mtls.yaml")


def test_strict_mtls_scenario_passes(mtls):
    sc, results = mtls
    assert [r.case for r in results] == [c.name for c in sc.cases]
    assert _failures(results) == {}


def test_strict_mtls_negative_controls(mtls):
    sc, results = mtls
    first, denied = sc.cases[0].name, sc.cases[1].name
    # the identity reviews saw is productpage's, not details'
    assert _judge_again(sc, results, first, {"workloads": {"reviews-v1": {"headers_contain": {
        "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/bookinfo-details"}}}})
    # details really was denied, and reviews' app never saw it
    assert _judge_again(sc, results, denied, {"status": 200})
    assert _judge_again(sc, results, denied, {"workloads": {"reviews-v1": {"called": True}}})


@pytest.fixture(scope="module")
def rotation():
    return _loaded_and_run("cert-rotation.yaml")


def test_certificates_rotate_under_traffic_with_zero_failures(rotation):
    sc, results = rotation
    assert _failures(results) == {}
    stats = results[0].observations["mesh"].stats
    assert stats["sds.default.update_success"] >= 2


def test_rotation_negative_controls(rotation):
    sc, results = rotation
    name = sc.cases[0].name
    assert _judge_again(sc, results, name, {"stats": {"sds.default.update_success": {"max": 0}}})
    assert _judge_again(sc, results, name, {"statuses": {"200": 599}})


def test_without_rotation_the_same_traffic_fails(monkeypatch):
    """The control for the rotation scenario: with the rotation thread idle, the 4-second
    certificates expire during the case and new handshakes fail, so the scenario fails."""
    monkeypatch.setattr(runtime, "ROTATION_POLL", 3600.0)
    sc = scenario.load(SCENARIOS / "cert-rotation.yaml")
    failures = _failures(run(sc))
    assert failures, "the rotation scenario passed without rotation: it does not test rotation"
    # requests fail (an expired certificate fails the handshake), not only the rotation count
    assert any("statuses" in f for f in failures[sc.cases[0].name]), failures


# --- clients from outside the mesh, straight to reviews' sidecar ------------------------------------


@pytest.fixture(scope="module")
def strict_mesh(tmp_path_factory):
    res = resources.load(STRICT_FILES)
    with MeshRuntime(lambda plan: build.mesh(res, plan), tmp_path_factory.mktemp("strict")) as rt:
        yield rt


def _client_files(folder: Path, issued: pki.Issued) -> tuple[Path, Path]:
    chain, key = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(issued.chain_pem())
    pki.write_key(key, issued.key_pem())
    return chain, key


def _get_over_tls(address: str, port: int, root: Path, chain: Path, key: Path) -> int:
    """A GET to reviews over TLS, presenting `chain`, trusting the mesh root; the status."""
    ctx = ssl.create_default_context(cafile=str(root))
    ctx.check_hostname = False            # an SVID names a SPIFFE ID, no host name
    ctx.load_cert_chain(chain, key)
    ctx.set_alpn_protocols(["istio-http/1.1", "http/1.1"])
    conn = http.client.HTTPSConnection(address, port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/reviews/0", headers={"host": "reviews:9080"})
        return conn.getresponse().status
    finally:
        conn.close()


def _reviews(rt: MeshRuntime) -> tuple[str, int, pki.CA]:
    assert rt.mesh is not None
    pod = next(p for p in rt.mesh.proxies if p.workload.deployment == "reviews-v1")
    return pod.workload.ip, 9080, rt.rotators[pod.name].ca


def test_a_client_with_a_mesh_certificate_is_answered(strict_mesh, tmp_path):
    """The control for the two refusals below: the same client, with a certificate of the mesh CA."""
    address, port, ca = _reviews(strict_mesh)
    (tmp_path / "root.pem").write_bytes(pki.cert_pem(ca.root))
    chain, key = _client_files(tmp_path, ca.issue_workload("default", "bookinfo-productpage"))
    assert _get_over_tls(address, port, tmp_path / "root.pem", chain, key) == 200


def test_a_plaintext_client_is_refused(strict_mesh):
    address, port, _ = _reviews(strict_mesh)
    with socket.create_connection((address, port), timeout=5) as s:
        s.sendall(b"GET /reviews/0 HTTP/1.1\r\nhost: reviews:9080\r\n\r\n")
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/"), answer[:80]


def test_a_client_of_another_ca_is_refused(strict_mesh, tmp_path):
    address, port, ca = _reviews(strict_mesh)
    (tmp_path / "root.pem").write_bytes(pki.cert_pem(ca.root))
    other = pki.CA.create_root("cluster.local")   # same trust domain, same SPIFFE ID: another root
    chain, key = _client_files(tmp_path, other.issue_workload("default", "bookinfo-productpage"))
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        _get_over_tls(address, port, tmp_path / "root.pem", chain, key)
