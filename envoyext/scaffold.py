"""`envoyext new`: render a filter project from templates/<kind>/<lang>/ with jinja2.

Files ending in `.j2` are rendered (the suffix dropped); others are copied as they are. The
target is written to a temporary sibling and renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import jinja2

from envoyext.errors import UserError
from envoyext.paths import templates_dir

NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


def kinds() -> list[str]:
    return sorted(p.name for p in templates_dir().iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def render(kind: str, name: str, lang: str, target: Path) -> Path:
    source = templates_dir() / kind / lang
    if not source.is_dir():
        if not (templates_dir() / kind).is_dir():
            raise UserError(f"unknown filter kind '{kind}'", field="KIND", fix=f"use one of: {', '.join(kinds())}")
        raise UserError(f"no {lang} template for '{kind}'", field="--lang")
    if not NAME.match(name):
        raise UserError(f"invalid filter name '{name}'", field="NAME",
                        fix="use lower-case letters, digits, '.', '_' or '-'")
    target = Path(target)
    if (target.is_dir() and any(target.iterdir())) or target.is_file():
        raise UserError("target already exists", file=target, fix="choose another NAME or --dir")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(source)), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    ident = re.sub(r"[^a-z0-9]", "_", name)
    values = {"name": name, "ident": ident, "kind": kind, "lang": lang}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for src in sorted(source.rglob("*")):
            rel = src.relative_to(source)
            if src.is_dir() or "build" in rel.parts or "__pycache__" in rel.parts:
                continue
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.suffix == ".j2":
                out.with_suffix("").write_text(env.get_template(rel.as_posix()).render(**values))
            else:
                shutil.copyfile(src, out)
        if target.exists():
            target.rmdir()
        tmp.replace(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
