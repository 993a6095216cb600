"""The bad-input corpus (tests/bad_inputs/corpus.yaml): every entry must get exit code 2 and one
line on stderr naming the file, the field (or line) and a fix; no traceback; nothing on stdout;
and the files on disk exactly as they were (nothing half-written, no leftovers).

The summary at the end of the run (tests/conftest.py) counts these entries."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

# The smallest module Envoy's V8 runtime accepts as a proxy-wasm plugin (the prebuilt-Wasm base).
from envoyext.doctor import TINY_PLUGIN_WAT
from tests.conftest import ENVOYEXT, run_cli

HERE = Path(__file__).parent / "bad_inputs"
CORPUS = yaml.safe_load((HERE / "corpus.yaml").read_text())
AS_NOBODY = [sys.executable, str(HERE / "as_nobody.py")]


def test_corpus_is_large_and_well_formed():
    ids = [e["id"] for e in CORPUS]
    assert len(ids) >= 80 and len(set(ids)) == len(ids)
    assert all(e.get("cmd") and e.get("expect") for e in CORPUS)


def _scaffold(root: Path, lang: str, name: str) -> Path:
    r = run_cli("new", "blank", name, "--lang", lang, "--dir", root / lang)
    assert r.returncode == 0, r.stderr
    r = run_cli("build", root / lang)
    assert r.returncode == 0, r.stderr
    return root / lang


def _wasm_project(root: Path) -> Path:
    import wasmtime
    project = root / "wasm"
    (project / "scenarios").mkdir(parents=True)
    (project / "filter.yaml").write_text("name: w\nlang: wasm\nmodule: m.wasm\n")
    (project / "scenarios" / "a.yaml").write_text("cases: [{name: a}]\n")
    (project / "m.wasm").write_bytes(wasmtime.wat2wasm(TINY_PLUGIN_WAT))
    return project


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> dict[str, Path]:
    """One scaffolded and built project per kind, copied (mtimes kept, so nothing rebuilds) per entry."""
    root = tmp_path_factory.mktemp("bases")
    return {"lua": _scaffold(root, "lua", "p"), "c": _scaffold(root, "c", "c"), "wasm": _wasm_project(root)}


@pytest.fixture
def workspace():
    """A directory `nobody` can reach (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="bad-input-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _prepare(entry: dict, bases: dict[str, Path], tmp: Path) -> tuple[Path, dict[str, str]]:
    base = entry.get("base", "lua")
    project = tmp / "project"
    if base == "none":
        project.mkdir()
    else:
        shutil.copytree(bases[base], project, symlinks=True)
    for rel in entry.get("remove", []):
        target = project / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for rel in entry.get("mkdir", []):
        (project / rel).mkdir(parents=True)
    for rel, text in (entry.get("write") or {}).items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    for rel, text in (entry.get("append") or {}).items():
        with open(project / rel, "a") as f:
            f.write(text)
    for rel, pairs in (entry.get("replace") or {}).items():
        text = (project / rel).read_text()
        for old, new in pairs:
            assert old in text, f"{entry['id']}: {old!r} not in {rel}"
            text = text.replace(old, new, 1)
        (project / rel).write_text(text)
    for rel, text in (entry.get("bytes") or {}).items():
        (project / rel).write_bytes(text.encode("latin-1"))
    for rel, wat in (entry.get("wat") or {}).items():
        import wasmtime
        (project / rel).write_bytes(wasmtime.wat2wasm(wat))
    if "deep" in entry:
        (project / entry["deep"]).write_text("[" * 5000 + "]" * 5000 + "\n")
    for rel in entry.get("fifo", []):
        os.mkfifo(project / rel)
    for rel, mode in (entry.get("mode") or {}).items():
        (project / rel).chmod(int(mode, 8))
    fake = tmp / "fake-envoy"
    if "fake" in entry:
        fake.write_text(entry["fake"])
        fake.chmod(int(entry.get("fake_mode", "0o755"), 8))
    values = {"project": str(project), "tmp": str(tmp), "fake": str(fake)}
    return project, values


# A command may rebuild the artifact before the error (a build that succeeded, written atomically).
ARTIFACTS = ("project/build/p.lua", "project/build/c.wasm")


def _tree(root: Path) -> dict[str, str]:
    """Every path under root with its kind and, for regular files, a hash of the content."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel in ARTIFACTS:
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            out[rel] = "special"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("entry", CORPUS, ids=[e["id"] for e in CORPUS])
def test_bad_input(entry, bases, workspace):
    _, values = _prepare(entry, bases, workspace)
    before = _tree(workspace)
    args = [a.format(**values) for a in entry["cmd"]]
    env = {**os.environ, "NO_COLOR": "1", **{k: v.format(**values) for k, v in (entry.get("env") or {}).items()}}
    command = AS_NOBODY if entry.get("as_nobody") else ENVOYEXT
    r = subprocess.run([*command, *args], capture_output=True, text=True, cwd=workspace, env=env, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stdout, r.stderr)
    line = lines[0]
    assert line.startswith("error: ") and "(fix: " in line, line
    for needle in entry["expect"]:
        assert needle in line, f"{needle!r} not in: {line}"
    assert r.stdout.strip() == "", r.stdout
    assert _tree(workspace) == before, "the command left files behind or changed them"


def test_a_wrong_expectation_fails_the_corpus_check(bases, workspace):
    """Negative control: the corpus check really reads the line (a needle that is not there fails)."""
    entry = {**CORPUS[0], "expect": ["this text is in no error message"]}
    with pytest.raises(AssertionError, match="not in"):
        test_bad_input(entry, bases, workspace)
