"""Where the data that ships with envoyext lives (templates, the filter library, example meshes).

In a source checkout these are the repository's top-level `templates/`, `filters/` and
`examples/`; an installed wheel carries them inside the package (see setup.py)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).parent


def _data(name: str) -> Path:
    for candidate in (PACKAGE / name, PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"envoyext data folder {name!r} is missing from this installation")


def templates_dir() -> Path:
    return _data("templates")


def filters_dir() -> Path:
    return _data("filters")



def examples_dir() -> Path:
    return _data("examples")
