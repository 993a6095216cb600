"""Where the data that ships with envoyext lives (templates and the filter library).

In a source checkout these are the repository's top-level `templates/` and `filters/`; an
installed wheel carries them as `envoyext/templates` and `envoyext/filters` (see pyproject)."""

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

