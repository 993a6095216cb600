"""Shared helpers for the suite. Every test that starts Envoy stops it; see envoy_children()."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENVOYEXT = [sys.executable, "-m", "envoyext.cli"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ENVOYEXT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1", **(env or {})})


# Make this test process a child subreaper (prctl PR_SET_CHILD_SUBREAPER = 36): an Envoy orphaned
# by a CLI subprocess is re-parented to us, not to init, so it still counts as ours below and
# the leak check sees it. Other engineers' and other runs' Envoys on the machine do not count.
ctypes.CDLL(None).prctl(36, 1)


def _parent(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descends_from_us(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        if pid == me:
            return True
    return False


def envoy_pids() -> set[int]:
    """PIDs of running envoy processes that this test process started, directly or not."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
                if name == "envoy" and state != "Z" and _descends_from_us(int(d.name)):
                    out.add(int(d.name))
            except OSError:
                pass
    return out


@pytest.fixture(autouse=True)
def no_envoy_left_behind():
    """Fail any test after which an Envoy it started is still running."""
    before = envoy_pids()
    yield
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and envoy_pids() - before:
        time.sleep(0.05)
    leaked = envoy_pids() - before
    _reap_adopted_envoys()
    assert not leaked, f"Envoy processes leaked: {sorted(leaked)}"


def _reap_adopted_envoys() -> None:
    """Envoys that exited after we adopted them (as subreaper) stay zombies until waited for;
    nobody else will wait for them, and a zombie still shows up in `pgrep envoy`."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if name == "envoy" and rest[0] == "Z" and int(rest[1]) == os.getpid():
            try:
                os.waitpid(int(d.name), os.WNOHANG)
            except ChildProcessError:
                pass


CORPUS_TEST = "test_bad_inputs.py::test_bad_input["


def pytest_terminal_summary(terminalreporter):
    """`make test` ends with the bad-input corpus's verdict, when its entries ran."""
    outcomes = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if CORPUS_TEST in getattr(report, "nodeid", "") and getattr(report, "when", "call") in ("call", "setup"):
                # a setup error counts against the entry as much as a failed call
                outcomes[report.nodeid] = outcome if outcome != "passed" or report.nodeid not in outcomes \
                    else outcomes[report.nodeid]
    if not outcomes:
        return
    bad = sorted(n.split("[", 1)[1].rstrip("]") for n, o in outcomes.items() if o != "passed")
    if bad:
        text = f"bad-input corpus: {len(outcomes)} entries, {len(bad)} FAILED: {', '.join(bad)}"
    else:
        text = f"bad-input corpus: {len(outcomes)} entries, all exit 2 with one line"
    terminalreporter.write_line(text, red=bool(bad), green=not bad)
