"""What you test is what you publish: every library filter (filters/*/{lua,c}) published with
`envoyext publish --scenario S --selector app=productpage -o FILE`, then run with
`envoyext mesh test -f examples/bookinfo/platform.yaml --filter FILE --scenario S`. The filter comes
from the written file alone (nothing is attached by envoyext), and the filter's own cases pass through
productpage's sidecar in Bookinfo, live Envoys all the way.

Controls: the file's filter altered (a Lua script that names another header; a WasmPlugin whose url
is another library module, its sha256 updated) makes cases fail; a scenario configured otherwise than
the file is refused before anything starts; so are a file that selects no or several workloads, one
that puts the filter on both sides, and a mesh scenario given --filter."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from envoyext.cli import main
from envoyext.errors import UserError
from envoyext.mesh import published
from envoyext.runners.mesh import build, load_resources

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "examples" / "bookinfo" / "platform.yaml"
# One scenario per filter whose cases the mesh can judge: the filter's own where the mesh runs its
# cases (the others script their test upstream or call clusters the scenario defines, which the mesh
# reports NOT RUN), else one written for Bookinfo here (testdata/roundtrip: ext-authz asking details,
# custom-metrics labelled with Istio's route and cluster names).
TESTDATA = Path(__file__).resolve().parent / "testdata" / "roundtrip"
ROUNDTRIP = {
    "cors": "../scenarios/policy.yaml",
    "csrf": "../scenarios/enforce.yaml",
    "custom-metrics": str(TESTDATA / "custom-metrics-{lang}.yaml"),
    "ext-authz": str(TESTDATA / "ext-authz-{lang}.yaml"),
    "fault": "../scenarios/header_abort.yaml",
    "ratelimit": "../scenarios/first_hits.yaml",
}
CASES = [(name, lang) for name in ROUNDTRIP for lang in ("lua", "c")]


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The filter library copied once (the repository's tree is not written to)."""
    dest = tmp_path_factory.mktemp("library") / "filters"
    shutil.copytree(ROOT / "filters", dest, ignore=shutil.ignore_patterns("build", "__pycache__"))
    return dest


def scenario(library: Path, name: str, lang: str) -> Path:
    return library / name / lang / ROUNDTRIP[name].format(lang=lang)   # an absolute path stays one


def publish(library: Path, name: str, lang: str, out: Path, *extra: str) -> Path:
    code, output = cli("publish", str(library / name / lang), "--selector", "app=productpage",
                       "--scenario", str(scenario(library, name, lang)), "-o", str(out), *extra)
    assert code == 0, output
    return out


def mesh_test(published_file: Path, scenario: Path) -> tuple[int, list[dict[str, Any]], str]:
    r = CliRunner().invoke(main, ["mesh", "test", "-f", str(PLATFORM), "--filter", str(published_file),
                                  "--scenario", str(scenario), "--json"])
    try:
        return r.exit_code, json.loads(r.stdout), r.output
    except ValueError:
        return r.exit_code, [], r.output


