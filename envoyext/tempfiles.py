"""Temporary files and directories that name their owner, so a killed run's leftovers are found.

A process killed with SIGKILL runs no cleanup: its work dirs (Envoy configs, logs) and a build's
half-written `.tmp` module stay behind. Every temporary path envoyext makes carries the owning
process id; the next run removes those whose owner is dead. A live owner's paths are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "envoyext-"
# envoyext-<kind>-<pid>-<random>  (directories in the system temp dir)
_DIR = re.compile(rf"^{PREFIX}[a-z]+-(?P<pid>\d+)-")
# .<name>.<pid>.<random>.tmp  (files written beside their destination, then renamed into place)
_FILE = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stale(name: str, pattern: re.Pattern[str]) -> bool:
    m = pattern.match(name)
    return m is not None and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"]))


def mkdtemp(kind: str) -> Path:
    """A new work dir in the system temp dir, named for this process; dead owners' are removed first."""
    remove_stale_dirs()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-"))


def remove_stale_dirs(root: Path | None = None) -> list[Path]:
    root = Path(root or tempfile.gettempdir())
    removed = []
    for d in _entries(root):
        if _stale(d.name, _DIR) and d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def temp_beside(out: Path) -> Path:
    """A fresh, unique temporary name next to `out` (same file system, so os.replace is atomic);
    dead owners' leftovers for the same destination are removed first."""
    out = Path(out)
    remove_stale_files(out)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    return Path(name)


def write_atomically(out: Path, data: bytes | str) -> None:
    """`data` to `out`, whole or not at all: written beside it, then renamed over it (a reader, an
    Envoy watching the file, sees the old content or the new, never a part). Nothing is left
    behind when the write fails."""
    tmp = temp_beside(out)
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def temp_dir_beside(out: Path) -> Path:
    """Like temp_beside, a directory (a project rendered before it is renamed into place)."""
    out = Path(out)
    remove_stale_files(out)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))


def remove_stale_files(out: Path) -> list[Path]:
    removed = []
    for f in _entries(Path(out).parent):
        if f.name.startswith(f".{Path(out).name}.") and _stale(f.name, _FILE) and not f.is_symlink():
            shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def _entries(root: Path) -> list[Path]:
    try:
        return list(root.iterdir())
    except OSError:  # gone or unreadable: nothing of ours to clean there
        return []
