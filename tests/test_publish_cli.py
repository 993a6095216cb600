"""`envoyext publish`: every library filter (filters/*/{lua,c}) published as a cluster would get
it, and the written file accepted by envoyext.mesh.resources, which checks it against Istio's CRD
schema of its kind and version, as for a user's files. Controls: a resource the schema refuses is
one line with exit code 2 and nothing is written; bad options likewise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from envoyext.cli import main
from envoyext.mesh import resources

ROOT = Path(__file__).resolve().parents[1]
FILTERS = sorted(p.parent for p in (ROOT / "filters").glob("*/*/filter.yaml"))


def publish(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["publish", *args])
    return r.exit_code, r.output


@pytest.fixture
def project(tmp_path):
    def copy(src: Path) -> Path:
        dest = tmp_path / src.parent.name / src.name
        shutil.copytree(src.parent, dest.parent, ignore=shutil.ignore_patterns("build", "__pycache__"))
        return dest
    return copy


@pytest.mark.parametrize("filter_dir", FILTERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_every_library_filter_publishes_a_valid_resource(filter_dir, project, tmp_path):
    out = tmp_path / "published.yaml"
    code, output = publish(str(project(filter_dir)), "-o", str(out), "--selector", "app=reviews",
                           "--namespace", "bookinfo")
    assert code == 0, output
    [res] = resources.load([out])
    want = "WasmPlugin" if filter_dir.name == "c" else "EnvoyFilter"
    assert (res.kind, res.namespace) == (want, "bookinfo")
    selector = res.spec.get("selector", {}).get("matchLabels") or res.spec["workloadSelector"]["labels"]
    assert selector == {"app": "reviews"}


def test_wasm_as_envoyfilter_and_phase(project, tmp_path):
    cors = str(project(ROOT / "filters" / "cors" / "c"))
    code, output = publish(cors, "--as", "envoyfilter")
    assert code == 0, output
    assert yaml.safe_load(output)["kind"] == "EnvoyFilter"
    code, output = publish(cors, "--phase", "AUTHZ", "--priority", "10")
    doc = yaml.safe_load(output)
    assert (doc["spec"]["phase"], doc["spec"]["priority"]) == ("AUTHZ", 10)


@pytest.mark.parametrize("args, where", [
    (["--namespace", "Not_A_Namespace"], "namespace"),   # the schema check: refused, not written
    (["--selector", "app"], "--selector"),
    (["--as", "wasmplugin"], "--as"),                    # a Lua filter
])
def test_bad_input_is_one_line_and_writes_nothing(project, tmp_path, args, where):
    out = tmp_path / "published.yaml"
    code, output = publish(str(project(ROOT / "filters" / "cors" / "lua")), "-o", str(out), *args)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and where in lines[0] and "fix:" in lines[0], output
    assert not out.exists()
