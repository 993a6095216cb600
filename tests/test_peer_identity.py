"""A case's connection identity (`connection: {mtls: ...}`, issue 11 item 5): the negative controls
for the differential scenarios tests/lua/scenarios/peer_identity.yaml and tests/wasm/scenarios/probe.yaml
(a wrong identity must fail in both runners); the C proxy-wasm filter tests/identity/peer-authz-c,
which authorizes on the peer's SPIFFE ID, run emulated and live with its controls; and one line
for each bad input."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from envoyext import project as project_mod
from envoyext import scenario, testrun
from envoyext.envoy import peer_tls
from envoyext.errors import UserError
from envoyext.runners import EMULATED, LIVE
from envoyext.scenario import MtlsPeer
from tests.lua.test_differential import DIFFERENTIAL

HERE = Path(__file__).parent
LUA = HERE / "lua" / "scenarios" / "peer_identity.yaml"
PROBE = HERE / "wasm" / "scenarios" / "probe.yaml"
C_PROJECT = HERE / "identity" / "peer-authz-c"
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"
DETAILS = "spiffe://cluster.local/ns/default/sa/details"


def test_a_wrong_identity_fails_in_both_runners():
    sc, emu, real = DIFFERENTIAL.runs(LUA)
    case = copy.deepcopy(sc.cases[0])
    case.expect = {"upstream": {"headers": {"x-peer": DETAILS}}}
    assert scenario.check(case, emu[case.name]) and scenario.check(case, real[case.name])
    denied = copy.deepcopy(sc.cases[1])
    denied.expect = {"status": 200}
    assert scenario.check(denied, emu[denied.name]) and scenario.check(denied, real[denied.name])


def test_a_wrong_identity_fails_in_both_runners_for_the_wasm_probe():
    from tests.wasm.test_differential import DIFFERENTIAL as WASM
    sc, emu, real = WASM.runs(PROBE)
    case = copy.deepcopy(next(c for c in sc.cases if c.name.startswith("the peer's identity over mTLS")))
    details_hex = DETAILS.encode().hex()
    case.expect = {"logs_contain": f"prop connection.uri_san_peer_certificate = 0 {details_hex}"}
    assert scenario.check(case, emu[case.name]) and scenario.check(case, real[case.name])
    plain = copy.deepcopy(next(c for c in sc.cases if c.name == "plaintext has no TLS facts"))
    plain.expect = {"logs_contain": "prop connection.mtls = 0 01"}
    assert scenario.check(plain, emu[plain.name]) and scenario.check(plain, real[plain.name])


def _c_project(tmp: Path, allow: str = PRODUCTPAGE) -> project_mod.Project:
    dest = tmp / "peer-authz-c"
    shutil.copytree(C_PROJECT, dest, ignore=shutil.ignore_patterns("build"))
    f = dest / "filter.yaml"
    data = yaml.safe_load(f.read_text())
    data["config"] = {"allow": allow}
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return project_mod.load(dest)


def _run_c(tmp: Path, allow: str = PRODUCTPAGE) -> dict[str, testrun.CaseResult]:
    proj = _c_project(tmp, allow)
    results = testrun.run_project(proj, project_mod.build(proj), runners=(EMULATED, LIVE))
    return {r.case: r for r in results}


@pytest.fixture(scope="module")
def c_results(tmp_path_factory):
    return _run_c(tmp_path_factory.mktemp("c"))


def test_the_c_filter_authorizes_on_the_peer_spiffe_id_emulated_and_live(c_results):
    assert len(c_results) == 4
    for r in c_results.values():
        assert set(r.observations) == {EMULATED, LIVE}, r.case
        assert r.passed, (r.case, r.failures, r.disagreements)


def test_the_c_filter_controls_fail(c_results):
    """A wrong expectation fails in both runners: another peer, a wrong digest, a let-in refusal."""
    sc = scenario.load(C_PROJECT / "scenarios" / "peers.yaml")
    allowed, refused, plain = sc.cases[0], sc.cases[2], sc.cases[3]
    wrongs = [(allowed, {"upstream": {"headers": {"x-peer": DETAILS}}}),
              (allowed, {"upstream": {"headers": {"x-digest": "00" * 32}}}),
              (allowed, {"upstream": {"headers": {"x-tls": "TLSv1.2"}}}),
              (refused, {"status": 200}),
              (plain, {"body": "peer [<absent>] (mtls true) is not allowed"})]
    for case, expect in wrongs:
        wrong = copy.deepcopy(case)
        wrong.expect = expect
        obs = c_results[case.name].observations
        assert scenario.check(wrong, obs[EMULATED]) and scenario.check(wrong, obs[LIVE]), (case.name, expect)


def test_the_c_filter_for_another_identity_refuses_productpage(tmp_path):
    res = _run_c(tmp_path, allow=DETAILS)
    r = res["productpage's identity is let in, with every connection attribute as Envoy's"]
    assert not r.passed
    for runner in (EMULATED, LIVE):
        resp = r.observations[runner].response
        assert resp is not None and resp.status == 403, runner
        assert PRODUCTPAGE.encode() in resp.body     # the peer the filter saw
    assert res["details' identity is refused"].observations[LIVE].response.status == 200


def test_each_peer_gets_its_own_certificate():
    a = peer_tls.connection_facts(MtlsPeer(PRODUCTPAGE))
    b = peer_tls.connection_facts(MtlsPeer("spiffe://cluster.local/ns/default/sa/details"))
    assert a["sha256PeerCertificateDigest"] != b["sha256PeerCertificateDigest"]
    assert a["serialNumberPeerCertificate"] != b["serialNumberPeerCertificate"]
    assert peer_tls.connection_facts(MtlsPeer(PRODUCTPAGE)) == a   # deterministic


def test_key_files_are_private(tmp_path):
    files = peer_tls.write_files(tmp_path, [MtlsPeer(PRODUCTPAGE)])
    keys = [files.key, *(k for _, k in files.clients.values())]
    assert all(k.stat().st_mode & 0o777 == 0o600 for k in keys)


@pytest.mark.parametrize("connection, mesh, where", [
    ({"mtls": {"peer": "not a uri"}}, False, "cases[0].connection.mtls.peer"),
    ({"mtls": {"peer": PRODUCTPAGE, "subject": "not=a=name=="}}, False, "cases[0].connection.mtls.subject"),
    ({"mtls": {"peer": "spiffe://cluster.local/ns/default/sa/caf\u00e9"}}, False, "cases[0].connection.mtls.peer"),
    ({"mtls": {"peer": PRODUCTPAGE, "subject": "1.2.840.113549.1.9.1=a@b"}}, False, "cases[0].connection.mtls.subject"),
    ({"mtls": {"peer": PRODUCTPAGE, "subject": "CN=a\\01b"}}, False, "cases[0].connection.mtls.subject"),
    ({"mtls": {"peer": PRODUCTPAGE, "dns": ["caf\u00e9.example"]}}, False, "cases[0].connection.mtls.dns[0]"),
    ({"mtls": {"peer": PRODUCTPAGE}}, True, "cases[0].connection"),
])
def test_bad_connection_is_one_line(tmp_path, connection, mesh, where):
    data: dict = {"name": "s", "cases": [{"name": "c", "connection": connection}]}
    if mesh:
        (tmp_path / "m.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n")
        data["mesh"] = {"resources": ["m.yaml"]}
        data["cases"][0].update({"from": "ingress"})
    path = tmp_path / "s.yaml"

    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as e:
        scenario.load(path)
    assert where in str(e.value) and "\n" not in str(e.value) and "fix:" in str(e.value), str(e.value)
