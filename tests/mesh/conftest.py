"""Bookinfo for the mesh tests: the suite's own copy (examples/bookinfo, which `envoyext mesh
example bookinfo` hands out), or the official manifests, unmodified, when a copy of Istio's
`samples/bookinfo` (platform/kube/bookinfo.yaml and networking/) is at hand (official_bookinfo)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from envoyext.mesh.model import Mesh

SUITE_BOOKINFO = Path(__file__).resolve().parents[2] / "examples" / "bookinfo"


@dataclass(frozen=True)
class Bookinfo:
    root: Path
    official: bool
    platform: Path            # Services, ServiceAccounts, Deployments
    gateway: Path             # the ingress Gateway and its VirtualService
    destination_rules: Path   # a subset per version
    variants: tuple[Path, ...]  # every other routing file: load one at a time (they reuse names)


def bookinfo_files(root: Path) -> Bookinfo:
    """The files of a Bookinfo copy, in either layout (official samples/bookinfo or the suite's)."""
    if (root / "platform" / "kube" / "bookinfo.yaml").is_file():
        net = root / "networking"
        main = {net / "bookinfo-gateway.yaml", net / "destination-rule-all.yaml"}
        return Bookinfo(root, True, root / "platform" / "kube" / "bookinfo.yaml", net / "bookinfo-gateway.yaml",
                        net / "destination-rule-all.yaml",
                        tuple(sorted(p for p in net.glob("*.yaml") if p not in main)))
    return Bookinfo(root, False, root / "platform.yaml", root / "gateway.yaml", root / "destination-rules.yaml",
                    tuple(sorted((root / "routing").glob("*.yaml"))))


# Where a copy of Istio's samples/bookinfo may be laid beside the checkout (the workplace's shared
# folder); the tests use it when it is there. The package itself never reads outside itself.
SHARED_BOOKINFO = [Path(__file__).resolve().parents[3] / "shared" / "istio" / "samples" / "bookinfo",
                   Path(__file__).resolve().parents[3] / "shared" / "bookinfo"]


def official_bookinfo() -> Path | None:
    """A copy of the official samples/bookinfo: $ENVOYEXT_BOOKINFO, else one beside the checkout."""
    env = os.environ.get("ENVOYEXT_BOOKINFO")
    if env:
        root = Path(env)
        assert (root / "platform" / "kube" / "bookinfo.yaml").is_file(), \
            f"ENVOYEXT_BOOKINFO={env}: expected a copy of samples/bookinfo (platform/kube/bookinfo.yaml, networking/)"
        return root
    return next((p for p in SHARED_BOOKINFO if (p / "platform" / "kube" / "bookinfo.yaml").is_file()), None)


@pytest.fixture(scope="session")
def bookinfo_dir() -> Path:
    return official_bookinfo() or SUITE_BOOKINFO


@pytest.fixture(scope="session")
def bookinfo(bookinfo_dir: Path) -> Bookinfo:
    return bookinfo_files(bookinfo_dir)


@pytest.fixture
def bookinfo_mesh(bookinfo: Bookinfo) -> Mesh:
    """Bookinfo's platform, ingress gateway and destination rules (default profile)."""
    from envoyext.mesh import build
    return build.load_mesh([bookinfo.platform, bookinfo.gateway, bookinfo.destination_rules])
