"""EnvoyFilter: patch one proxy's generated config the way istiod does, as a post-pass.

Facts follow Istio's `pilot/pkg/networking/core/envoyfilter/{listener_patch,http_filter_patch,rc_patch,
cluster_patch,util}.go`, `pilot/pkg/model/envoyfilter.go` and `push_context.go` (reference §10):
- Selection: an EnvoyFilter in the root namespace applies mesh-wide, else to its own namespace; then
  `workloadSelector.labels` or `targetRefs` narrow it (neither: every workload it reaches).
- Order: priority ascending, root namespace first, creation time (metadata.creationTimestamp, else load
  order), then `name.namespace`. The patches of all selected filters are then grouped by `applyTo`, keeping
  that order, and applied level by level (listener, listener filters, filter chains, network filters,
  HTTP filters; route configuration, virtual hosts, routes; clusters), as Istio's merged wrapper does.
- Contexts on this model: the `virtualInbound` listener and its inline routes and `inbound|` clusters are
  SIDECAR_INBOUND, every other sidecar resource SIDECAR_OUTBOUND, everything of a router proxy GATEWAY.
  Istio's bootstrap-only listeners (Prometheus 15090, health 15021) are never patched.
- INSERT_BEFORE/AFTER/FIRST on anything but HTTP_FILTER, NETWORK_FILTER, LISTENER_FILTER and HTTP_ROUTE
  is an ADD; INSERT_BEFORE with no anchor inserts first, INSERT_AFTER with no anchor appends; REPLACE and
  REMOVE need an anchor; ADD of a LISTENER or CLUSTER with context ANY only lands on outbound/gateway.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from envoyext.errors import UserError
from envoyext.mesh.model import (
    HEALTH_PORT,
    ISTIO_VERSION,
    PROMETHEUS_PORT,
    ROOT_NAMESPACE,
    Json,
    Mesh,
    Proxy,
    Resource,
    selects,
)
from envoyext.mesh.proxyconfig import ProxyConfig
from envoyext.mesh.translate import authz

HCM = "envoy.filters.network.http_connection_manager"
VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_OUTBOUND = "virtualOutbound"
CONTEXTS = ("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT")
OPERATIONS = ("MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE",
              "MERGE_AND_REPLACE_LIST")
APPLY_TO = ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION", "VIRTUAL_HOST",
            "HTTP_ROUTE", "CLUSTER", "LISTENER_FILTER")
ORDERED = ("HTTP_FILTER", "NETWORK_FILTER", "LISTENER_FILTER", "HTTP_ROUTE")  # INSERT_* kept; elsewhere ADD
MERGES = ("MERGE", "MERGE_AND_REPLACE_LIST")

# Where Istio's own HTTP filters sit, for phases (WasmPlugin phase, EnvoyFilter filterClass): AUTHN goes
# before jwt_authn, AUTHZ before the RBAC filters, STATS and UNSPECIFIED before the first of the filters
# Istio puts after RBAC (reference §11; the contract's chain: [...ext..., fault, cors, istio.stats, router]).
JWT = "envoy.filters.http.jwt_authn"
RBAC_PREFIX = "envoy.filters.http.rbac"
TAIL = frozenset({"envoy.filters.http.grpc_web", "envoy.filters.http.grpc_stats", "istio.alpn",
                  "envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats",
                  "envoy.filters.http.router"})
PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED")


def phase_index(filters: list[Json], phase: str) -> int:
    """Where a filter of `phase` goes in an HCM's http_filters: before its anchor, else at the end.
    AUTHN and AUTHZ anchors are searched after the CUSTOM block (its shadow RBAC filter is not the
    RBAC block AUTHZ goes before: Istio places both phases after ext_authz)."""
    start = authz.after_custom(filters) if phase in ("AUTHN", "AUTHZ") else 0
    for i, f in enumerate(filters[start:], start):
        name = f.get("name", "")
        if name in TAIL or (name.startswith(RBAC_PREFIX) and phase in ("AUTHN", "AUTHZ")) or (
                name == JWT and phase == "AUTHN"):
            return i
    return len(filters)


# ---------------------------------------------------------------- selection (shared with WasmPlugin)

def _services_selecting(mesh: Mesh, proxy: Proxy) -> list[str]:
    return [s.hostname for s in mesh.services
            if s.namespace == proxy.namespace and s.selector and selects(s.selector, proxy.labels)]


def target_refs_select(mesh: Mesh, res: Resource, refs: list[Json], proxy: Proxy, field: str) -> bool:
    """targetRefs: a Service selects the workloads behind it; a Gateway (gateway.networking.k8s.io) the
    deployment labelled with its name, as Istio's gateway deployments are."""
    for i, ref in enumerate(refs):
        kind, name = ref.get("kind", ""), ref.get("name", "")
        ns = ref.get("namespace") or res.namespace
        if ns != proxy.namespace:
            continue
        if kind == "Service":
            svc = next((s for s in mesh.services if s.name == name and s.namespace == ns
                        and not s.from_service_entry), None)
            if svc is not None and svc.selector and selects(svc.selector, proxy.labels):
                return True
        elif kind == "Gateway":
            if proxy.labels.get("gateway.networking.k8s.io/gateway-name") == name:
                return True
        else:
            raise UserError(f"{res.kind} {res.namespace}/{res.name}: targetRefs kind {kind!r} is not supported",
                            file=res.file, field=f"{field}[{i}].kind", fix="target a Service or a Gateway")
    return False


