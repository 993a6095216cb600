"""PeerAuthentication resolution (reference §7): mesh → namespace → workload, UNSET inherits,
portLevelMtls only on workload policies keyed on the target port, PERMISSIVE by default."""

import pytest

from envoyext.errors import UserError
from envoyext.mesh.translate import peer_authn
from tests.mesh.translate.meshes import bookinfo


def pa(name: str, namespace: str, mode: str | None = None, selector: dict | None = None,
       ports: dict | None = None) -> str:
    lines = ["apiVersion: security.istio.io/v1", "kind: PeerAuthentication",
             f"metadata: {{name: {name}, namespace: {namespace}}}", "spec:"]
    if selector:
        lines.append(f"  selector: {{matchLabels: {selector}}}")
    if mode:
        lines.append(f"  mtls: {{mode: {mode}}}")
    if ports:
        lines.append("  portLevelMtls:")
        lines += [f"    {p}: {{mode: {m}}}" for p, m in ports.items()]
    if not (selector or mode or ports):
        lines[-1] = "spec: {}"
    return "\n".join(lines) + "\n"


def modes(*docs: str) -> dict[str, peer_authn.EffectiveMtls]:
    mesh = bookinfo(None, *docs)
    return {p.name: peer_authn.effective(mesh, p) for p in mesh.proxies}


def test_nothing_means_permissive():
    assert {m.mode for m in modes().values()} == {"PERMISSIVE"}


def test_mesh_policy_applies_everywhere_and_a_namespace_policy_overrides_it():
    got = modes(pa("default", "istio-system", "STRICT"))
    assert {m.mode for m in got.values()} == {"STRICT"}
    got = modes(pa("default", "istio-system", "STRICT"), pa("default", "default", "DISABLE"))
    assert got["reviews-v1-0"].mode == "DISABLE"
    assert got["istio-ingressgateway-0"].mode == "STRICT"   # control: another namespace keeps the mesh's


def test_unset_inherits():
    got = modes(pa("default", "istio-system", "STRICT"), pa("ns", "default", "UNSET"))
    assert got["reviews-v1-0"].mode == "STRICT"
    got = modes(pa("default", "istio-system", "STRICT"), pa("ns", "default"))   # no mtls at all
    assert got["reviews-v1-0"].mode == "STRICT"


def test_a_root_namespace_policy_with_a_selector_is_not_the_mesh_policy():
    got = modes(pa("only-gw", "istio-system", "STRICT", {"istio": "ingressgateway"}))
    assert got["reviews-v1-0"].mode == "PERMISSIVE"
    assert got["istio-ingressgateway-0"].mode == "STRICT"


def test_workload_policy_selects_its_pods_only_and_port_level_keys_on_target_port():
    got = modes(pa("default", "istio-system", "STRICT"),
                pa("ratings", "default", "UNSET", {"app": "ratings"}, {9080: "DISABLE"}))
    ratings = got["ratings-v1-0"]
    assert ratings.mode == "STRICT" and ratings.for_port(9080) == "DISABLE" and ratings.for_port(9090) == "STRICT"
    assert got["reviews-v1-0"].for_port(9080) == "STRICT"   # control: not selected


def test_port_level_unset_inherits_the_workload_mode():
    got = modes(pa("r", "default", "STRICT", {"app": "ratings"}, {9080: "UNSET"}))
    assert got["ratings-v1-0"].for_port(9080) == "STRICT"


def test_oldest_wins_at_a_level():
    got = modes(pa("a", "default", "DISABLE"), pa("b", "default", "STRICT"))
    assert got["details-v1-0"].mode == "DISABLE"
    got = modes(pa("b", "default", "STRICT"), pa("a", "default", "DISABLE"))
    assert got["details-v1-0"].mode == "STRICT"   # control: load order decides, not the name


def test_port_level_without_selector_is_one_user_error():
    with pytest.raises(UserError) as e:
        modes(pa("ns", "default", "STRICT", None, {9080: "DISABLE"}))
    line = e.value.one_line()
    assert "spec.portLevelMtls" in line and "selector" in line and "doc" in line and "\n" not in line
    modes(pa("ns", "default", "STRICT", {"app": "ratings"}, {9080: "DISABLE"}))   # control: with one, fine
