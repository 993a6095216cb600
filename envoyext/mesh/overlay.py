"""`kubectl apply` semantics for a set of resources: a later resource replaces an earlier one with the
same kind, namespace and name; anything new is added. Pure, so `mesh apply`, a scenario's
per-case `apply:` and `--watch` all change a mesh the same way."""

from __future__ import annotations

from collections.abc import Iterable

from envoyext.mesh.model import Resource


def overlay(base: Iterable[Resource], changes: Iterable[Resource]) -> list[Resource]:
    """`base` with `changes` applied in order (the result keeps the first position of each key)."""
    merged: dict[str, Resource] = {r.key: r for r in base}
    for r in changes:
        merged[r.key] = r
    return list(merged.values())


def workload_changes(before: Iterable[Resource], after: Iterable[Resource]) -> list[str]:
    """Keys of Deployments (and their pods' Services) that differ: a running mesh cannot take these
    without starting or stopping processes, so `mesh apply` refuses them and says so."""
    kinds = ("Deployment",)
    old = {r.key: (r.metadata.get("labels"), r.spec) for r in before if r.kind in kinds}
    new = {r.key: (r.metadata.get("labels"), r.spec) for r in after if r.kind in kinds}
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