def reaches(mesh: Mesh, res: Resource, proxy: Proxy, labels: dict[str, str] | None, refs_field: str) -> bool:
    """Does `res` (EnvoyFilter, WasmPlugin) apply to `proxy`: namespace (the root namespace reaches all),
    then label selector or targetRefs."""
    if res.namespace not in (ROOT_NAMESPACE, proxy.namespace):
        return False
    refs = res.spec.get(refs_field) or ([res.spec["targetRef"]] if res.spec.get("targetRef") else [])
    if refs:
        return target_refs_select(mesh, res, refs, proxy, f"spec.{refs_field}")
    return selects(labels, proxy.labels)


def sort_key(res: Resource, load_index: int) -> tuple[Any, ...]:
    """Istio's EnvoyFilter order: priority ascending, root namespace first, creation time, name.namespace."""
    created = str(res.metadata.get("creationTimestamp") or "")
    return (int(res.spec.get("priority") or 0), res.namespace != ROOT_NAMESPACE,
            (0, created, 0) if created else (1, "", load_index), f"{res.name}.{res.namespace}")


# ---------------------------------------------------------------- patches

@dataclass
class Patch:
    res: Resource
    index: int
    apply_to: str
    operation: str
    match: Json
    value: Json
    filter_class: str

    @property
    def where(self) -> str:
        return f"spec.configPatches[{self.index}]"

    def error(self, message: str, field: str, fix: str) -> UserError:
        return UserError(f"EnvoyFilter {self.res.namespace}/{self.res.name}: {message}", file=self.res.file,
                         field=f"{self.where}.{field}", fix=fix)

    # match clauses, each None when absent
    @property
    def context(self) -> str:
        return str(self.match.get("context") or "ANY")

    @property
    def listener(self) -> Json | None:
        return self.match.get("listener")

    @property
    def filter_chain(self) -> Json | None:
        return (self.listener or {}).get("filterChain")

    @property
    def network_filter(self) -> Json | None:
        return (self.filter_chain or {}).get("filter")

    @property
    def sub_filter(self) -> Json | None:
        return (self.network_filter or {}).get("subFilter")

    @property
    def route_configuration(self) -> Json | None:
        return self.match.get("routeConfiguration")

    @property
    def vhost(self) -> Json | None:
        return (self.route_configuration or {}).get("vhost")

    @property
    def route(self) -> Json | None:
        return (self.vhost or {}).get("route")


