"""What `envoyext publish` emits for Istio is accepted by Istio's own CRD schemas: every library
filter (filters/*/{lua,c}) built, emitted for each context, and loaded by envoyext.mesh.resources,
which validates against the shipped CRDs (structural schema and CEL rules) exactly as a user's
files are validated. Negative controls: a broken emission must be refused."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoyext import project as project_mod
from envoyext.errors import UserError
from envoyext.mesh import resources
from envoyext.publish import istio

ROOT = Path(__file__).resolve().parents[2]
FILTERS = sorted(p.parent for p in (ROOT / "filters").glob("*/*/filter.yaml"))
CONTEXTS: list[istio.Context] = ["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]


def test_the_library_has_twelve_filters() -> None:
    assert len(FILTERS) == 12, [str(p) for p in FILTERS]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each library filter built once, from a copy (the repository's tree is not written to)."""
    out = {}
    for src in FILTERS:
        name = f"{src.parent.name}-{src.name}"
        dest = tmp_path_factory.mktemp(name) / src.parent.name
        shutil.copytree(src.parent, dest, ignore=shutil.ignore_patterns("build", "__pycache__"))
        proj = project_mod.load(dest / src.name)
        out[name] = (proj, project_mod.build(proj))
    return out


def _load(doc: dict[str, Any], tmp_path: Path) -> list[Any]:
    f = tmp_path / f"{doc['metadata']['name']}.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    return resources.load([f])


@pytest.mark.parametrize("context", CONTEXTS)
def test_every_library_filter_emits_a_valid_istio_resource(built, context, tmp_path) -> None:
    where = istio.Placement(namespace="default", selector={"app": "productpage", "version": "v1"}, context=context)
    kinds = {}
    for name, (proj, artifact) in built.items():
        doc = istio.for_artifact(artifact, proj.config, where)
        loaded = _load(doc, tmp_path)
        assert [(r.kind, r.name) for r in loaded] == [(doc["kind"], doc["metadata"]["name"])], name
        kinds[name] = doc["kind"]
        if doc["kind"] == "WasmPlugin":
            spec = doc["spec"]
            assert spec["url"].startswith("file://") and Path(spec["url"][len("file://"):]) == artifact.path.resolve()
            assert spec["sha256"] == hashlib.sha256(artifact.path.read_bytes()).hexdigest()
            assert spec["match"] == [{"mode": istio.MODE[context]}]
        else:
            patch = doc["spec"]["configPatches"][0]
            assert patch["match"]["context"] == context and patch["patch"]["operation"] == "INSERT_BEFORE"
    assert sorted(kinds.values()) == ["EnvoyFilter"] * 6 + ["WasmPlugin"] * 6


def test_negative_controls_the_crd_validation_refuses_a_broken_emission(built, tmp_path) -> None:
    proj, artifact = built["cors-c"]
    doc = istio.for_artifact(artifact, proj.config, istio.Placement(selector={"app": "productpage"}))
    bad = copy.deepcopy(doc)
    bad["spec"]["match"] = [{"mode": "SIDEWAYS"}]           # not a WorkloadMode
    with pytest.raises(UserError, match="mode"):
        _load(bad, tmp_path)
    proj, artifact = built["cors-lua"]
    doc = istio.for_artifact(artifact, proj.config, istio.Placement(selector={"app": "productpage"}))
    bad = copy.deepcopy(doc)
    bad["spec"]["configPatches"][0]["patch"]["operation"] = "INSERT_SOMEWHERE"
    with pytest.raises(UserError, match="operation"):
        _load(bad, tmp_path)
