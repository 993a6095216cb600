"""Load YAML documents and validate them against the JSON Schemas shipped in this folder.

Every file a user hands us goes through here, so every bad field is reported the same way:
file, field path, what is wrong, how to fix it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from envoyext.errors import UserError, read_text

HERE = Path(__file__).parent


@functools.cache
def schema(name: str) -> dict:
    return yaml.safe_load((HERE / f"{name}.yaml").read_text())


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    s = schema(name)
    cls = jsonschema.validators.validator_for(s)
    return cls(s)


def field_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


# A tiny YAML file can stand for a huge document through aliases (*a repeated inside &a ...,
# "billion laughs"): validating or running it would take forever. No real scenario needs more.
MAX_NODES = 100_000


def read_yaml(path: Path) -> Any:
    text = read_text(path, what="YAML file")
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_size(node, path)
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"YAML syntax error: {problem}", file=path, line=line,
                        fix="correct the YAML at that line") from None
    except RecursionError:
        raise UserError("YAML nested too deeply", file=path, fix="flatten the document") from None


def _check_size(root: yaml.Node, path: Path) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES nodes (or refer to themselves)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] < 0:  # reached again while being counted: it contains itself
                return MAX_NODES + 1
            return sizes[key]
        sizes[key] = -1
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        total = 1
        for child in children:
            total = min(total + size(child), MAX_NODES + 1)
        sizes[key] = total
        return total

    if size(root) > MAX_NODES:
        raise UserError(f"the document expands to more than {MAX_NODES} nodes (YAML aliases)", file=path,
                        line=root.start_mark.line + 1, fix="write the values out instead of nesting aliases")


def _fix_for(err: jsonschema.ValidationError) -> str:
    v = err.validator
    if isinstance(err.schema, dict) and isinstance(err.schema.get("x-fix"), str):  # the field's own advice
        return str(err.schema["x-fix"])
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        return "remove it" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if v == "required":
        return "add the missing field"
    if v == "enum":
        return "use one of: " + ", ".join(map(str, err.validator_value))
    if v == "type":
        t = err.validator_value
        return f"give a value of type {t if isinstance(t, str) else ' or '.join(t)}"
    if v == "maximum":  # bounds what a small file can cost (requests sent, time waited)
        return f"use at most {err.validator_value}"
    if v in ("minimum", "minItems", "pattern"):
        return f"respect {v} {err.validator_value}"
    return "see the README for this field"


def validate(data: Any, schema_name: str, file: Path | str) -> None:
    errors = sorted(_validator(schema_name).iter_errors(data), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return
    err = errors[0]
    # oneOf failures hide the useful sub-error; take the deepest one.
    while err.context:
        err = max(err.context, key=lambda e: len(e.path))
    path = list(err.absolute_path)
    message = err.message
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        if extra:
            path.append(extra[0])
            message = "unknown field"
    if len(message) > 160:
        message = message[:157] + "..."
    raise UserError(message, file=file, field=field_path(path), fix=_fix_for(err))


def load(path: Path | str, schema_name: str) -> Any:
    data = read_yaml(Path(path))
    if data is None:
        data = {}
    validate(data, schema_name, path)
    return data