def _proxy_metadata(proxy: Proxy) -> dict[str, str]:
    """The node metadata a patch's match.proxy.metadata compares with (exact strings, as istiod does)."""
    w = proxy.workload
    return {"ISTIO_VERSION": ISTIO_VERSION, "NAMESPACE": w.namespace, "NAME": w.pod, "WORKLOAD_NAME": w.deployment,
            "SERVICE_ACCOUNT": w.service_account, "CLUSTER_ID": "Kubernetes", "INSTANCE_IPS": w.ip,
            "INTERCEPTION_MODE": "REDIRECT", "MESH_ID": "cluster.local"}


def _proxy_match(p: Patch, proxy: Proxy) -> bool:
    pm = p.match.get("proxy")
    if not pm:
        return True
    version = pm.get("proxyVersion")
    if version:
        try:
            if re.search(version, ISTIO_VERSION) is None:
                return False
        except re.error as e:
            raise p.error(f"proxyVersion is not a valid regular expression ({e})", "match.proxy.proxyVersion",
                          "write an RE2 regular expression such as '^1\\.30.*'") from None
    meta = _proxy_metadata(proxy)
    return all(meta.get(k) == v for k, v in (pm.get("metadata") or {}).items())


def _check_value(p: Patch, value: Any, path: str) -> None:
    """Patch values carry filters' configs as typed_config with '@type'; the v2 `config` struct and a
    raw Any (type_url/value) are refused, naming the field."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_value(p, v, f"{path}[{i}]")
        return
    if not isinstance(value, dict):
        return
    if "@type" not in value:
        if "config" in value and "name" in value and isinstance(value["config"], dict):
            raise p.error("the v2 'config' struct is not supported", f"{path}.config",
                          "give the filter's configuration as typed_config with an '@type'")
        if "type_url" in value and "typed_config" not in value:
            raise p.error("a raw Any (type_url/value) is not supported", f"{path}.type_url",
                          "write the message as JSON with an '@type' field")
    if "typed_config" in value:
        tc = value["typed_config"]
        if not isinstance(tc, dict) or "@type" not in tc:
            raise p.error("typed_config has no '@type'", f"{path}.typed_config",
                          "add '@type: type.googleapis.com/<the filter's proto>'")
    for k, v in value.items():
        _check_value(p, v, f"{path}.{k}")


def patches_for(mesh: Mesh, proxy: Proxy) -> dict[str, list[Patch]]:
    """Every patch that reaches `proxy`, grouped by applyTo, in Istio's order."""
    chosen = [(sort_key(r, i), r) for i, r in enumerate(mesh.envoy_filters)
              if reaches(mesh, r, proxy, (r.spec.get("workloadSelector") or {}).get("labels"), "targetRefs")]
    out: dict[str, list[Patch]] = {}
    for _, res in sorted(chosen, key=lambda kr: kr[0]):
        for i, cp in enumerate(res.spec.get("configPatches") or []):
            patch = cp.get("patch")
            if not patch:
                continue  # Istio drops a patch-less entry
            p = Patch(res, i, str(cp.get("applyTo") or ""), str(patch.get("operation") or ""),
                      cp.get("match") or {}, patch.get("value") or {}, str(patch.get("filterClass") or "UNSPECIFIED"))
            if p.apply_to in ("EXTENSION_CONFIG", "BOOTSTRAP"):
                raise p.error(f"applyTo {p.apply_to} is not supported by envoyext (filters are inlined, there is "
                              "no extension config discovery or bootstrap patching)", "applyTo",
                              "put the filter inline with applyTo: HTTP_FILTER")
            if p.apply_to not in APPLY_TO:
                raise p.error(f"unknown applyTo {p.apply_to!r}", "applyTo", "use one of " + ", ".join(APPLY_TO))
            if p.operation not in OPERATIONS:
                raise p.error(f"unknown operation {p.operation!r}", "patch.operation",
                              "use one of " + ", ".join(OPERATIONS))
            if p.context not in CONTEXTS:
                raise p.error(f"unknown context {p.context!r}", "match.context", "use one of " + ", ".join(CONTEXTS))
            _check_value(p, p.value, "patch.value")
            if p.operation.startswith("INSERT_") and p.apply_to not in ORDERED:
                p.operation = "ADD"
            if _proxy_match(p, proxy):
                out.setdefault(p.apply_to, []).append(p)
    return out


