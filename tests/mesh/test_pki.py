"""The mesh CA (envoyext.mesh.pki): Istio's certificate shape and defaults, each check with a
negative control (another CA's certificate, a wrong lifetime, a world-readable file)."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification

from envoyext.errors import UserError
from envoyext.mesh import pki

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def ca() -> pki.CA:
    return pki.CA.create_root("cluster.local", now=NOW)


@pytest.fixture(scope="module")
def other_ca() -> pki.CA:
    return pki.CA.create_root("cluster.local", now=NOW)


def verifies(root: pki.CA, issued: pki.Issued, at: dt.datetime = NOW + dt.timedelta(minutes=1)) -> bool:
    """Path validation as a TLS peer does it: the leaf (and its intermediates) up to `root`."""
    v = verification.PolicyBuilder().store(verification.Store([root.root])).time(at).build_client_verifier()
    try:
        v.verify(issued.cert, list(issued.chain))
    except verification.VerificationError:
        return False
    return True


def test_workload_svid_has_istio_shape(ca: pki.CA) -> None:
    svid = ca.issue_workload("default", "bookinfo-productpage", now=NOW)
    assert pki.uri_sans(svid.cert) == ["spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]
    assert len(svid.cert.subject) == 0
    san = svid.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280: an empty subject makes the SAN critical
    assert not svid.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = svid.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH}
    assert svid.cert.issuer == ca.cert.subject
    assert pki.identity_of(svid.cert) == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"


def test_istio_defaults_rsa_2048_and_24h(ca: pki.CA) -> None:
    svid = ca.issue_workload("default", "reviews", now=NOW)
    assert isinstance(svid.key, rsa.RSAPrivateKey) and svid.key.key_size == 2048
    assert svid.not_after == NOW + dt.timedelta(hours=24)
    assert svid.not_before <= NOW
    ecc = ca.issue_workload("default", "reviews", now=NOW, key_type="ecdsa")
    assert isinstance(ecc.key, ec.EllipticCurvePrivateKey) and ecc.key.curve.name == "secp256r1"


def test_rotation_at_half_life(ca: pki.CA) -> None:
    svid = ca.issue_workload("default", "reviews", now=NOW)
    assert svid.not_before == NOW and svid.rotate_at == NOW + dt.timedelta(hours=12)
    short = ca.issue_workload("default", "reviews", now=NOW, ttl=dt.timedelta(minutes=10))
    assert short.not_after == NOW + dt.timedelta(minutes=10)
    assert short.rotate_at == NOW + dt.timedelta(minutes=5)


@pytest.mark.parametrize("ttl", [dt.timedelta(0), dt.timedelta(days=91)])
def test_lifetime_out_of_range_is_one_user_error(ca: pki.CA, ttl: dt.timedelta) -> None:
    with pytest.raises(UserError) as e:
        ca.issue_workload("default", "reviews", now=NOW, ttl=ttl)
    assert "ttl" in e.value.one_line() and "fix:" in e.value.one_line()


def test_max_lifetime_is_accepted(ca: pki.CA) -> None:  # the control: 90 days is Istio's maximum
    ninety = dt.timedelta(days=90)
    assert ca.issue_workload("default", "r", now=NOW, ttl=ninety).not_after == NOW + ninety


def test_svid_verifies_against_its_root_not_another_ca(ca: pki.CA, other_ca: pki.CA) -> None:
    svid = ca.issue_workload("default", "reviews", now=NOW)
    assert verifies(ca, svid)
    assert not verifies(other_ca, svid)
    assert ca.cert.public_key() != other_ca.cert.public_key()


def test_intermediate_signs_and_chain_reaches_root(ca: pki.CA, other_ca: pki.CA) -> None:
    inter = ca.create_intermediate(now=NOW)
    svid = inter.issue_workload("default", "reviews", now=NOW)
    assert svid.cert.issuer == inter.cert.subject and inter.root is ca.root
    assert svid.chain == (inter.cert,)
    assert svid.chain_pem().count(b"BEGIN CERTIFICATE") == 2
    assert verifies(ca, svid)
    assert not verifies(other_ca, svid)
    no_chain = pki.Issued(svid.cert, svid.key, ())  # the control: without the intermediate it fails
    assert not verifies(ca, no_chain)


def test_client_cert(ca: pki.CA) -> None:
    c = ca.issue_client("test-client", spiffe="spiffe://cluster.local/ns/default/sa/sleep", now=NOW)
    assert c.cert.subject.rfc4514_string() == "CN=test-client"
    assert pki.identity_of(c.cert) == "spiffe://cluster.local/ns/default/sa/sleep"
    plain = ca.issue_client("curl", now=NOW)
    assert pki.uri_sans(plain.cert) == [] and pki.identity_of(plain.cert) == "CN=curl"
    assert verifies(ca, c)


def test_keys_are_written_0600_even_with_an_open_umask(tmp_path) -> None:
    old = os.umask(0)
    try:
        pki.write_key(tmp_path / "k.pem", b"secret")
        pki.write_public(tmp_path / "c.pem", b"public")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pem").stat().st_mode) == 0o644  # the control: public stays readable
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_ca_saved_in_istio_layout_and_loaded_back(tmp_path) -> None:
    d = tmp_path / "ca" / "cluster.local"
    ca = pki.CA.load_or_create(d, "cluster.local", intermediate=True)
    assert sorted(p.name for p in d.iterdir()) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    assert stat.S_IMODE((d / "ca-key.pem").stat().st_mode) == 0o600
    again = pki.CA.load_or_create(d, "cluster.local")
    assert again.cert == ca.cert and again.root == ca.root and again.chain == ca.chain
    # made with the clock's time (not NOW), so checked at the clock's time
    assert verifies(ca, again.issue_workload("default", "r"), at=pki.utcnow())


def test_unreadable_ca_is_one_user_error(tmp_path) -> None:
    d = tmp_path / "ca"
    pki.CA.load_or_create(d, "cluster.local")
    (d / "ca-cert.pem").write_text("not a certificate")
    with pytest.raises(UserError) as e:
        pki.CA.load_or_create(d, "cluster.local")
    assert str(d) in e.value.one_line() and "fix:" in e.value.one_line()
