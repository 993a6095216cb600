"""PeerAuthentication → the mTLS mode of each inbound port of a workload (reference §7; pilot's
security/authn `ComposePeerAuthentication`).

Three levels, each may say UNSET (inherit): the mesh policy (root namespace, no selector), the
namespace policy (the workload's namespace, no selector), the workload policy (the workload's
namespace, a selector that picks it). The oldest wins at each level; loaded resources carry no
creation time, so load order stands in for it. Nothing at all means PERMISSIVE. `portLevelMtls`
counts only on a workload policy (Istio's validation refuses it elsewhere) and is keyed on the
target (container) port; an UNSET port inherits the workload's mode. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from envoyext.errors import UserError
from envoyext.mesh.model import ROOT_NAMESPACE, Mesh, Proxy, Resource, selects

Mode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
MODES = ("UNSET", "STRICT", "PERMISSIVE", "DISABLE")
DEFAULT_MODE: Mode = "PERMISSIVE"


@dataclass(frozen=True)
class EffectiveMtls:
    """A workload's inbound mTLS: `mode` for every port, except those in `ports`."""
    mode: Mode = DEFAULT_MODE
    ports: dict[int, Mode] = field(default_factory=dict)

    def for_port(self, target_port: int) -> Mode:
        return self.ports.get(target_port, self.mode)


def _mode(pa: Resource, value: object, where: str) -> str:
    text = str(value or "UNSET").upper()
    if text not in MODES:
        raise UserError(f"PeerAuthentication {pa.namespace}/{pa.name}: unknown mTLS mode {value!r}",
                        file=pa.file, field=where, fix="use one of UNSET, STRICT, PERMISSIVE, DISABLE")
    return text


def _selector(pa: Resource) -> dict[str, str] | None:
    sel = pa.spec.get("selector")
    return None if sel is None else dict(sel.get("matchLabels") or {})


def _first(policies: list[Resource]) -> Resource | None:
    return policies[0] if policies else None


def check(pa: Resource) -> None:
    """The rule the schema loader skips (crd.py): portLevelMtls needs a selector."""
    if pa.spec.get("portLevelMtls") and _selector(pa) is None:
        raise UserError(f"PeerAuthentication {pa.namespace}/{pa.name}: portLevelMtls without a selector",
                        file=pa.file, field="spec.portLevelMtls",
                        fix="add spec.selector.matchLabels naming the workload, or move the ports to a workload policy")
    _mode(pa, (pa.spec.get("mtls") or {}).get("mode"), "spec.mtls.mode")
    for port, setting in (pa.spec.get("portLevelMtls") or {}).items():
        _mode(pa, (setting or {}).get("mode"), f"spec.portLevelMtls.{port}.mode")


def effective(mesh: Mesh, proxy: Proxy) -> EffectiveMtls:
    """The composed PeerAuthentication of one proxy's workload."""
    policies = mesh.peer_authentications
    for pa in policies:
        check(pa)
    mesh_policy = _first([p for p in policies if p.namespace == ROOT_NAMESPACE and _selector(p) is None])
    ns_policy = _first([p for p in policies if p.namespace == proxy.namespace and _selector(p) is None])
    workload_policy = _first([p for p in policies if p.namespace == proxy.namespace
                              and (sel := _selector(p)) is not None and selects(sel, proxy.labels)])
    mode = DEFAULT_MODE
    for level in (mesh_policy, ns_policy, workload_policy):
        if level is not None:
            m = _mode(level, (level.spec.get("mtls") or {}).get("mode"), "spec.mtls.mode")
            if m != "UNSET":
                mode = m  # type: ignore[assignment]
    ports: dict[int, Mode] = {}
    if workload_policy is not None:
        for port, setting in (workload_policy.spec.get("portLevelMtls") or {}).items():
            m = _mode(workload_policy, (setting or {}).get("mode"), f"spec.portLevelMtls.{port}.mode")
            if m != "UNSET":
                ports[int(port)] = m  # type: ignore[assignment]
    return EffectiveMtls(mode, ports)