# ---------------------------------------------------------------- proto merge on JSON

# Map fields: proto merge replaces an entry instead of merging into it.
MAP_FIELDS = frozenset({"typed_per_filter_config", "filter_metadata", "typed_filter_metadata", "source_codes",
                        "typed_extension_protocol_options", "key_values"})
# Oneofs: setting one member clears the others (the common ones a patch touches).
ONEOFS: tuple[frozenset[str], ...] = tuple(frozenset(g) for g in (
    ("route", "redirect", "direct_response", "filter_action", "non_forwarding_action"),
    ("cluster", "cluster_header", "weighted_clusters", "cluster_specifier_plugin", "inline_cluster_specifier_plugin"),
    ("prefix", "path", "safe_regex", "connect_matcher", "path_separated_prefix", "path_match_policy"),
    ("exact", "prefix", "suffix", "safe_regex", "contains"),
    ("rds", "route_config", "scoped_routes"),
    ("typed_config", "config_discovery"),
    ("type", "cluster_type"),
    ("inline_string", "inline_bytes", "filename", "environment_variable"),
))


def merge(dst: Json, src: Json, *, replace_lists: bool = False) -> None:
    """Proto merge on Envoy JSON, in place: scalars replace, messages merge, lists append (replace with
    MERGE_AND_REPLACE_LIST), map entries replace, a typed Any merges when '@type' is the same and is
    replaced when it differs, a oneof member clears its siblings."""
    for key, value in src.items():
        for group in ONEOFS:
            if key in group:
                for other in group - {key}:
                    if other in dst and other not in src:
                        del dst[other]
        old = dst.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if key in MAP_FIELDS:
                old.update(copy.deepcopy(value))
            elif "@type" in value and old.get("@type") != value["@type"]:
                dst[key] = copy.deepcopy(value)
            else:
                merge(old, value, replace_lists=replace_lists)
        elif isinstance(value, list) and isinstance(old, list) and not replace_lists:
            old.extend(copy.deepcopy(value))
        else:
            dst[key] = copy.deepcopy(value)


def _merge_op(p: Patch, dst: Json) -> None:
    merge(dst, p.value, replace_lists=p.operation == "MERGE_AND_REPLACE_LIST")


def _merge_filter(p: Patch, entry: Json) -> None:
    """MERGE on a network or HTTP filter entry: a new name replaces, typed_config merges (skipped for a
    filter delivered by config discovery, as istiod skips it)."""
    if "typed_config" not in entry:
        return
    if p.value.get("name"):
        entry["name"] = p.value["name"]
    if "typed_config" in p.value:
        merge(entry, {"typed_config": p.value["typed_config"]}, replace_lists=p.operation == "MERGE_AND_REPLACE_LIST")


# ---------------------------------------------------------------- ordered lists (filters, routes)

def _ordered_ops(p: Patch, items: list[Json], anchored: bool, is_anchor: Callable[[Json], bool]) -> list[Json]:
    """ADD / INSERT_* / REPLACE / REMOVE on a list of named elements, as Istio's http_filter_patch does."""
    value = copy.deepcopy(p.value)
    first = next((i for i, e in enumerate(items) if is_anchor(e)), None) if anchored else None
    if p.operation == "ADD":
        return items + [value]
    if p.operation == "INSERT_FIRST":
        return [value] + items
    if p.operation == "INSERT_BEFORE":
        if not anchored:
            return [value] + items
        return items if first is None else items[:first] + [value] + items[first:]
    if p.operation == "INSERT_AFTER":
        if not anchored:
            return items + [value]
        return items if first is None else items[:first + 1] + [value] + items[first + 1:]
    if p.operation == "REPLACE":
        return items if first is None else items[:first] + [value] + items[first + 1:]
    if p.operation == "REMOVE" and anchored:
        return [e for e in items if not is_anchor(e)]
    return items


