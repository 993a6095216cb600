"""The README's examples run as written, so the docs and the code cannot drift apart.

Every ```sh and ```python block of README.md is executed (the one exception is `make test`, the
command running this suite). They form one walk-through in one directory, in README order: the
Usage block's commands scaffold `my-rl` and `my-filter`, and the later blocks use them. A block
whose first line is a comment naming a file (`# test_x.py`, `-- filter.lua`) is written to that
file first; a `test_*.py` block is then run by pytest, any other Python block as a script.
A ```c block is a filter.c: it must build and load in the emulator.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ENVOYEXT, REPO

README = REPO / "README.md"
FILE_COMMENT = re.compile(r"^(?:#|--|//)\s*([\w.-]+\.(?:py|lua|c|yaml))\b")


@dataclass
class Block:
    lang: str
    text: str
    line: int   # where the block starts in README.md

    @property
    def file(self) -> str | None:
        m = FILE_COMMENT.match(self.text)
        return m.group(1) if m else None


def readme_blocks() -> list[Block]:
    blocks, lines = [], README.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if m:
            end = lines.index("```", i + 1)
            blocks.append(Block(m.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1))
            i = end
        i += 1
    return blocks


def commands(block: Block) -> list[str]:
    """A shell block's commands, without the comments that explain them."""
    out = []
    for raw in block.text.splitlines():
        cmd = raw.split(" #", 1)[0].strip()
        if cmd and not cmd.startswith("#"):
            out.append(cmd)
    return out


BLOCKS = readme_blocks()
SETUP = next(b for b in BLOCKS if b.lang == "sh" and "make demo" in b.text)
USAGE = [c for b in BLOCKS if b.lang == "sh" and b is not SETUP for c in commands(b)]
RUNNABLE = [b for b in BLOCKS if b.lang in ("python", "lua", "c")]


def test_the_readme_has_the_examples_this_file_runs():
    assert commands(SETUP) == ["make demo", "make test"]
    assert any(c.startswith("envoyext new") for c in USAGE)
    assert sum(b.lang == "python" for b in RUNNABLE) >= 4
    # Every block is either run here or is data (YAML shown to explain a format).
    assert {b.lang for b in BLOCKS} <= {"sh", "python", "lua", "c", "yaml"}


def _env() -> dict:
    # The CLI and scripts import the checkout under test, wherever they run.
    return {**os.environ, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _docker_engine() -> bool:
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def test_make_demo_runs_as_written():
    """`make demo` in this checkout, with the venv running this suite (so nothing is reinstalled)."""
    venv = Path(sys.prefix)
    proc = subprocess.run(["make", "-C", str(REPO), "demo", f"VENV={venv}"], capture_output=True, text=True,
                          timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 failed" in proc.stdout


@dataclass
class Walkthrough:
    dir: Path
    outcome: dict[str, str | None]   # usage command -> None (ran, exit 0) or what went wrong


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> Walkthrough:
    """The Usage block's commands, run once in order in one directory: later blocks use what
    they create, whichever of these tests is selected."""
    w = Walkthrough(tmp_path_factory.mktemp("readme"), {})
    for command in USAGE:
        w.outcome[command] = _run_command(command, w.dir)
    return w


def _run_command(command: str, cwd: Path) -> str | None:
    argv = command.split()
    if argv[0] != "envoyext":
        return f"not an envoyext command: {command}"
    argv = [*ENVOYEXT, *argv[1:]]
    if "--runtime docker" in command and not _docker_engine():
        return "SKIP"
    if argv[len(ENVOYEXT)] == "run":
        return _run_until_interrupted(argv, cwd)
    if argv[len(ENVOYEXT):len(ENVOYEXT) + 2] == ["jwt", "serve"]:
        return _run_until_interrupted(argv, cwd, serving="/jwks.json")
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=_env())
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return None


@pytest.mark.parametrize("command", USAGE)
def test_usage_command_runs_as_written(command, walkthrough):
    outcome = walkthrough.outcome[command]
    if outcome == "SKIP":
        pytest.skip("needs a Docker engine (none runs on this machine)")
    assert outcome is None, f"{command}: {outcome}"


def _run_until_interrupted(argv: list[str], cwd: Path, serving: str = "listening on") -> str | None:
    """`envoyext run` (and `jwt serve`) serve until Ctrl-C: wait until the output says it serves
    (`serving`), then interrupt it."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Ctrl-C"):
                break
        if not any(serving in line for line in seen):
            return "never listened: " + "".join(seen) + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        return None if proc.returncode == 0 and "stopped" in out else f"exit {proc.returncode}: {out}{err}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: f"{b.lang}@README.md:{b.line}")
def test_example_runs_as_written(block, walkthrough):
    walkthrough = walkthrough.dir
    env = _env()
    if block.lang == "c":
        return _c_example_builds_and_loads(block, walkthrough)
    if block.file:
        (walkthrough / block.file).write_text(block.text)
    if block.lang != "python":
        return  # a file a later block uses
    if block.file and block.file.startswith("test_"):
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", block.file]
    else:
        argv = [sys.executable, "-c", block.text]
    proc = subprocess.run(argv, cwd=walkthrough, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"README.md:{block.line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _c_example_builds_and_loads(block: Block, walkthrough: Path) -> None:
    from envoyext.wasm.api import WasmPlugin
    project = walkthrough / f"c-example-{block.line}"
    subprocess.run([*ENVOYEXT, "new", "blank", project.name, "--lang", "c"], cwd=walkthrough, check=True,
                   capture_output=True, env=_env())
    (project / "filter.c").write_text(block.text)
    proc = subprocess.run([*ENVOYEXT, "build", project.name], cwd=walkthrough, capture_output=True, text=True,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    with WasmPlugin.load(project / "build" / f"{project.name}.wasm", name=project.name) as p:
        ex = p.request({":path": "/"})
        assert ex.request_headers_get("x-hello") == "world"
