"""Istio's EnvoyFilter analyzer (`istioctl analyze`, envoyfilter.EnvoyPatchAnalyzer) as a pure function:
an EnvoyFilter (a dict, as YAML loads it) -> its findings, (code, message, field path).

Facts from istio/istio at 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c (2026-08-22):
pkg/config/analysis/analyzers/envoyfilter/envoyfilter.go (the rules) and pkg/config/analysis/msg/messages.yaml
(codes, levels, texts). For each configPatches entry, in order, stopping at the first without a `patch`:
- ADD with applyTo ROUTE_CONFIGURATION or HTTP_ROUTE: IST0153 (Error; the ADD is ignored).
- REMOVE with applyTo ROUTE_CONFIGURATION or HTTP_ROUTE: IST0154 (Error; the REMOVE is ignored);
  any other REMOVE is relative (below).
- REPLACE with applyTo other than HTTP_FILTER, NETWORK_FILTER or VIRTUAL_HOST: IST0152 (Error; the message
  text still names only the two filters); otherwise relative.
- INSERT_BEFORE, INSERT_AFTER: relative. MERGE, INSERT_FIRST and ADD elsewhere are never flagged (the docs'
  prose lists MERGE among the relative operations; the code does not).
- A relative operation when spec.priority is 0 (or absent): IST0151 (Warning), or IST0155 (Warning) instead
  when an earlier patch -- of this EnvoyFilter or of one analyzed before it -- that had match.proxy.proxyVersion
  carried the same "instance name": patch.value.name, else (a value without a name)
  match.listener.filterChain.filter.name, else empty. Empty names match each other too, as in Istio.

Istio reports a line; here the field path of the entry that is flagged (the operation, or the applyTo it
conflicts with). The admission webhook (pkg/config/validation/envoyfilter) refuses further shapes; the
cheap structural ones are `admission()` below, the rest (proto decoding of the value) is left to the
mesh translator and `envoy --mode validate`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

Json = dict[str, Any]

RELATIVE_OPERATIONS = ("REMOVE", "REPLACE", "INSERT_BEFORE", "INSERT_AFTER")
ROUTE_LEVEL = ("ROUTE_CONFIGURATION", "HTTP_ROUTE")
REPLACEABLE = ("HTTP_FILTER", "NETWORK_FILTER", "VIRTUAL_HOST")
HCM_NAMES = ("envoy.filters.network.http_connection_manager", "envoy.http_connection_manager")


class Finding(NamedTuple):
    code: str        # IST0151 ..., or "admission" for the webhook's structural checks
    message: str
    field: str       # the resource's field path, e.g. spec.configPatches[0].patch.operation

    def fix(self) -> str:
        return FIXES.get(self.code, "correct the field")


# (name, level, text) as messages.yaml states them.
MESSAGES = {
    "IST0151": ("EnvoyFilterUsesRelativeOperation", "Warning",
                "this EnvoyFilter has no priority and a relative patch operation, which can cause it not to be "
                "applied"),
    "IST0152": ("EnvoyFilterUsesReplaceOperationIncorrectly", "Error",
                "the REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER"),
    "IST0153": ("EnvoyFilterUsesAddOperationIncorrectly", "Error",
                "the ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION or HTTP_ROUTE"),
    "IST0154": ("EnvoyFilterUsesRemoveOperationIncorrectly", "Error",
                "the REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION or HTTP_ROUTE"),
    "IST0155": ("EnvoyFilterUsesRelativeOperationWithProxyVersion", "Warning",
                "this EnvoyFilter has no priority, a relative patch operation and proxyVersion set on a patch of "
                "the same filter, which can cause it not to be applied during an upgrade"),
}
FIXES = {
    "IST0151": "set a non-zero spec.priority (envoyext publish --priority N), or use INSERT_FIRST or ADD",
    "IST0155": "set a non-zero spec.priority (envoyext publish --priority N), or use INSERT_FIRST or ADD",
    "IST0152": "use REPLACE only on HTTP_FILTER, NETWORK_FILTER or VIRTUAL_HOST (MERGE elsewhere)",
    "IST0153": "use MERGE on ROUTE_CONFIGURATION and HTTP_ROUTE",
    "IST0154": "use MERGE on ROUTE_CONFIGURATION and HTTP_ROUTE",
    "admission": "correct the patch as the message says",
}


def _instance_name(cp: Json) -> str:
    value = (cp.get("patch") or {}).get("value")
    if not isinstance(value, dict) or not value:
        return ""
    if "name" in value:
        return str(value["name"])
    listener = (cp.get("match") or {}).get("listener") or {}
    return str(((listener.get("filterChain") or {}).get("filter") or {}).get("name") or "")


def _finding(code: str, field: str, detail: str = "") -> Finding:
    name, level, text = MESSAGES[code]
    return Finding(code, f"{name} ({level}): {text}" + (f" ({detail})" if detail else ""), field)


def analyze(doc: Json, versioned_names: list[str] | None = None) -> list[Finding]:
    """Istio's analyzer findings for one EnvoyFilter. `versioned_names` carries the instance names of
    patches with a proxyVersion across resources analyzed one after another (it is extended in place);
    None: this resource alone."""
    if doc.get("kind") != "EnvoyFilter":
        return []
    names = versioned_names if versioned_names is not None else []
    spec = doc.get("spec") or {}
    priority = int(spec.get("priority") or 0)
    out: list[Finding] = []
    for i, cp in enumerate(spec.get("configPatches") or []):
        if not isinstance(cp, dict) or not isinstance(cp.get("patch"), dict):
            break  # Istio stops at the first entry without a patch
        where = f"spec.configPatches[{i}]"
        apply_to, op = str(cp.get("applyTo") or ""), str(cp["patch"].get("operation") or "")
        name = _instance_name(cp)
        relative = False
        if op == "ADD" and apply_to in ROUTE_LEVEL:
            out.append(_finding("IST0153", f"{where}.applyTo", f"applyTo {apply_to}"))
        elif op == "REMOVE" and apply_to in ROUTE_LEVEL:
            out.append(_finding("IST0154", f"{where}.applyTo", f"applyTo {apply_to}"))
        elif op == "REPLACE" and apply_to not in REPLACEABLE:
            out.append(_finding("IST0152", f"{where}.applyTo", f"applyTo {apply_to or 'unset'}"))
        else:
            relative = op in RELATIVE_OPERATIONS
        if relative and priority == 0:
            code = "IST0155" if name in names else "IST0151"
            out.append(_finding(code, f"{where}.patch.operation", f"{op} of {name or 'an unnamed value'}"))
        if ((cp.get("match") or {}).get("proxy") or {}).get("proxyVersion"):
            names.append(name)
    return out


def analyze_all(docs: Iterable[Json]) -> list[tuple[Json, Finding]]:
    """Every resource's findings, analyzed in order as `istioctl analyze` walks them (IST0155 looks back
    across resources)."""
    names: list[str] = []
    return [(doc, f) for doc in docs for f in analyze(doc, names)]


def admission(doc: Json) -> list[Finding]:
    """The structural checks of Istio's EnvoyFilter admission webhook (pkg/config/validation/envoyfilter,
    same commit) that do not need Envoy's protos: a patch needs applyTo, a patch, an operation and (unless
    REMOVE) a value; proxyVersion must compile; listener-class patches with a filter match need its name, and
    a subFilter match only goes with applyTo HTTP_FILTER under the HTTP connection manager and needs a name.
    WAYPOINT patches are skipped, as the webhook skips them."""
    if doc.get("kind") != "EnvoyFilter":
        return []
    out: list[Finding] = []
    for i, cp in enumerate((doc.get("spec") or {}).get("configPatches") or []):
        where = f"spec.configPatches[{i}]"
        if not isinstance(cp, dict):
            out.append(Finding("admission", "Envoy filter: null config patch", where))
            continue
        match = cp.get("match") or {}
        if match.get("context") == "WAYPOINT":
            continue
        apply_to = cp.get("applyTo")
        patch = cp.get("patch")
        problem = ("missing applyTo", f"{where}.applyTo") if not apply_to or apply_to == "INVALID" else \
            ("missing patch", f"{where}.patch") if not patch else \
            ("missing patch operation", f"{where}.patch.operation") \
            if patch.get("operation") in (None, "", "INVALID") else \
            ("missing patch value for non-remove operation", f"{where}.patch.value") \
            if patch["operation"] != "REMOVE" and patch.get("value") is None else None
        if problem:
            out.append(Finding("admission", f"Envoy filter: {problem[0]}", problem[1]))
            continue
        version = (match.get("proxy") or {}).get("proxyVersion")
        if version and len(version) <= 1024:
            try:
                re.compile(version)
            except re.error as e:
                out.append(Finding("admission", f"Envoy filter: invalid regex for proxy version, [{e}]",
                                   f"{where}.match.proxy.proxyVersion"))
                continue
        kinds = [k for k in ("listener", "routeConfiguration", "cluster") if match.get(k) is not None]
        if apply_to in ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER"):
            out.extend(_listener_match(apply_to, match, kinds, where))
        elif kinds and apply_to in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE") \
                and "routeConfiguration" not in kinds:
            out.append(Finding("admission", "Envoy filter: applyTo for http route class objects cannot have non "
                               "route configuration match", f"{where}.match.{kinds[0]}"))
        elif kinds and apply_to == "CLUSTER" and "cluster" not in kinds:
            out.append(Finding("admission", "Envoy filter: applyTo for cluster class objects cannot have non "
                               "cluster match", f"{where}.match.{kinds[0]}"))
    return out


def _listener_match(apply_to: str, match: Json, kinds: list[str], where: str) -> list[Finding]:
    if kinds and "listener" not in kinds:
        return [Finding("admission", "Envoy filter: applyTo for listener class objects cannot have non "
                        "listener match", f"{where}.match.{kinds[0]}")]
    f = ((match.get("listener") or {}).get("filterChain") or {}).get("filter")
    if not isinstance(f, dict):
        return []
    at = f"{where}.match.listener.filterChain.filter"
    if not f.get("name"):
        return [Finding("admission", "Envoy filter: filter match has no name to match on", f"{at}.name")]
    sub = f.get("subFilter")
    if sub is None:
        return []
    if apply_to != "HTTP_FILTER":
        return [Finding("admission", "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only",
                        f"{at}.subFilter")]
    if f["name"] not in HCM_NAMES:
        return [Finding("admission", f"Envoy filter: subfilter match requires filter match with {HCM_NAMES[0]}",
                        f"{at}.name")]
    if not (sub or {}).get("name"):
        return [Finding("admission", "Envoy filter: subfilter match has no name to match on", f"{at}.subFilter.name")]
    return []