# ---------------------------------------------------------------- listeners

def _port(listener: Json) -> int:
    return int(((listener.get("address") or {}).get("socket_address") or {}).get("port_value") or 0)


def _listener_match(p: Patch, lis: Json) -> bool:
    m = p.listener
    if m is None:
        return True
    if m.get("name") and m["name"] != lis.get("name"):
        return False
    if p.apply_to != "LISTENER" and lis.get("name") in (VIRTUAL_INBOUND, VIRTUAL_OUTBOUND):
        return True  # on the capture listeners portNumber picks the filter chain (below)
    return not m.get("portNumber") or _port(lis) == int(m["portNumber"])


def _chain_match(p: Patch, lis: Json, fc: Json) -> bool:
    m = p.listener
    if m is None:
        return True
    fcm = fc.get("filter_chain_match") or {}
    if lis.get("name") in (VIRTUAL_INBOUND, VIRTUAL_OUTBOUND) and m.get("portNumber") and \
            int(fcm.get("destination_port") or 0) != int(m["portNumber"]):
        return False
    want = m.get("filterChain")
    if not want:
        return True
    if want.get("name") and want["name"] != fc.get("name"):
        return False
    if want.get("sni") and want["sni"] not in (fcm.get("server_names") or []):
        return False
    if want.get("transportProtocol") and want["transportProtocol"] != fcm.get("transport_protocol"):
        return False
    if want.get("applicationProtocols"):
        have = fcm.get("application_protocols") or []
        if not all(proto in have for proto in str(want["applicationProtocols"]).split(",")):
            return False
    return not want.get("destinationPort") or int(fcm.get("destination_port") or 0) == int(want["destinationPort"])


def _network_match(p: Patch, f: Json) -> bool:
    nf = p.network_filter
    return nf is None or nf.get("name") == f.get("name")


def _named(name: Any) -> Callable[[Json], bool]:
    return lambda e: bool(e.get("name") == name)


def _ctx(p: Patch, context: str) -> bool:
    return p.context in ("ANY", context)


