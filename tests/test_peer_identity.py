"""A case's connection identity (`connection: {mtls: ...}`, issue 11 item 5): the negative controls
for the differential scenarios tests/lua/scenarios/peer_identity.yaml and tests/wasm/scenarios/probe.yaml
(a wrong identity must fail in both runners), and one line for each bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from envoyext import scenario
from envoyext.envoy import peer_tls
from envoyext.errors import UserError
from envoyext.scenario import MtlsPeer
from tests.lua.test_differential import DIFFERENTIAL

LUA = Path(__file__).parent / "lua" / "scenarios" / "peer_identity.yaml"
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"


def test_a_wrong_identity_fails_in_both_runners():
    sc, emu, real = DIFFERENTIAL.runs(LUA)
    case = copy.deepcopy(sc.cases[0])
    case.expect = {"upstream": {"headers": {"x-peer": "spiffe://cluster.local/ns/default/sa/details"}}}
    assert scenario.check(case, emu[case.name]) and scenario.check(case, real[case.name])
    denied = copy.deepcopy(sc.cases[1])
    denied.expect = {"status": 200}
    assert scenario.check(denied, emu[denied.name]) and scenario.check(denied, real[denied.name])


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
