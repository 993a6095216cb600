"""A filter that authorizes on the peer's SPIFFE ID, unit-tested and then seen working in the mesh
(issue 11 item 5): tests/mesh/testdata/peer-authz lets in only details' identity. Emulated and
live, each case declares its peer (connection.mtls); attached to productpage's inbound side in
Bookinfo, details' sidecar is the real peer over auto-mTLS, so the case declaring details runs
there and passes, while the case declaring ratings is NOT RUN (the mesh's peer is details), never
passed. Negative controls: a wrong expectation fails in the mesh, and the filter configured for
another identity refuses details' real connection."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from envoyext import project as project_mod
from envoyext import scenario, testrun
from envoyext.runners import EMULATED, LIVE, MESH

HERE = Path(__file__).parent
PLATFORM = HERE.resolve().parents[1] / "examples" / "bookinfo" / "platform.yaml"
DETAILS = "spiffe://cluster.local/ns/default/sa/bookinfo-details"


def project(tmp: Path, allow: str = DETAILS) -> project_mod.Project:
    dest = tmp / "peer-authz"
    shutil.copytree(HERE / "testdata" / "peer-authz", dest)
    f = dest / "filter.yaml"
    data = yaml.safe_load(f.read_text())
    data["config"] = {"allow": allow}
    data["mesh"] = {"resources": [str(PLATFORM)], "workload": "productpage-v1"}
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return project_mod.load(dest)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    proj = project(tmp_path_factory.mktemp("p"))
    artifact = project_mod.build(proj)
    return testrun.run_project(proj, artifact, runners=(EMULATED, LIVE, MESH))


def _by_case(results):
    return {r.case: r for r in results}


def test_declared_peers_pass_emulated_and_live_and_the_real_peer_passes_in_the_mesh(results):
    by = _by_case(results)
    allowed, refused = by["details' identity is let in"], by["ratings' identity is refused"]
    assert allowed.passed and refused.passed, [r.failures for r in results]
    assert set(allowed.observations) == {EMULATED, LIVE, MESH}
    assert MESH not in refused.observations or refused.observations[MESH].error.startswith("NOT RUN")
    assert MESH in refused.not_run and "the mesh the filter's peer is the sender" in refused.not_run[MESH]
    mesh_obs = allowed.observations[MESH]
    assert mesh_obs.response is not None and mesh_obs.response.status == 200


def test_a_wrong_expectation_fails_in_the_mesh(results):
    by = _by_case(results)
    obs = by["details' identity is let in"].observations[MESH]
    sc = scenario.load(HERE / "testdata" / "peer-authz" / "scenarios" / "peers.yaml")
    wrong = copy.deepcopy(sc.cases[0])
    wrong.expect = {"upstream": {"headers": {"x-peer": "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"}}}
    assert scenario.check(wrong, obs)


def test_the_filter_for_another_identity_refuses_details_real_connection(tmp_path):
    proj = project(tmp_path, allow="spiffe://cluster.local/ns/default/sa/bookinfo-ratings")
    artifact = project_mod.build(proj)
    res = _by_case(testrun.run_project(proj, artifact, runners=(MESH,)))
    obs = res["details' identity is let in"].observations[MESH]
    assert obs.response is not None and obs.response.status == 403
    assert b"bookinfo-details" in obs.response.body   # the peer the filter really saw