class _Patcher:
    def __init__(self, patches: dict[str, list[Patch]], proxy: Proxy, gateway_ports: dict[int, set[int]],
                 inbound_hosts: list[str]):
        self.patches = patches
        self.proxy = proxy
        self.gateway_ports = gateway_ports
        self.inbound_hosts = inbound_hosts

    def of(self, apply_to: str, context: str) -> Iterable[Patch]:
        return (p for p in self.patches.get(apply_to, ()) if _ctx(p, context))

    # -- listeners
    def added_listeners(self, context: str) -> list[Json]:
        return [copy.deepcopy(p.value) for p in self.of("LISTENER", context) if p.operation == "ADD"
                and not (p.context == "ANY" and context == "SIDECAR_INBOUND")]

    def listener(self, lis: Json, context: str) -> bool:
        """Patch one listener in place; False when a REMOVE drops it."""
        for p in self.of("LISTENER", context):
            if _listener_match(p, lis):
                if p.operation == "REMOVE":
                    return False
                if p.operation in MERGES:
                    _merge_op(p, lis)
        for p in self.of("LISTENER_FILTER", context):
            if _listener_match(p, lis):
                want = (p.listener or {}).get("listenerFilter")
                lis["listener_filters"] = _ordered_ops(p, lis.get("listener_filters") or [], bool(want),
                                                       _named(want))
                if not lis["listener_filters"]:
                    del lis["listener_filters"]
        chains = [fc for fc in lis.get("filter_chains") or [] if self.filter_chain(lis, fc, context)]
        if "default_filter_chain" in lis and not self.filter_chain(lis, lis["default_filter_chain"], context):
            del lis["default_filter_chain"]
        for p in self.of("FILTER_CHAIN", context):
            if p.operation == "ADD" and _listener_match(p, lis):
                chains.append(copy.deepcopy(p.value))
        lis["filter_chains"] = chains
        return True

    def filter_chain(self, lis: Json, fc: Json, context: str) -> bool:
        for p in self.of("FILTER_CHAIN", context):
            if _listener_match(p, lis) and _chain_match(p, lis, fc):
                if p.operation == "REMOVE":
                    return False
                if p.operation in MERGES:
                    _merge_op(p, fc)
        filters = fc.get("filters") or []
        for p in self.of("NETWORK_FILTER", context):
            if _listener_match(p, lis) and _chain_match(p, lis, fc):
                filters = _ordered_ops(p, filters, p.network_filter is not None,
                                       functools.partial(_network_match, p))
        for f in filters:
            for p in self.of("NETWORK_FILTER", context):
                # without a filter name a MERGE reaches every network filter of the chain (Istio)
                if p.operation in MERGES and _listener_match(p, lis) and _chain_match(p, lis, fc) \
                        and _network_match(p, f):
                    _merge_filter(p, f)
            if f.get("name") == HCM and isinstance(f.get("typed_config"), dict):
                self.hcm(lis, fc, f, context)
        fc["filters"] = filters
        return True

    def hcm(self, lis: Json, fc: Json, f: Json, context: str) -> None:
        hcm = f["typed_config"]
        http = list(hcm.get("http_filters") or [])
        relevant = [p for p in self.of("HTTP_FILTER", context)
                    if _listener_match(p, lis) and _chain_match(p, lis, fc) and _network_match(p, f)]
        for p in relevant:
            sub = (p.sub_filter or {}).get("name")
            if p.operation == "ADD" and p.filter_class in PHASES[:3]:
                i = phase_index(http, p.filter_class)
                http = http[:i] + [copy.deepcopy(p.value)] + http[i:]
            else:
                http = _ordered_ops(p, http, p.sub_filter is not None, _named(sub))
        for entry in http:
            for p in relevant:
                if p.operation in MERGES and p.sub_filter is not None and entry.get("name") == p.sub_filter.get("name"):
                    _merge_filter(p, entry)
        hcm["http_filters"] = http
        if isinstance(hcm.get("route_config"), dict):  # an inline route config (sidecar inbound)
            self.route_config(hcm["route_config"], context)

    # -- routes
    def _rc_match(self, p: Patch, rc: Json, context: str) -> bool:
        m = p.route_configuration
        if m is None:
            return True
        name = str(rc.get("name") or "")
        if context != "GATEWAY":
            port = _subset_key(name)[3] if name.startswith("inbound") else (int(name) if name.isdigit() else 0)
            if m.get("portNumber") and int(m["portNumber"]) != port:
                return False
            return not m.get("name") or m["name"] == name
        port, port_name, gateway = _gateway_rds(name)
        want = int(m.get("portNumber") or 0)
        if want and want not in self.gateway_ports.get(port, {port}):
            return False
        if m.get("portName") and m["portName"] != port_name:
            return False
        if m.get("gateway") and m["gateway"] != gateway:
            return False
        return not m.get("name") or m["name"] == name

    def route_config(self, rc: Json, context: str) -> None:
        for p in self.of("ROUTE_CONFIGURATION", context):
            if p.operation in MERGES and self._rc_match(p, rc, context):
                _merge_op(p, rc)
        vhosts = []
        for vh in rc.get("virtual_hosts") or []:
            kept: Json | None = vh
            for p in self.of("VIRTUAL_HOST", context):
                if kept is not None and self._rc_match(p, rc, context) and _vhost_match(p, kept):
                    if p.operation == "REMOVE":
                        kept = None
                    elif p.operation in MERGES:
                        _merge_op(p, kept)
                    elif p.operation == "REPLACE":
                        kept = copy.deepcopy(p.value)
            if kept is not None:
                self.routes(rc, kept, context)
                vhosts.append(kept)
        for p in self.of("VIRTUAL_HOST", context):
            if p.operation == "ADD" and self._rc_match(p, rc, context):
                vhosts.append(copy.deepcopy(p.value))
        rc["virtual_hosts"] = vhosts

    def routes(self, rc: Json, vh: Json, context: str) -> None:
        relevant = [p for p in self.of("HTTP_ROUTE", context) if self._rc_match(p, rc, context) and _vhost_match(p, vh)]
        routes: list[Json] = []
        for r in vh.get("routes") or []:
            kept = True
            for p in relevant:
                if kept and _route_match(p, r):
                    if p.operation == "REMOVE":
                        kept = False
                    elif p.operation in MERGES:
                        _merge_op(p, r)
            if kept:
                routes.append(r)
        for p in relevant:
            anchored = p.route is not None
            if p.operation == "INSERT_FIRST":
                # Istio: with an anchor, insert at the top only if the anchor exists
                if not anchored or any(_route_match(p, r) for r in routes):
                    routes = [copy.deepcopy(p.value)] + routes
            elif p.operation in ("ADD", "INSERT_BEFORE", "INSERT_AFTER"):
                routes = _ordered_ops(p, routes, anchored, functools.partial(_route_match, p))
        vh["routes"] = routes

    # -- clusters
    def clusters(self, clusters: list[Json], context_of: Callable[[Json], str],
                 add_contexts: tuple[str, ...]) -> list[Json]:
        out = []
        for c in clusters:
            context = context_of(c)
            kept = True
            for p in self.of("CLUSTER", context):
                if not _cluster_match(p, c, self.inbound_hosts):
                    continue
                if p.operation == "REMOVE":
                    kept = False
                    break
                if p.operation in MERGES and not _merge_transport_socket(p, c):
                    _merge_op(p, c)
            if kept:
                out.append(c)
        for context in add_contexts:
            for p in self.of("CLUSTER", context):
                if p.operation == "ADD" and not (p.context == "ANY" and context == "SIDECAR_INBOUND"):
                    out.append(copy.deepcopy(p.value))
        return out


