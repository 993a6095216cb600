"""`envoyext mesh up --watch PROJECT`: a dev loop with no restarts.

When the filter's sources change, it is rebuilt and the resource that attaches it (the one
`publish` emits) is re-translated and delivered through the same watched files as `mesh apply`:
the Envoys swap in the new filter by a listener update, so the next request runs the new code and
connections in flight finish on the old one. A build that fails is reported and the running
filter stays.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from envoyext.errors import UserError
from envoyext.mesh import attach
from envoyext.mesh.model import Resource
from envoyext.mesh.overlay import overlay

if TYPE_CHECKING:
    from envoyext.artifact import Artifact
    from envoyext.mesh.runtime import MeshRuntime
    from envoyext.project import Project


def _placement_of(project: Project) -> tuple[str, str]:
    if project.mesh is None:
        raise UserError("the project does not say where in the mesh its filter goes", file=project.file, field="mesh",
                        fix="add mesh: {resources: ..., workload: DEPLOYMENT}")
    return project.mesh["workload"], project.mesh.get("context", "SIDECAR_INBOUND")


def pinned(artifact: Artifact, into: Path) -> Artifact:
    """The artifact copied to a content-addressed path: each build's module has its own file name,
    so a new build is a new filter config and Envoy loads it (the same path would look unchanged)."""
    if artifact.kind != "wasm":
        return artifact
    digest = hashlib.sha256(artifact.path.read_bytes()).hexdigest()[:16]
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{artifact.name}-{digest}.wasm"
    if not target.exists():
        shutil.copyfile(artifact.path, target)
    return replace(artifact, path=target)


def with_filter(project: Project, artifact: Artifact, resources: list[Resource], modules: Path) -> list[Resource]:
    """`resources` with the project's filter attached where filter.yaml's mesh block says."""
    from envoyext.runners.mesh import build
    from envoyext.scenario import MeshSpec, Scenario
    from envoyext.upstreams import UpstreamSpec
    workload, context = _placement_of(project)
    sc = Scenario(path=project.file, name=project.name, config=project.config, upstream=UpstreamSpec(),
                  clusters={}, routes=[], cases=[],
                  mesh=MeshSpec(resources=[], workloads={}, attach={"workload": workload, "context": context}))
    return overlay(resources, attach.resources(pinned(artifact, modules), sc, build(resources)))


def _sources(project: Project) -> list[Path]:
    files = [*project.sources, project.file]
    if project.module is not None:
        files.append(project.module)
    return files


class FilterWatcher:
    """Polled by `mesh up`: rebuild and swap the filter whenever a source file's content changes."""

    def __init__(self, project_dir: Path, rt: MeshRuntime, base: list[Resource], *,
                 echo: Callable[[str], None] = print):
        from envoyext import project as proj
        self.project = proj.load(project_dir)
        self.rt, self.base, self.echo = rt, base, echo
        self.seen = self._fingerprint()

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in _sources(self.project):
            h.update(f.read_bytes() if f.exists() else b"")
        return h.hexdigest()

    def poll(self) -> bool:
        """Swap the filter if its sources changed since the last look; True if it was swapped."""
        now = self._fingerprint()
        if now == self.seen:
            return False
        self.seen = now
        from envoyext import project as proj
        from envoyext.runners.mesh import build
        try:
            self.project = proj.load(self.project.root)
            artifact = proj.build(self.project)
            resources = with_filter(self.project, artifact, self.base, self.rt.workdir / "modules")
            assert self.rt.mesh is not None, "the mesh is not running"
            self.rt.apply(build(resources, self.rt.mesh.plan.base))
        except UserError as e:
            self.echo(f"watch: not swapped: {e.one_line()}")
            return False
        self.echo(f"watch: {self.project.name} rebuilt and swapped into the running proxies")
        return True
