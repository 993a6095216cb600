"""A filter under test, attached to its workload in a modelled mesh through the very resource
`envoyext publish` emits for it (an EnvoyFilter for Lua, a WasmPlugin for Wasm)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from envoyext.errors import UserError
from envoyext.mesh.model import Mesh, Resource
from envoyext.publish import istio

if TYPE_CHECKING:
    from envoyext.artifact import Artifact
    from envoyext.scenario import Scenario


def placement(mesh: Mesh, workload: str, context: istio.Context) -> istio.Placement:
    """The workload's namespace and its pods' labels (app and version, as Istio users select)."""
    pods = [w for w in mesh.workloads if w.deployment == workload]
    if not pods:
        raise UserError(f"no workload '{workload}' in the mesh", file="filter.yaml", field="mesh.workload",
                        fix="name one of: " + ", ".join(sorted({w.deployment for w in mesh.workloads})))
    labels = pods[0].labels
    keys: tuple[str, ...] = ("app", "version", "istio")
    selector: dict[str, str] = {k: labels[k] for k in keys if k in labels} or dict(labels)
    return istio.Placement(namespace=pods[0].namespace, selector=selector, context=context)


def resources(artifact: Artifact, scenario: Scenario, mesh: Mesh) -> list[Resource]:
    assert scenario.mesh is not None and scenario.mesh.attach is not None
    where = placement(mesh, scenario.mesh.attach["workload"], scenario.mesh.attach["context"])
    doc = istio.for_artifact(artifact, scenario.config, where)
    meta = doc["metadata"]
    return [Resource(kind=doc["kind"], api_version=doc["apiVersion"], name=meta["name"], namespace=meta["namespace"],
                     metadata=meta, spec=doc["spec"], file=f"{artifact.name} (as envoyext publish emits it)", index=0)]