def _vhost_match(p: Patch, vh: Json) -> bool:
    m = p.vhost
    if m is None:
        return True
    if m.get("name") and m["name"] != vh.get("name"):
        return False
    return not m.get("domainName") or m["domainName"] in (vh.get("domains") or [])


ACTIONS = {"ROUTE": "route", "REDIRECT": "redirect", "DIRECT_RESPONSE": "direct_response"}


def _route_match(p: Patch, r: Json) -> bool:
    m = p.route
    if m is None:
        return True
    if m.get("name") and m["name"] != r.get("name"):
        return False
    action = str(m.get("action") or "ANY")
    return action == "ANY" or ACTIONS.get(action, "") in r


def _subset_key(name: str) -> tuple[str, str, str, int]:
    """`direction|port|subset|host` (Istio's cluster and inbound route names) → its parts."""
    parts = name.split("|")
    if len(parts) < 4:
        return "", "", "", 0
    return parts[0], parts[2], parts[3], int(parts[1]) if parts[1].isdigit() else 0


def _gateway_rds(name: str) -> tuple[int, str, str]:
    """`http.<port>` / `https.<port>.<portName>.<gwName>.<gwNs>` → (port, portName, "ns/name")."""
    parts = name.split(".")
    num = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if name.startswith("http."):
        return num, "", ""
    if name.startswith("https.") and len(parts) >= 5:
        return num, parts[2], f"{parts[4]}/{parts[3]}"
    return 0, "", ""


def _cluster_match(p: Patch, c: Json, inbound_hosts: list[str]) -> bool:
    m = p.match.get("cluster")
    if not m:
        return True
    if m.get("name"):
        return bool(m["name"] == c.get("name"))
    direction, subset, host, port = _subset_key(str(c.get("name") or ""))
    hosts = inbound_hosts if direction == "inbound" and inbound_hosts else [host]
    if m.get("subset") and m["subset"] != subset:
        return False
    if m.get("service") and m["service"] not in hosts:
        return False
    return not m.get("portNumber") or int(m["portNumber"]) == port