def statuses(results: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


@pytest.mark.parametrize("name, lang", CASES, ids=[f"{n}-{lang}" for n, lang in CASES])
def test_a_published_library_filter_passes_its_scenario_in_the_mesh(library, tmp_path, name, lang):
    out = publish(library, name, lang, tmp_path / f"{name}-{lang}.yaml")
    kind = yaml.safe_load(out.read_text())["kind"]
    assert kind == ("WasmPlugin" if lang == "c" else "EnvoyFilter")
    code, results, output = mesh_test(out, scenario(library, name, lang))
    counts = statuses(results)
    assert code == 0 and counts.get("passed", 0) >= 1 and not counts.get("failed"), output


def test_control_a_lua_filter_altered_in_the_file_fails(library, tmp_path):
    out = publish(library, "cors", "lua", tmp_path / "cors.yaml")
    text = out.read_text()
    assert "access-control-allow-origin" in text
    out.write_text(text.replace("access-control-allow-origin", "x-not-cors"))
    code, results, output = mesh_test(out, scenario(library, "cors", "lua"))
    assert code == 1 and statuses(results).get("failed", 0) >= 1, output


def test_control_a_wasm_plugin_pointing_at_another_module_fails(library, tmp_path):
    out = publish(library, "cors", "c", tmp_path / "cors.yaml")
    other = publish(library, "csrf", "c", tmp_path / "csrf.yaml")   # builds csrf's module
    doc = yaml.safe_load(out.read_text())
    url = yaml.safe_load(other.read_text())["spec"]["url"]
    doc["spec"]["url"] = url
    doc["spec"]["sha256"] = hashlib.sha256(Path(url.removeprefix("file://")).read_bytes()).hexdigest()
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, results, output = mesh_test(out, scenario(library, "cors", "c"))
    assert code == 1 and statuses(results).get("failed", 0) >= 1, output


@pytest.mark.parametrize("lang", ["lua", "c"])
def test_a_scenario_configured_otherwise_is_refused(library, tmp_path, lang):
    project = library / "cors" / lang
    out = tmp_path / "cors.yaml"
    code, output = cli("publish", str(project), "--selector", "app=productpage",
                       "--scenario", str(project / "../scenarios/wildcard.yaml"), "-o", str(out))
    assert code == 0, output
    code, output = cli("mesh", "test", "-f", str(PLATFORM), "--filter", str(out),
                       "--scenario", str(scenario(library, "cors", lang)))
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert "configures the filter differently" in output and "--scenario" in output


def _resource(tmp_path: Path, doc: dict[str, Any]) -> Any:
    f = tmp_path / "published.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    return published.the_filter(load_resources([f]), f)


def _plugin(selector: dict[str, str] | None, modes: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"url": "file:///x.wasm", "match": [{"mode": m} for m in modes]}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": "p", "namespace": "default"}, "spec": spec}


def test_where_a_published_resource_sits(tmp_path):
    mesh = build(load_resources([PLATFORM]))
    res = _resource(tmp_path, _plugin({"app": "productpage"}, ["SERVER"]))
    assert (published.workload(res, mesh), published.context(res)) == ("productpage-v1", "SIDECAR_INBOUND")
    assert published.context(_resource(tmp_path, _plugin({"app": "productpage"}, ["CLIENT"]))) == "SIDECAR_OUTBOUND"


@pytest.mark.parametrize("doc, message", [
    (_plugin({"app": "nope"}, ["SERVER"]), "selects 0 workloads"),
    (_plugin({"app": "reviews"}, ["SERVER"]), r"selects 3 workloads of the mesh \(reviews-v1, reviews-v2, reviews-v3"),
    (_plugin(None, ["SERVER"]), "selects 6 workloads"),
    (_plugin({"app": "productpage"}, ["CLIENT_AND_SERVER"]), "on both sides"),
    (_plugin({"app": "productpage"}, ["SERVER", "CLIENT"]), "on both sides"),
])
def test_a_resource_that_sits_nowhere_or_everywhere_is_refused(tmp_path, doc, message):
    mesh = build(load_resources([PLATFORM]))
    res = _resource(tmp_path, doc)
    with pytest.raises(UserError, match=message) as e:
        published.attach(res, mesh, tmp_path / "published.yaml")
    assert "\n" not in str(e.value) and "fix:" in str(e.value)


def test_a_file_of_other_resources_and_a_mesh_scenario_are_refused(tmp_path):
    code, output = cli("mesh", "test", "-f", str(PLATFORM), "--filter", str(PLATFORM),
                       "--scenario", str(ROOT / "examples" / "bookinfo" / "scenarios" / "routing.yaml"))
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert "one EnvoyFilter or WasmPlugin" in output or "mesh scenario" in output
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(_plugin({"app": "productpage"}, ["SERVER"])))
    code, output = cli("mesh", "test", "-f", str(PLATFORM), "--filter", str(f),
                       "--scenario", str(ROOT / "examples" / "bookinfo" / "scenarios" / "routing.yaml"))
    assert code == 2 and "mesh scenario" in output and len(output.strip().splitlines()) == 1, output
