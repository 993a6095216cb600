"""`envoyext new`: a new filter project from a template or from the filter library.

`templates/<kind>/<lang>/` is rendered with jinja2: files ending in `.j2` are rendered (the suffix
dropped), others copied. A library kind has no template of its own: its ready filter
`filters/<kind>/<lang>/` is copied with the kind's shared `schema.json` and `scenarios/`, and its
filter.yaml renamed, so what the user starts from is exactly what the library tests. The target
is written to a temporary sibling and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import jinja2

from envoyext import tempfiles
from envoyext.errors import UserError
from envoyext.paths import filters_dir, templates_dir

NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


def _dirs(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".", "build"))}


def kinds() -> list[str]:
    return sorted(_dirs(templates_dir()) | _dirs(filters_dir()))


def render(kind: str, name: str, lang: str, target: Path) -> Path:
    source = templates_dir() / kind / lang
    library = filters_dir() / kind
    if not source.is_dir() and not (library / lang).is_dir():
        if kind not in kinds():
            raise UserError(f"unknown filter kind '{kind}'", field="KIND", fix=f"use one of: {', '.join(kinds())}")
        raise UserError(f"no {lang} version of '{kind}'", field="--lang")
    if not NAME.match(name):
        raise UserError(f"invalid filter name '{name}'", field="NAME",
                        fix="use lower-case letters, digits, '.', '_' or '-'")
    target = Path(target)
    _check_parents(target)
    if (target.is_dir() and any(target.iterdir())) or target.is_file():
        raise UserError("target already exists", file=target, fix="choose another NAME or --dir")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfiles.temp_dir_beside(target)
    except OSError as e:
        raise UserError(f"cannot create the project here: {e.strerror}", file=target.parent, field="--dir",
                        fix="choose a writable --dir") from None
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a project is an ordinary directory
    try:
        if source.is_dir():
            _render_template(source, tmp, {"name": name, "ident": re.sub(r"[^a-z0-9]", "_", name),
                                           "kind": kind, "lang": lang})
        else:
            _copy_library(library, lang, tmp, name)
        if target.exists():
            target.rmdir()
        tmp.replace(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_parents(target: Path) -> None:
    """--dir under a file cannot be created; say which part is a file."""
    for parent in reversed(target.absolute().parents):
        if parent.exists() and not parent.is_dir():
            raise UserError("is a file, so nothing can be created under it", file=parent, field="--dir",
                            fix="choose a --dir whose parents are directories")


def _files(root: Path):
    for src in sorted(root.rglob("*")):
        rel = src.relative_to(root)
        if src.is_file() and "build" not in rel.parts and "__pycache__" not in rel.parts:
            yield src, rel


def _render_template(source: Path, out_dir: Path, values: dict) -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(source)), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    for src, rel in _files(source):
        out = out_dir / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".j2":
            out.with_suffix("").write_text(env.get_template(rel.as_posix()).render(**values))
        else:
            shutil.copyfile(src, out)


def _copy_library(library: Path, lang: str, out_dir: Path, name: str) -> None:
    """filters/<kind>/<lang>/ plus the kind's shared schema and scenarios, made self-contained."""
    for src, rel in _files(library / lang):
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out_dir / rel)
    for shared in ("scenarios", "schema.json"):
        src = library / shared
        if src.is_dir():
            shutil.copytree(src, out_dir / shared, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copyfile(src, out_dir / shared)
    spec = out_dir / "filter.yaml"
    text = spec.read_text()
    text = re.sub(r"(?m)^name:.*$", f"name: {name}", text, count=1)
    text = text.replace("../scenarios/", "scenarios/").replace("../schema.json", "schema.json")
    spec.write_text(text)
