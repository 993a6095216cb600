"""Meshes for translator tests: the Bookinfo fixture and small inline YAML documents, loaded and
built the way `envoyext mesh` does (resources.load checks them against the CRD schemas, then
build.mesh)."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path

from envoyext.mesh import build as build_mod
from envoyext.mesh import resources as resources_mod
from envoyext.mesh.model import CLUSTER_DOMAIN, Mesh, MeshConfig, Resource, Service, ServicePort

BOOKINFO = Path(__file__).resolve().parents[3] / "examples" / "bookinfo"


@functools.cache
def sds_home() -> str:
    """One directory with SDS files (a throwaway CA's) for `envoy --mode validate`, which refuses a
    config naming an SDS file that is not there; removed when the test process ends."""
    from envoyext.mesh import sds
    home = tempfile.mkdtemp(prefix="envoyext-sds-")
    atexit.register(shutil.rmtree, home, True)
    sds.validation_home(build_mod.mesh([]), Path(home))
    return home


def resources(*texts_or_paths: str | Path) -> list[Resource]:
    """Files as they are, inline YAML texts through a temporary file each (same checks)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths: list[str | Path] = []
        for i, item in enumerate(texts_or_paths):
            if isinstance(item, Path):
                paths.append(item)
            else:
                path = Path(tmp) / f"doc{i}.yaml"
                path.write_text(item)
                paths.append(path)
        return resources_mod.load(paths)


def build(docs: list[Resource], config: MeshConfig | None = None) -> Mesh:
    mesh = build_mod.mesh(docs)
    if config is not None:
        mesh = dataclasses.replace(mesh, config=config)
    return mesh


def bookinfo(variant: str | None = None, *extra: str, config: MeshConfig | None = None) -> Mesh:
    """Bookinfo: platform + gateway + destination rules (+ routing/<variant>.yaml, + extra YAML)."""
    paths: list[str | Path] = [BOOKINFO / "platform.yaml", BOOKINFO / "gateway.yaml",
                               BOOKINFO / "destination-rules.yaml"]
    if variant:
        paths.append(BOOKINFO / "routing" / f"{variant}.yaml")
    return build(resources(*paths, *extra), config)


def service(name: str, ports: dict[int, str] | None = None, namespace: str = "default",
            vip: str | None = None) -> Service:
    return Service(f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}", name, namespace,
                   tuple(ServicePort(proto.lower(), p, p, proto) for p, proto in (ports or {9080: "HTTP"}).items()),
                   selector={"app": name}, vip=vip)
