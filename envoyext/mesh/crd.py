"""Istio's CRD schemas (the shipped crd-all.gen.yaml) as the Kubernetes API server applies them.

The API server validates a custom resource against the openAPIV3Schema of the version it names and,
with `kubectl`'s strict field validation (the default since 1.27), refuses unknown fields. JSON
Schema says the opposite by default, so each schema is rewritten once: every structural object with
`properties` and no `x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false`,
`nullable` becomes a null type, and `x-kubernetes-int-or-string` drops the type (its anyOf stays).

CEL rules (`x-kubernetes-validations`): the trivial ones are checked (see `_RULES`: durations,
port ranges, wildcards, mutually exclusive or required-together fields, string sets, unique port
numbers, the ServiceEntry resolution rules). Ignored, because they need a real CEL engine or
concern features the model does not run: the `unix://` address rules, URL scheme rules (WasmPlugin
url, jwks), AuthorizationPolicy's principals/serviceAccounts exclusivity, PeerAuthentication's
portLevelMtls-needs-a-selector, Telemetry/waypoint context rules and EnvoyFilter's
operation/value pairing (an unrecognised rule is simply skipped).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import yaml

from envoyext.schemas import HERE as SCHEMAS

Json = dict[str, Any]
BUNDLE = SCHEMAS / "istio" / "crd-all.gen.yaml"


@functools.cache
def _crds() -> dict[str, tuple[str, dict[str, Json]]]:
    """kind -> (group, {served version: openAPIV3Schema}). The 870 KB bundle is parsed once."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: dict[str, tuple[str, dict[str, Json]]] = {}
    with BUNDLE.open() as f:
        for doc in yaml.load_all(f, Loader=loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in spec["versions"] if v.get("served")}
            out[spec["names"]["kind"]] = (spec["group"], versions)
    return out


def kinds() -> dict[str, tuple[str, ...]]:
    """Every Istio kind with its served apiVersions (`networking.istio.io/v1`, ...)."""
    return {kind: tuple(f"{group}/{v}" for v in versions) for kind, (group, versions) in _crds().items()}