def _merge_transport_socket(p: Patch, c: Json) -> bool:
    """Istio merges a patch's transport_socket into the cluster's own (same name: merged; otherwise
    replaced; a cluster with transport_socket_matches but none of that name: left alone). True when handled."""
    ts = p.value.get("transport_socket")
    if not isinstance(ts, dict):
        return False
    matches = c.get("transport_socket_matches") or []
    if matches:
        target = next((m["transport_socket"] for m in matches
                       if (m.get("transport_socket") or {}).get("name") == ts.get("name")), None)
        if target is not None:
            merge(target, {"typed_config": ts.get("typed_config") or {}})
    elif isinstance(c.get("transport_socket"), dict) and c["transport_socket"].get("name") == ts.get("name"):
        merge(c["transport_socket"], {"typed_config": ts.get("typed_config") or {}})
    else:
        c["transport_socket"] = copy.deepcopy(ts)
    # Istio stops here: the rest of a value that carries a transport_socket is not merged.
    return True


# ---------------------------------------------------------------- the post-pass

def _gateway_port_map(mesh: Mesh, proxy: Proxy) -> dict[int, set[int]]:
    """For a gateway: listener (target) port → the service ports that reach it (Istio's GatewayPortMap)."""
    out: dict[int, set[int]] = {}
    for s in mesh.services:
        if s.namespace == proxy.namespace and s.selector and selects(s.selector, proxy.labels):
            for sp in s.ports:
                out.setdefault(sp.target_port, {sp.target_port}).add(sp.port)
    return out


def listener_context(proxy: Proxy, listener: Json) -> str | None:
    """The patch context of one of the proxy's listeners (None: a bootstrap listener Istio never patches)."""
    if _port(listener) in (PROMETHEUS_PORT, HEALTH_PORT) and listener.get("name") != VIRTUAL_INBOUND:
        return None
    if proxy.kind == "router":
        return "GATEWAY"
    return "SIDECAR_INBOUND" if listener.get("name") == VIRTUAL_INBOUND else "SIDECAR_OUTBOUND"


def apply(mesh: Mesh, config: ProxyConfig) -> ProxyConfig:
    """`config` with every EnvoyFilter that reaches its proxy applied (a new ProxyConfig; the input is
    left as it was). Run after extensions.apply: Istio places WasmPlugins while building, then patches."""
    proxy = config.proxy
    patches = patches_for(mesh, proxy)
    if not patches:
        return config  # nothing to patch: no copy (a 1,000-service sidecar's config is megabytes)
    out = copy.deepcopy(config)
    patcher = _Patcher(patches, proxy, _gateway_port_map(mesh, proxy), _services_selecting(mesh, proxy))
    gateway = proxy.kind == "router"
    contexts = ("GATEWAY",) if gateway else ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND")

    listeners = []
    for lis in out.listeners:
        ctx = listener_context(proxy, lis)
        if ctx is None or patcher.listener(lis, ctx):
            listeners.append(lis)
    for ctx in contexts:
        listeners.extend(patcher.added_listeners(ctx))
    out.listeners = listeners

    route_ctx = "GATEWAY" if gateway else "SIDECAR_OUTBOUND"
    for rc in out.routes:
        patcher.route_config(rc, route_ctx)

    def cluster_context(c: Json) -> str:
        if gateway:
            return "GATEWAY"
        return "SIDECAR_INBOUND" if str(c.get("name", "")).startswith("inbound|") else "SIDECAR_OUTBOUND"

    out.clusters = patcher.clusters(out.clusters, cluster_context, ("GATEWAY",) if gateway else
                                    ("SIDECAR_OUTBOUND", "SIDECAR_INBOUND"))
    return out
