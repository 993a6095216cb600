"""The filter library out of the box: `envoyext new <kind> x --lang L` then `envoyext test x` passes
for every kind and language, in the emulator and in live Envoy, including the oracle scenarios
that hold each filter against the native Envoy filter it mirrors."""

import json

import pytest

from envoyext import project as proj
from envoyext.paths import filters_dir
from tests.conftest import run_cli

KINDS = ["custom-metrics", "ratelimit", "fault", "cors", "csrf", "ext-authz"]
LANGS = ["lua", "c"]
# Envoy has no HTTP filter that makes per-request labelled metrics: nothing native to compare with.
NO_NATIVE_TWIN = {"custom-metrics"}


def test_every_kind_ships_in_both_languages_with_one_schema():
    for kind in KINDS:
        root = filters_dir() / kind
        assert (root / "schema.json").is_file(), kind
        assert (root / "README.md").is_file(), kind
        for lang in LANGS:
            p = proj.load(root / lang)
            assert p.config_schema.resolve() == (root / "schema.json").resolve()
            assert p.scenario_files, f"{kind}/{lang} has no scenarios"


def test_every_kind_has_an_oracle_scenario():
    import yaml
    for kind in set(KINDS) - NO_NATIVE_TWIN:
        docs = [yaml.safe_load(p.read_text()) for p in (filters_dir() / kind / "scenarios").glob("*.yaml")]
        assert any(d.get("oracle") for d in docs), f"{kind}: no scenario compares with the native filter"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", KINDS)
def test_new_then_test_passes(tmp_path, kind, lang):
    target = tmp_path / "x"
    r = run_cli("new", kind, "x", "--lang", lang, "--dir", target)
    assert r.returncode == 0, r.stderr
    r = run_cli("test", target, "--json", timeout=600)
    doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
    failed = [x for x in (doc or {}).get("results", []) if not x["passed"]]
    assert r.returncode == 0 and doc and not failed, json.dumps(failed, indent=1)[:4000] or r.stderr
    runners = set().union(*(x["observations"] for x in doc["results"]))
    assert {"emulated", "live"} <= runners
    if kind not in NO_NATIVE_TWIN:
        assert any("native" in x["observations"] for x in doc["results"]), "no oracle comparison ran"
