"""Example meshes that ship with envoyext (`envoyext mesh example NAME [DIR]`): Kubernetes and
Istio YAML plus mesh scenarios, copied out whole to start from."""

from __future__ import annotations

import shutil
from pathlib import Path

from envoyext import tempfiles
from envoyext.errors import UserError
from envoyext.paths import examples_dir


def names() -> list[str]:
    return sorted(p.name for p in examples_dir().iterdir() if p.is_dir())


def copy(name: str, out: Path) -> Path:
    """Copy example `name` to `out` (which must not exist yet); written beside it, then moved."""
    source = examples_dir() / name
    if not source.is_dir():
        raise UserError(f"no example mesh '{name}'", field="NAME", fix=f"one of: {', '.join(names())}")
    if out.exists():
        raise UserError("already exists", file=out, fix="choose another directory, or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfiles.temp_dir_beside(out)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out