@functools.cache
def validator(kind: str, api_version: str) -> jsonschema.protocols.Validator | None:
    """The strict validator for one served kind/apiVersion (None if not served)."""
    group, versions = _crds()[kind]
    prefix, _, version = api_version.partition("/")
    if prefix != group or version not in versions:
        return None
    root = _structural(versions[version], strict=True)
    # apiVersion/kind/metadata are implicit in every CRD; metadata is checked by resources.py.
    root.setdefault("properties", {}).update(
        apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    root["additionalProperties"] = False
    return _Validator(root)


def _structural(s: Json, strict: bool) -> Json:
    """A CRD schema node rewritten for jsonschema (see the module docstring). `strict` is False
    inside oneOf/anyOf/allOf/not, whose branches only state `required` and must not close objects."""
    out = dict(s)
    out.pop("description", None)
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if "properties" in out:
        out["properties"] = {k: _structural(v, True) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _structural(out["items"], True)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(out["additionalProperties"], True)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in out:
            out[key] = [_structural(b, False) for b in out[key]]
    if isinstance(out.get("not"), dict):
        out["not"] = _structural(out["not"], False)
    if (strict and "properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


# --- the trivial CEL rules -------------------------------------------------------------------------

_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds in a Go duration string (`1.5s`, `1h30m`, `0`) as CEL's duration() reads it."""
    if text == "0":
        return 0.0
    if not text or _GO_DURATION.sub("", text) != "":
        raise ValueError(text)
    return sum(float(n) * _UNITS[u] for n, u in _GO_DURATION.findall(text) if n not in ("", "."))


def _keys(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (dict, list)) else []


def _has(x: Any, name: str) -> bool:
    return isinstance(x, dict) and name in x


def _get(x: Any, name: str, default: Any) -> Any:
    return x[name] if _has(x, name) else default


Check = Callable[[Any], bool]


def _rule(text: str) -> Check | None:
    """A Python check for a CEL rule we understand, else None (the rule is skipped)."""
    text = " ".join(text.split())
    if m := re.fullmatch(r"duration\(self\) >= duration\('(\w+)'\)", text):
        least = go_duration(m[1])
        return lambda x: go_duration(x) >= least
    if text == "0 < self && self <= 65535":
        return lambda x: 0 < x <= 65535
    if text == '!self.contains("*")':
        return lambda x: "*" not in x
    if text == 'self != "*"':
        return lambda x: x != "*"
    if text == "self.size() == 0":
        return lambda x: len(x) == 0
    if text == 'self.all(key, !key.contains("*"))':
        return lambda x: all("*" not in k for k in _keys(x))
    if text == "self.all(key, key.size() != 0)":
        return lambda x: all(len(k) != 0 for k in _keys(x))
    if text == "self.all(key, 0 < int(key) && int(key) <= 65535)":
        return lambda x: all(0 < int(k) <= 65535 for k in _keys(x))
    if m := re.fullmatch(r'self\.all\(key, size\(key\) < 63 && key\.matches\("(.*)"\)\)', text):
        pattern = re.compile(m[1])
        return lambda x: all(len(k) < 63 and pattern.search(k) for k in _keys(x))
    if re.fullmatch(r"\(has\(self\.\w+\) \? 1 : 0\)( \+ \(has\(self\.\w+\) \? 1 : 0\))+ <= 1", text):
        names = re.findall(r"has\(self\.(\w+)\)", text)
        return lambda x: sum(_has(x, n) for n in names) <= 1
    if m := re.fullmatch(r"has\(self\.(\w+)\) \|\| has\(self\.(\w+)\)", text):
        a, b = m[1], m[2]
        return lambda x: _has(x, a) or _has(x, b)
    if m := re.fullmatch(r"has\(self\.(\w+)\) != has\(self\.(\w+)\)", text):
        a, b = m[1], m[2]
        return lambda x: _has(x, a) != _has(x, b)
    if m := re.fullmatch(r'self in (\[(?:"[^"]*"(?:, )?)*\])', text):
        allowed = json.loads(m[1])
        return lambda x: x in allowed
    if text == "self.all(l1, self.exists_one(l2, l1.number == l2.number))":
        return lambda x: len({p.get("number") for p in x}) == len(x)
    return _SERVICE_ENTRY_RULES.get(text)


# ServiceEntry's resolution rules, verbatim from the CRD (they decide what a cluster can be).
_SERVICE_ENTRY_RULES: dict[str, Check] = {
    '((has(self.resolution) ? self.resolution : "NONE") == "NONE") ? !has(self.endpoints) : true':
        lambda x: _get(x, "resolution", "NONE") != "NONE" or not _has(x, "endpoints"),
    '((has(self.resolution) ? self.resolution : "") == "DNS_ROUND_ROBIN") ? '
    '((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true':
        lambda x: _get(x, "resolution", "") != "DNS_ROUND_ROBIN" or len(_get(x, "endpoints", [])) <= 1,
    '!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && '
    '!((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))':
        lambda x: not (any("/" in a for a in _get(x, "addresses", []))
                       and _get(x, "resolution", "NONE") not in ("STATIC", "NONE")),
}


@functools.cache
def _compiled(text: str) -> Check | None:
    return _rule(text)


def _validations(validator: Any, rules: list[Json], instance: Any, schema: Json
                 ) -> Iterator[jsonschema.ValidationError]:
    for rule in rules:
        check = _compiled(rule["rule"])
        if check is None:
            continue
        try:
            ok = check(instance)
        except (TypeError, ValueError, AttributeError, KeyError):
            # A value of the wrong type is reported by the type check; a bad duration is a failure.
            ok = not isinstance(instance, str) or "duration(" not in rule["rule"]
        if not ok:
            err = jsonschema.ValidationError(rule.get("message") or f"fails the rule {rule['rule']}")
            err.validator = "x-kubernetes-validations"
            yield err


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-validations": _validations})
