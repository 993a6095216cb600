"""Kubernetes + Istio YAML to schema-checked `Resource`s, refused the way the API server would.

`load(paths)` reads files and directories (recursively, *.yaml / *.yml in sorted order), every
document of each file (empty ones skipped). Istio kinds are checked against the shipped CRD schema
of the exact apiVersion they name (crd.py: strict, as `kubectl apply` is); the Kubernetes kinds the
model reads (and IstioOperator, the mesh config) against envoyext/schemas/kubernetes.yaml. Any
problem is one UserError naming the file and line, the document, the field path and a fix.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from envoyext.errors import UserError, read_text
from envoyext.mesh import crd
from envoyext.mesh.model import Json, Resource
from envoyext.schemas import _check_size, _fix_for, field_path, schema

# The Kubernetes kinds envoyext models, with the apiVersion each must have.
KUBERNETES = {"Namespace": "v1", "Service": "v1", "ServiceAccount": "v1", "Deployment": "apps/v1",
              "IstioOperator": "install.istio.io/v1alpha1"}
CLUSTER_SCOPED = {"Namespace"}
DEFAULT_NAMESPACE = "default"

# Kubernetes' name rules: Services and Namespaces are DNS labels (they become DNS names);
# everything else a DNS subdomain.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def load(paths: Sequence[Path | str]) -> list[Resource]:
    """Every resource in `paths` (files or directories), in order; a duplicate key is an error."""
    out: list[Resource] = []
    seen: dict[str, Resource] = {}
    for file in _files([Path(p) for p in paths]):
        for r, node in _file_resources(file):
            if r.key in seen:
                first = seen[r.key]
                raise UserError(
                    f"duplicate {r.kind} {r.namespace}/{r.name} (document {r.index}; also document "
                    f"{first.index} of {first.file})", file=file, line=_line(node, ["metadata", "name"]),
                    field="metadata.name",
                    fix="rename one of them, or load the variants one at a time")
            seen[r.key] = r
            out.append(r)
    return out


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
            if not found:
                raise UserError("no *.yaml or *.yml files in this directory", file=p,
                                fix="give a directory of Kubernetes/Istio YAML, or the files themselves")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise UserError("not found", file=p, fix="check the path")
    return out


def _documents(file: Path) -> Iterator[tuple[int, yaml.Node]]:
    """(index, node) of every non-empty YAML document of `file`."""
    text = read_text(file, what="YAML file")
    # libyaml's nodes carry line numbers too, and it parses ten times faster than pure Python.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                _check_size(node, file)
                yield index, node
            index += 1
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"YAML syntax error: {problem} (document {index})", file=file,
                        line=mark.line + 1 if mark else None, fix="correct the YAML at that line") from None
    except RecursionError:
        raise UserError("YAML nested too deeply", file=file, fix="flatten the document") from None
    finally:
        loader.dispose()


def _file_resources(file: Path) -> Iterator[tuple[Resource, yaml.Node]]:
    constructor = yaml.SafeLoader("")
    for index, node in _documents(file):
        data = constructor.construct_document(node)
        yield _resource(data, file, index, node), node


def _fail(message: str, file: Path, index: int, node: yaml.Node, path: list[Any], fix: str,
          what: str = "") -> UserError:
    where = f"document {index}" + (f", {what}" if what else "")
    return UserError(f"{message} ({where})", file=file, line=_line(node, path), field=field_path(path), fix=fix)


def _resource(data: Any, file: Path, index: int, node: yaml.Node) -> Resource:
    if not isinstance(data, dict):
        raise _fail(f"a document must be a mapping (a Kubernetes object), not {type(data).__name__}",
                    file, index, node, [], "write apiVersion, kind, metadata and spec")
    kind, api = data.get("kind"), data.get("apiVersion")
    for name, value in (("kind", kind), ("apiVersion", api)):
        if not isinstance(value, str) or not value:
            raise _fail("missing or not a string", file, index, node, [name],
                        f"add {name} (e.g. kind: VirtualService, apiVersion: networking.istio.io/v1)")
    assert isinstance(kind, str) and isinstance(api, str)
    istio = crd.kinds()
    if kind in KUBERNETES:
        if api != KUBERNETES[kind]:
            raise _fail(f"apiVersion {api} is not served for {kind}", file, index, node, ["apiVersion"],
                        f"use apiVersion: {KUBERNETES[kind]}", kind)
        validator: Any = _kube_validator(kind)
    elif kind in istio:
        validator = crd.validator(kind, api)
        if validator is None:
            raise _fail(f"apiVersion {api} is not served for {kind}", file, index, node, ["apiVersion"],
                        "use one of: " + ", ".join(istio[kind]), kind)
    else:
        known = sorted(KUBERNETES) + sorted(istio)
        raise _fail(f"unknown kind {kind!r}", file, index, node, ["kind"], "use one of: " + ", ".join(known))
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise _fail("missing metadata.name", file, index, node, ["metadata", "name"] if isinstance(meta, dict)
                    else ["metadata"], "give the object a name under metadata", kind)
    what = f"{kind} {meta['name']}"
    _check(_kube_validator("ObjectMeta"), meta, file, index, node, what, prefix=["metadata"])
    _check(validator, data, file, index, node, what)
    _check_name(kind, meta["name"], file, index, node, what)
    namespace = "" if kind in CLUSTER_SCOPED else meta.get("namespace") or DEFAULT_NAMESPACE
    if kind == "Deployment":
        _check_deployment(data["spec"], file, index, node, what)
    spec = data.get("spec")
    if kind in istio and isinstance(spec, dict):
        _check_istio(kind, spec, file, index, node, what)
    return Resource(kind, api, meta["name"], namespace, meta, spec if isinstance(spec, dict) else {},
                    str(file), index)


def _check_name(kind: str, name: str, file: Path, index: int, node: yaml.Node, what: str) -> None:
    label = kind in ("Service", "Namespace")
    ok = _LABEL.fullmatch(name) and len(name) <= 63 if label else _SUBDOMAIN.fullmatch(name)
    if not ok:
        rule = "a DNS label (lower case letters, digits and '-', at most 63)" if label else \
            "a DNS subdomain (lower case letters, digits, '-' and '.')"
        raise _fail(f"invalid name {name!r}: a {kind} name must be {rule}", file, index, node,
                    ["metadata", "name"], "rename it, e.g. " + (re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
                                                                 or "my-name"), what)


def _check_deployment(spec: Json, file: Path, index: int, node: yaml.Node, what: str) -> None:
    """What the API server checks beyond the schema: the selector must select the pod template."""
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = spec["template"]["metadata"]["labels"]
    for k, v in selector.items():
        if labels.get(k) != v:
            raise _fail(f"selector {k}={v} does not match the pod template's labels", file, index, node,
                        ["spec", "selector", "matchLabels", k], "make spec.template.metadata.labels include it", what)


def _check_istio(kind: str, spec: Json, file: Path, index: int, node: yaml.Node, what: str) -> None:
    """What istiod's validation webhook refuses beyond the CRD schema (pilot/pkg/config/validation):
    a destination port outside 1..65535 (ValidatePort; the CRD allows any uint32), a JWT rule
    without an issuer (validateJwtRule: "issuer must be set")."""
    def walk(x: Any, path: list[Any]) -> Iterator[tuple[list[Any], Any]]:
        yield path, x
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for k, v in items:
            yield from walk(v, [*path, k])

    for path, x in walk(spec, ["spec"]):
        port: Any = None
        if path[-1] == "destination" and isinstance(x, dict):     # route, mirror, mirrors[]
            port, at = x.get("port"), [*path, "port", "number"]
        elif len(path) > 2 and path[-1] == "port" and path[-3] == "portLevelSettings":
            port, at = x, [*path, "number"]
        number = port.get("number") if isinstance(port, dict) else None
        if isinstance(number, int) and not 0 < number <= 65535:
            raise _fail(f"port number {number} must be in the range 1..65535", file, index, node, at,
                        "use a port from 1 to 65535", what)
    if kind == "RequestAuthentication":
        for i, rule in enumerate(spec.get("jwtRules") or []):
            if isinstance(rule, dict) and not rule.get("issuer"):
                raise _fail("issuer must be set", file, index, node, ["spec", "jwtRules", i, "issuer"],
                            "give the issuer the tokens carry (their iss claim)", what)


@functools.cache
def _kube_validator(name: str) -> jsonschema.protocols.Validator:
    defs = schema("kubernetes")["$defs"]
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs, "$ref": f"#/$defs/{name}"}
    return jsonschema.Draft202012Validator(root)


def _check(validator: Any, data: Any, file: Path, index: int, node: yaml.Node, what: str,
           prefix: list[Any] | None = None) -> None:
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if not errors:
        return
    err = errors[0]
    while err.context:   # oneOf/anyOf: the deepest sub-error says what is wrong
        err = max(err.context, key=lambda e: len(e.absolute_path))
    path = (prefix or []) + list(err.absolute_path)
    message, fix = err.message, _fix_for(err)
    if err.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(err.instance, dict):
        allowed = _allowed(err.schema)
        extra = sorted(k for k in err.instance if k not in allowed) or sorted(err.instance)
        path.append(extra[0])
        message = "unknown field"
        fix = "remove it" + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "")
    elif err.validator == "oneOf" and isinstance(err.instance, dict):
        # Istio's oneof fields (uri exact/prefix/regex, ...): the CRD allows at most one of them.
        options = sorted({k for b in err.validator_value for k in b.get("required", [])})
        message = "set more than one of: " + ", ".join(k for k in options if k in err.instance)
        fix = "keep only one of " + ", ".join(options)
    elif err.validator == "x-kubernetes-validations":
        fix = "change the value so the rule holds"
    elif err.validator == "minItems":
        fix = f"give at least {err.validator_value}"
    if len(message) > 160:
        message = message[:157] + "..."
    raise _fail(message, file, index, node, path, fix, what)


def _allowed(s: Json) -> list[str]:
    """The fields an object schema names, with those of the kubernetes.yaml defs it includes by
    `allOf: [$ref]` (unevaluatedProperties counts both)."""
    names = set(s.get("properties", {}))
    for part in s.get("allOf", []):
        ref = part.get("$ref", "")
        if ref.startswith("#/$defs/"):
            names |= set(_allowed(schema("kubernetes")["$defs"][ref.removeprefix("#/$defs/")]))
    return sorted(names)


def _line(node: yaml.Node, path: list[Any]) -> int:
    """The 1-based line of `path` inside a document (the nearest existing ancestor if it is missing)."""
    line = node.start_mark.line + 1
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    child, line = v, k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
