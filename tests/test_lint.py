"""The habits that keep the code in shape, run by `make lint` and by the suite (so CI runs them):
ruff clean; mypy --strict clean on the packages written since the type check came in; and on the
older code, no type error that is not in the recorded baseline, which only ever shrinks.

After fixing old type errors: `make mypy-baseline` drops the lines that no longer occur (it never
adds one: a new error is fixed, not recorded).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import REPO

BASELINE = REPO / "tests" / "mypy-baseline.txt"
# Checked with --strict: new code is typed from its first line.
STRICT = [
    "envoyext/envoy/identity.py",
    "envoyext/envoy/facts.py",
    "envoyext/envoy/xds.py",
    "envoyext/envoy/filter_entry.py",
    "envoyext/envoy/logs.py",
    "envoyext/envoy/client.py",
    "envoyext/envoy/probe.py",
    "envoyext/tempfiles.py",
    "envoyext/emulated",
    "envoyext/scenario",
    "envoyext/runners/__init__.py",
    "envoyext/runners/names.py",
    "envoyext/artifact.py",
    "envoyext/mesh",
    "envoyext/publish",
    "envoyext/runners/mesh.py",
    "envoyext/benchmark.py",
]
MYPY = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--no-error-summary", "--hide-error-context",
        "--cache-dir", str(REPO / ".mypy_cache")]
_ERROR = re.compile(r"^(?P<file>[^:]+):\d+: error: (?P<message>.*)$")


def _errors(output: str) -> Counter[str]:
    """mypy's error lines without their line numbers (an edit above an old error does not make it
    new), counted: a second error of the same text in the same file is a new one."""
    return Counter(f"{m['file']}: {m['message']}" for m in map(_ERROR.match, output.splitlines()) if m)


def _mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MYPY, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "envoyext", "tests", "bench"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_new_code_type_checks_strictly():
    proc = _mypy("--strict", "--follow-imports=silent", *STRICT)  # imported old code: the baseline
    assert not _errors(proc.stdout) and proc.returncode == 0, proc.stdout + proc.stderr


def test_old_code_has_no_type_error_beyond_the_baseline():
    proc = _mypy("envoyext")
    found = _errors(proc.stdout)
    assert found or proc.returncode == 0, proc.stdout + proc.stderr   # mypy itself ran
    recorded = Counter(line for line in BASELINE.read_text().splitlines() if line)
    if os.environ.get("UPDATE_MYPY_BASELINE"):
        recorded &= found
        BASELINE.write_text("".join(f"{e}\n" for e in sorted(recorded.elements())))
    new, fixed = sorted((found - recorded).elements()), sorted((recorded - found).elements())
    assert not new, "type errors not in tests/mypy-baseline.txt (fix them, do not record them):\n" + "\n".join(new)
    assert not fixed, ("fixed type errors still in tests/mypy-baseline.txt (run `make mypy-baseline` to drop "
                       "them):\n" + "\n".join(fixed))


@pytest.mark.parametrize("text,expected", [
    ("envoyext/a.py:12: error: Bad thing  [misc]\nenvoyext/a.py:40: note: see here\n",
     {"envoyext/a.py: Bad thing  [misc]": 1}),
    ("x.py:1: error: E  [misc]\nx.py:9: error: E  [misc]\n", {"x.py: E  [misc]": 2}),
    ("Success: no issues found in 3 source files\n", {}),
])
def test_errors_are_keyed_without_line_numbers(text, expected):
    assert _errors(text) == expected
