"""VirtualService → RDS: the RouteConfigurations one proxy is served, with Istio's names.

Sidecars get one RouteConfiguration per outbound HTTP port (`"9080"`), a virtual host per service
in view on that port (`reviews.default.svc.cluster.local:9080`, domains from the FQDN down to the
short name and the VIP) and `allow_any` / `block_all`; gateways get `http.<port>` per HTTP server
port, a virtual host per VirtualService host bound to the Gateway. Each VirtualService `http` rule
becomes Envoy routes as pilot's `route.go` builds them (reference §3): one per match, generation
stopping at the first catch-all, Istio's defaults where the rule says nothing (timeout 0s, the
default retry policy).
"""

from __future__ import annotations

import re
from typing import Any

from envoyext.envoy import xds
from envoyext.mesh.model import Json, Mesh, Proxy, Resource, Service
from envoyext.mesh.translate import scope

T = xds.T
FAULT = T + "envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS_POLICY = T + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
PREVIOUS_HOSTS = T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
PREVIOUS_PRIORITIES = T + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
# Istio's gRPC status names → codes (abort.grpcStatus is written by name).
GRPC_CODES = {name: i for i, name in enumerate(
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED "
    "RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE "
    "DATA_LOSS UNAUTHENTICATED".split())}
REDIRECT_CODES = {0: "MOVED_PERMANENTLY", 301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER",
                  307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}


def for_proxy(mesh: Mesh, proxy: Proxy) -> list[Json]:
    """Every RouteConfiguration the proxy's listeners name over RDS."""
    if proxy.kind == "router":
        return gateway_routes(mesh, proxy)
    return sidecar_routes(mesh, proxy)


# --- sidecar -------------------------------------------------------------------------------------

def outbound_http_ports(mesh: Mesh, proxy: Proxy) -> list[int]:
    """The ports a sidecar has an outbound HTTP listener and RouteConfiguration for."""
    return sorted({p for s in scope.services_in_view(mesh, proxy) for p in scope.http_ports(s)})


def sidecar_routes(mesh: Mesh, proxy: Proxy) -> list[Json]:
    services = scope.services_in_view(mesh, proxy)
    vses = scope.HostIndex(scope.virtual_services_for_mesh(mesh, proxy))
    configs = []
    for port in outbound_http_ports(mesh, proxy):
        hosts = []
        for service in services:
            if port not in scope.http_ports(service):
                continue
            vs = scope.virtual_service_for_host(vses, service.hostname)
            ctx = Context(mesh, proxy, port, gateway=None)
            routes = vs_routes(ctx, vs) if vs else [default_route(ctx, service)]
            hosts.append(xds.virtual_host(f"{service.hostname}:{port}", sidecar_domains(service, port, proxy),
                                          routes))
        hosts.append(passthrough_host(mesh))
        configs.append(route_configuration(str(port), hosts))
    return configs


def sidecar_domains(service: Service, port: int, proxy: Proxy) -> list[str]:
    """FQDN, then the shorter names a client in the proxy's namespace may use, then the VIP; each
    also with `:port` (pilot `generateVirtualHostDomains`). Short names only resolve in the
    service's own namespace, so only a proxy there gets them (no clash between namespaces)."""
    names = [service.hostname]
    if not service.from_service_entry:
        if proxy.namespace == service.namespace:
            names.append(service.name)
        names += [f"{service.name}.{service.namespace}", f"{service.name}.{service.namespace}.svc"]
    if service.vip:
        names.append(service.vip)
    return [d for n in dict.fromkeys(names) for d in (n, f"{n}:{port}")]


def passthrough_host(mesh: Mesh) -> Json:
    """Traffic to hosts outside the registry: PassthroughCluster (ALLOW_ANY) or a 502 (REGISTRY_ONLY)."""
    if mesh.config.outbound_traffic_policy == "REGISTRY_ONLY":
        return xds.virtual_host("block_all", ["*"], [
            {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}])
    return xds.virtual_host("allow_any", ["*"], [
        {"name": "allow_any", "match": {"prefix": "/"},
         "route": {"cluster": "PassthroughCluster", **no_timeout()}}])


def route_configuration(name: str, virtual_hosts: list[Json]) -> Json:
    # Istio never asks Envoy to check that routed clusters exist: CDS and RDS arrive independently.
    # Every Istio virtual host tells the upstream which attempt it sees (x-envoy-attempt-count),
    # which is how retries can be observed from the app.
    for vh in virtual_hosts:
        vh["include_request_attempt_count"] = True
    return {**xds.route_config(name, virtual_hosts), "validate_clusters": False}


def default_route(ctx: Context, service: Service) -> Json:
    """The route to a service no VirtualService covers (`BuildDefaultHTTPOutboundRoute`)."""
    cluster = cluster_name(ctx.port, "", service.hostname)
    hash_policy = hash_policies(ctx, [{"host": service.hostname}])
    action: Json = {"cluster": cluster, **no_timeout(),
                    "retry_policy": retry_policy(None, hashed=bool(hash_policy))}
    if hash_policy:
        action["hash_policy"] = hash_policy
    return {"name": "default", "match": {"prefix": "/"},
            "decorator": {"operation": f"{service.hostname}:{ctx.port}/*"}, "route": action}


# --- gateway -------------------------------------------------------------------------------------

def gateway_http_servers(mesh: Mesh, proxy: Proxy) -> dict[int, list[tuple[Resource, Json]]]:
    """HTTP servers of the Gateways selecting this proxy, by the port the proxy listens on (TLS
    servers: the security issue). A server port that is a port of a Service selecting the gateway
    pod is that port's targetPort (the egress gateway's 80 listens on 8080); any other is taken as
    written (Bookinfo's 8080). Pilot `resolvePorts` with a label selector: the first Service
    port that matches wins."""
    out: dict[int, list[tuple[Resource, Json]]] = {}
    for gw in scope.gateways_for(mesh, proxy):
        for server in gw.spec.get("servers", []):
            port = server.get("port", {})
            if str(port.get("protocol", "")).upper() in scope.HTTP_PROTOCOLS:
                out.setdefault(listen_port(mesh, proxy, int(port["number"])), []).append((gw, server))
    return dict(sorted(out.items()))


def listen_port(mesh: Mesh, proxy: Proxy, number: int) -> int:
    """Where a gateway proxy listens for a Gateway server's port `number` (pilot `resolvePorts`)."""
    for s in mesh.services:
        if not s.from_service_entry and s.namespace == proxy.namespace and s.selector \
                and all(proxy.labels.get(k) == v for k, v in s.selector.items()):
            p = s.port(number)
            if p is not None:
                return p.target_port
    return number


def gateway_routes(mesh: Mesh, proxy: Proxy) -> list[Json]:
    """`http.<listen port>` per port; virtual hosts and routes speak of the first server's own
    port number (pilot `buildGatewayHTTPRouteConfig`: `port := servers[0].Port.Number`), so the
    egress gateway's `http.8080` holds `api.example.com:80`."""
    configs = []
    for listen, servers in gateway_http_servers(mesh, proxy).items():
        port = int(servers[0][1]["port"]["number"])
        numbers = {int(s["port"]["number"]) for _, s in servers}
        hosts: dict[str, Json] = {}
        for gw, server in servers:
            ctx = Context(mesh, proxy, port, gateway=gw, server_ports=numbers)
            for vs in mesh.virtual_services:
                if not scope.binds_to_gateway(vs, gw):
                    continue
                for host in _server_hosts_for(vs, gw, server):
                    vh = hosts.setdefault(host, xds.virtual_host(f"{host}:{port}", gateway_domains(host, port), []))
                    vh["routes"] += vs_routes(ctx, vs)
        if not hosts:
            # Nothing bound to this port: Istio still serves the route name, answering 404.
            hosts["blackhole"] = xds.virtual_host(f"blackhole:{port}", ["*"], [
                {"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}])
        configs.append(route_configuration(f"http.{listen}", list(hosts.values())))
    return configs


def _server_hosts_for(vs: Resource, gw: Resource, server: Json) -> list[str]:
    """The VirtualService's hosts that a gateway server admits (`ns/host` server hosts limit the
    VirtualService's namespace; `.` is the Gateway's own), each the more specific of the pair."""
    out = []
    for h in scope.vs_hosts(vs):
        for sh in server.get("hosts", []):
            ns, _, dns = sh.rpartition("/")
            ns = gw.namespace if ns == "." else ns
            if ns and ns != "*" and ns != vs.namespace:
                continue
            both = scope.hosts_intersect(dns, h)
            if both is not None and both not in out:
                out.append(both)
    return out


def gateway_domains(host: str, port: int) -> list[str]:
    """pilot `buildGatewayVirtualHostDomains`: the host and `host:*` (any port behind a load
    balancer); a wildcard host keeps its own port, as Envoy allows one wildcard per domain."""
    if host == "*":
        return [host]
    return [host, f"{host}:{port}" if host.startswith("*") else f"{host}:*"]


# --- one VirtualService's http rules ----------------------------------------------------------------

class Context:
    """Where routes are being built: the proxy, the listener port, the Gateway (None on a sidecar)
    and, on a gateway, the server port numbers that listen there (a match's `port` names one of
    those, not the listener's targetPort: pilot's gateway port map)."""

    def __init__(self, mesh: Mesh, proxy: Proxy, port: int, gateway: Resource | None,
                 server_ports: set[int] | None = None):
        self.mesh, self.proxy, self.port, self.gateway = mesh, proxy, port, gateway
        self.server_ports = server_ports or {port}


def vs_routes(ctx: Context, vs: Resource) -> list[Json]:
    """pilot `BuildHTTPRoutesForVirtualService`: a route per applicable match of each http rule, in
    order, stopping after the first catch-all."""
    out = []
    for rule in vs.spec.get("http") or []:
        matches = rule.get("match") or [None]
        for match in matches:
            if match is not None and not match_applies(ctx, vs, match):
                continue
            r = translate_route(ctx, vs, rule, match)
            if r is not None:
                out.append(r)
            if is_catch_all(match):
                return out
    return out


def match_applies(ctx: Context, vs: Resource, match: Json) -> bool:
    """A match is skipped when its port, gateways, sourceLabels or sourceNamespace do not fit."""
    if match.get("port") and int(match["port"]) not in ctx.server_ports:
        return False
    if match.get("gateways"):
        refs = [scope.gateway_ref(g, vs.namespace) for g in match["gateways"]]
        here = "mesh" if ctx.gateway is None else f"{ctx.gateway.namespace}/{ctx.gateway.name}"
        if here not in refs:
            return False
    if match.get("sourceLabels") and not all(ctx.proxy.labels.get(k) == v for k, v in match["sourceLabels"].items()):
        return False
    return not (match.get("sourceNamespace") and match["sourceNamespace"] != ctx.proxy.namespace)


def is_catch_all(match: Json | None) -> bool:
    """No match, or one that matches every request (pilot `isCatchAllMatch`)."""
    if match is None:
        return True
    conditions = ("headers", "withoutHeaders", "method", "authority", "scheme", "queryParams", "port",
                  "sourceLabels", "sourceNamespace", "gateways")
    if any(match.get(k) for k in conditions):
        return False
    uri = match.get("uri")
    if not uri:
        return True
    return uri.get("prefix") == "/" or uri.get("regex") in ("*", ".*")


def route_name(rule: Json, match: Json | None) -> str:
    name = str(rule.get("name", ""))
    if match is not None and match.get("name"):
        name = f"{name}.{match['name']}"
    return name


def translate_route(ctx: Context, vs: Resource, rule: Json, match: Json | None) -> Json | None:
    """One Envoy route for one http rule and one of its matches (pilot `TranslateRoute`)."""
    out: Json = {}
    name = route_name(rule, match)
    if name:
        out["name"] = name
    out["match"] = translate_match(match)
    request_headers, response_headers = header_ops(rule.get("headers") or {})
    host_rewrite = request_headers.pop("host_rewrite_literal", None)
    if rule.get("redirect"):
        redirect = translate_redirect(ctx, rule["redirect"])
        if redirect is None:
            return None          # an unsupported redirect code: Istio leaves the route without action
        out["redirect"] = redirect
    elif rule.get("directResponse"):
        out["direct_response"] = translate_direct_response(rule["directResponse"])
    else:
        action, extra_request, extra_response = route_action(ctx, vs, rule)
        if action is None:
            return None
        request_headers = _merge_ops(request_headers, extra_request)
        response_headers = _merge_ops(response_headers, extra_response)
        host_rewrite = request_headers.pop("host_rewrite_literal", host_rewrite)
        if host_rewrite is not None:
            action["host_rewrite_literal"] = host_rewrite
        out["route"] = action
    _set_header_ops(out, "request", request_headers)
    _set_header_ops(out, "response", response_headers)
    if match is not None and match.get("statPrefix"):
        out["stat_prefix"] = match["statPrefix"]
    out["metadata"] = {"filter_metadata": {"istio": {
        "config": f"/apis/networking.istio.io/v1/namespaces/{vs.namespace}/virtual-service/{vs.name}"}}}
    out["decorator"] = {"operation": route_operation(out, vs.name, ctx.port)}
    per_filter: Json = {}
    fault = translate_fault(rule.get("fault"))
    if fault is not None:
        per_filter[FAULT_FILTER] = fault
    if rule.get("corsPolicy"):
        per_filter[CORS_FILTER] = translate_cors(rule["corsPolicy"])
    if per_filter:
        out["typed_per_filter_config"] = per_filter
    return out


def route_operation(r: Json, vs_name: str, port: int) -> str:
    """pilot `GetRouteOperation`: `host:port/path` for one cluster, else `vsName:port/path`."""
    m = r["match"]
    path = m["prefix"] + "*" if "prefix" in m else m.get("path") or m.get("safe_regex", {}).get("regex") or "/*"
    cluster = r.get("route", {}).get("cluster", "")
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] == "outbound":
        return f"{parts[3]}:{parts[1]}{path}"
    return f"{vs_name}:{port}{path}"


# --- match -----------------------------------------------------------------------------------------

def string_match(m: Json) -> Json:
    """Istio StringMatch → Envoy StringMatcher."""
    if "exact" in m:
        return {"exact": m["exact"]}
    if "prefix" in m:
        return {"prefix": m["prefix"]}
    if "regex" in m:
        return {"safe_regex": {"regex": m["regex"]}}
    return {}


def _present(m: Json | None) -> bool:
    """pilot `canBeConvertedToPresentMatch`: an empty match or regex `*` only asks for presence."""
    return not m or not any(m.get(k) for k in ("exact", "prefix", "regex")) or m.get("regex") == "*"


def header_matcher(name: str, m: Json | None, *, invert: bool = False) -> Json:
    out: Json = {"name": name}
    if _present(m):
        out["present_match"] = True
    else:
        out["string_match"] = string_match(m or {})
        if invert:
            out["treat_missing_header_as_empty"] = True
    if invert:
        out["invert_match"] = True
    return out


CLAIM_PREFIX = "@request.auth.claims"


def claim_matcher(header: str, m: Json | None) -> Json:
    """`headers["@request.auth.claims.groups"]` (or `...claims[a][b]`) matches the JWT payload the
    jwt_authn filter left in dynamic metadata (pilot `translateMetadataMatch`)."""
    rest = header[len(CLAIM_PREFIX):]
    keys = rest[1:].split(".") if rest.startswith(".") else [k for k in rest.strip("[]").split("][") if k]
    value: Json = {"present_match": True} if _present(m) else {"string_match": string_match(m or {})}
    return {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, *({"key": k} for k in keys)],
            "value": value}


def translate_match(match: Json | None) -> Json:
    """pilot `TranslateRouteMatch` (reference §3.1)."""
    out: Json = {"prefix": "/"}
    if match is None:
        return out
    uri = match.get("uri") or {}
    if "exact" in uri:
        out = {"path": uri["exact"]}
    elif "prefix" in uri:
        out = {"prefix": uri["prefix"]}
    elif "regex" in uri:
        out = {"safe_regex": {"regex": uri["regex"]}}
    out["case_sensitive"] = not match.get("ignoreUriCase", False)
    claims = {k: v for k, v in (match.get("headers") or {}).items() if k.startswith(CLAIM_PREFIX)}
    headers = [header_matcher(k, v) for k, v in (match.get("headers") or {}).items() if k not in claims]
    headers += [header_matcher(k, v, invert=True) for k, v in (match.get("withoutHeaders") or {}).items()]
    headers.sort(key=lambda h: str(h["name"]))
    for field, pseudo in (("method", ":method"), ("authority", ":authority"), ("scheme", ":scheme")):
        if match.get(field):
            headers.append(header_matcher(pseudo, match[field]))
    if headers:
        out["headers"] = headers
    if claims:
        out["dynamic_metadata"] = [claim_matcher(k, v) for k, v in sorted(claims.items())]
    params = []
    for k, v in sorted((match.get("queryParams") or {}).items()):
        params.append({"name": k, "present_match": True} if _present(v)
                      else {"name": k, "string_match": string_match(v)})
    if params:
        out["query_parameters"] = params
    return out


# --- actions ---------------------------------------------------------------------------------------

def cluster_name(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def destination_cluster(ctx: Context, vs: Resource, destination: Json) -> str:
    """pilot `GetDestinationCluster`: the destination's port, else the service's only port, else
    the listener's port."""
    host = scope.resolve_host(destination.get("host", ""), vs.namespace)
    port = (destination.get("port") or {}).get("number")
    if port is None:
        service = next((s for s in ctx.mesh.services if s.hostname == host), None)
        port = service.ports[0].port if service is not None and len(service.ports) == 1 else ctx.port
    return cluster_name(int(port), destination.get("subset", ""), host)


def no_timeout() -> Json:
    """Istio's default route timeout: 0s, disabled (Envoy's own default would be 15s). Istio still
    sets the deprecated max_grpc_timeout (its replacement, max_stream_duration, "has regressions")."""
    return {"timeout": "0s", "max_grpc_timeout": "0s"}


def route_action(ctx: Context, vs: Resource, rule: Json) -> tuple[Json | None, Json, Json]:
    """The RouteAction and the single destination's header operations (which go on the route)."""
    destinations = rule.get("route") or []
    if not destinations:
        return None, {}, {}
    action: Json = {}
    request_ops: Json = {}
    response_ops: Json = {}
    weighted = []
    for d in destinations:
        if len(destinations) > 1 and not d.get("weight"):
            continue    # weight 0 (or absent among several) is dropped
        weighted.append(d)
    if len(weighted) == 1:
        d = weighted[0]
        action["cluster"] = destination_cluster(ctx, vs, d["destination"])
        request_ops, response_ops = header_ops(d.get("headers") or {})
    elif weighted:
        clusters = []
        for d in weighted:
            cw: Json = {"name": destination_cluster(ctx, vs, d["destination"]), "weight": int(d["weight"])}
            req, resp = header_ops(d.get("headers") or {})
            host = req.pop("host_rewrite_literal", None)
            _set_header_ops(cw, "request", req)
            _set_header_ops(cw, "response", resp)
            if host is not None:
                cw["host_rewrite_literal"] = host
            clusters.append(cw)
        action["weighted_clusters"] = {"clusters": clusters}
    else:
        return None, {}, {}
    rewrite = rule.get("rewrite") or {}
    if rewrite.get("uri"):
        action["prefix_rewrite"] = rewrite["uri"]
    if rewrite.get("uriRegexRewrite"):
        rr = rewrite["uriRegexRewrite"]
        action["regex_rewrite"] = {"pattern": {"regex": rr.get("match", "")}, "substitution": rr.get("rewrite", "")}
    if rewrite.get("authority"):
        action["host_rewrite_literal"] = rewrite["authority"]
    action["timeout"] = action["max_grpc_timeout"] = duration(rule.get("timeout") or "0s")   # pilot setTimeout
    hash_policy = hash_policies(ctx, [{**d["destination"], "host": scope.resolve_host(d["destination"]["host"],
                                                                                       vs.namespace)}
                                      for d in weighted])
    policy = retry_policy(rule.get("retries"), hashed=bool(hash_policy))
    if policy is not None:
        action["retry_policy"] = policy
    mirrors = mirror_policies(ctx, vs, rule)
    if mirrors:
        action["request_mirror_policies"] = mirrors
    if hash_policy:
        action["hash_policy"] = hash_policy
    return action, request_ops, response_ops


def translate_redirect(ctx: Context, redirect: Json) -> Json | None:
    code = REDIRECT_CODES.get(int(redirect.get("redirectCode") or 0))
    if code is None:
        return None
    out: Json = {}
    if redirect.get("prefixRewrite"):
        out["prefix_rewrite"] = redirect["prefixRewrite"]
    elif redirect.get("uri"):
        out["path_redirect"] = redirect["uri"]
    if redirect.get("authority"):
        out["host_redirect"] = redirect["authority"]
    if redirect.get("scheme"):
        out["scheme_redirect"] = redirect["scheme"]
    port = ctx.port if redirect.get("derivePort") == "FROM_REQUEST_PORT" else redirect.get("port")
    scheme = redirect.get("scheme", "http")
    if port and not ((scheme == "http" and int(port) == 80) or (scheme == "https" and int(port) == 443)):
        out["port_redirect"] = int(port)
    out["response_code"] = code
    return out


def translate_direct_response(dr: Json) -> Json:
    out: Json = {"status": int(dr["status"])}
    body = dr.get("body") or {}
    if "string" in body:
        out["body"] = {"inline_string": body["string"]}
    elif "bytes" in body:
        out["body"] = {"inline_bytes": body["bytes"]}
    return out


def retry_policy(retries: Json | None, *, hashed: bool) -> Json | None:
    """pilot `retry.ConvertPolicy` (reference §3.3): the default policy when the rule has none; none
    at all when attempts is 0; the previous-hosts predicate left out under consistent hashing."""
    out: Json = {"retry_on": DEFAULT_RETRY_ON, "num_retries": 2}
    if not hashed:
        out["retry_host_predicate"] = [previous_hosts()]
    out["host_selection_retry_max_attempts"] = 5
    if retries is None:
        return out
    if int(retries.get("attempts") or 0) <= 0:
        return None
    out["num_retries"] = int(retries["attempts"])
    if retries.get("retryOn"):
        tokens = [t.strip() for t in str(retries["retryOn"]).split(",") if t.strip()]
        codes = [int(t) for t in tokens if t.isdigit()]
        words = [t for t in tokens if not t.isdigit()]
        if codes and "retriable-status-codes" not in words:
            words.append("retriable-status-codes")
        out["retry_on"] = ",".join(words)
        if codes:
            out["retriable_status_codes"] = codes
    if retries.get("perTryTimeout"):
        out["per_try_timeout"] = duration(retries["perTryTimeout"])
    if retries.get("retryRemoteLocalities"):
        out["retry_priority"] = {"name": "envoy.retry_priorities.previous_priorities",
                                 "typed_config": {"@type": PREVIOUS_PRIORITIES, "update_frequency": 2}}
    if retries.get("retryIgnorePreviousHosts") is True:
        out["retry_host_predicate"] = [previous_hosts()]
    elif retries.get("retryIgnorePreviousHosts") is False:
        out.pop("retry_host_predicate", None)
    if retries.get("backoff"):
        out["retry_back_off"] = {"base_interval": duration(retries["backoff"])}
    # Keep Envoy's field order readable: the predicate's attempts after the predicate.
    out["host_selection_retry_max_attempts"] = out.pop("host_selection_retry_max_attempts")
    return out


def previous_hosts() -> Json:
    return {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}


def fraction(value: Any) -> Json:
    """An Istio Percent (double, 0-100) as Envoy's FractionalPercent per million."""
    return {"numerator": round(float(value) * 10000), "denominator": "MILLION"}


def translate_fault(fault: Json | None) -> Json | None:
    """pilot `TranslateFault` (reference §3.4); None when neither a delay nor an abort is valid."""
    if not fault:
        return None
    out: Json = {"@type": FAULT}
    delay = fault.get("delay") or {}
    if delay.get("fixedDelay"):
        pct = _fault_percentage(delay)
        if pct["numerator"] > 0:
            out["delay"] = {"fixed_delay": duration(delay["fixedDelay"]), "percentage": pct}
    abort = fault.get("abort") or {}
    status: Json = {}
    if abort.get("httpStatus"):
        status = {"http_status": int(abort["httpStatus"])}
    elif abort.get("grpcStatus"):
        status = {"grpc_status": GRPC_CODES.get(str(abort["grpcStatus"]), 2)}
    if status:
        out["abort"] = {**status, **({"percentage": fraction(abort["percentage"].get("value", 0))}
                                     if abort.get("percentage") else {})}
    return out if ("delay" in out or "abort" in out) else None


def _fault_percentage(delay: Json) -> Json:
    if delay.get("percentage"):
        return fraction(delay["percentage"].get("value", 0))
    return {"numerator": int(delay.get("percent") or 0), "denominator": "HUNDRED"}


def translate_cors(cors: Json) -> Json:
    """pilot `TranslateCORSPolicy` (reference §3.5)."""
    out: Json = {"@type": CORS_POLICY}
    origins = [string_match(o) for o in cors.get("allowOrigins") or []]
    origins += [{"exact": o} for o in cors.get("allowOrigin") or []]
    if origins:
        out["allow_origin_string_match"] = origins
    for src, dst in (("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"),
                     ("exposeHeaders", "expose_headers")):
        if cors.get(src):
            out[dst] = ",".join(cors[src])
    if cors.get("maxAge"):
        out["max_age"] = str(_seconds(cors["maxAge"]))
    if "allowCredentials" in cors:
        out["allow_credentials"] = bool(cors["allowCredentials"])
    out["filter_enabled"] = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    out["forward_not_matching_preflights"] = cors.get("unmatchedPreflights") != "IGNORE"
    return out


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")


def _seconds_float(value: Any) -> float:
    """Istio writes durations as Go does ("1h30m", "100ms", "2.5s"); also plain seconds."""
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return float(text)
    return sum(float(n) * _UNITS[u] for n, u in parts)


def duration(value: Any) -> str:
    """A duration as Envoy's JSON wants it: seconds with an `s` ("100ms" → "0.100s")."""
    seconds = _seconds_float(value)
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def _seconds(value: Any) -> int:
    return int(_seconds_float(value))


def mirror_policies(ctx: Context, vs: Resource, rule: Json) -> list[Json]:
    """pilot `TranslateRequestMirrorPolicy`: `mirror` (+ mirrorPercentage / mirrorPercent) and
    `mirrors[]`; percentage 0 means no mirroring; default 100%."""
    out = []
    if rule.get("mirror"):
        pct = _mirror_fraction(rule.get("mirrorPercentage"), rule.get("mirrorPercent"))
        if pct is not None:
            out.append({"cluster": destination_cluster(ctx, vs, rule["mirror"]),
                        "runtime_fraction": {"default_value": pct}, "trace_sampled": False})
    for m in rule.get("mirrors") or []:
        pct = _mirror_fraction(m.get("percentage"), None)
        if pct is not None:
            out.append({"cluster": destination_cluster(ctx, vs, m["destination"]),
                        "runtime_fraction": {"default_value": pct}, "trace_sampled": False})
    return out


def _mirror_fraction(percentage: Json | None, percent: Any) -> Json | None:
    if percentage is not None:
        value = float(percentage.get("value", 0))
        return fraction(value) if value > 0 else None
    if percent is not None:
        return {"numerator": int(percent), "denominator": "HUNDRED"} if int(percent) > 0 else None
    return {"numerator": 100, "denominator": "HUNDRED"}


# --- headers ---------------------------------------------------------------------------------------

def _is_internal(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def header_ops(headers: Json) -> tuple[Json, Json]:
    """Istio Headers → ({add, remove, host_rewrite_literal}, {add, remove}) for requests and
    responses (pilot `translateAppendHeaders`): set overwrites, add appends, pseudo-headers and
    `host` are dropped, `:authority`/`host` in request set/add become the host rewrite (set wins)."""
    out = []
    for side in ("request", "response"):
        ops = headers.get(side) or {}
        adds = []
        host = None
        for verb, action in (("add", "APPEND_IF_EXISTS_OR_ADD"), ("set", "OVERWRITE_IF_EXISTS_OR_ADD")):
            for k, v in sorted((ops.get(verb) or {}).items()):
                if side == "request" and k.lower() in (":authority", "host"):
                    host = v                      # the later verb (set) wins
                    continue
                if not _is_internal(k):
                    adds.append({"header": {"key": k, "value": str(v)}, "append_action": action})
        # set first, then add, as pilot appends them
        adds.sort(key=lambda a: a["append_action"] != "OVERWRITE_IF_EXISTS_OR_ADD")
        result: Json = {"add": adds, "remove": [h for h in ops.get("remove") or [] if not _is_internal(h)]}
        if host is not None:
            result["host_rewrite_literal"] = host
        out.append(result)
    return out[0], out[1]


def _merge_ops(a: Json, b: Json) -> Json:
    out = {"add": [*a.get("add", []), *b.get("add", [])], "remove": [*a.get("remove", []), *b.get("remove", [])]}
    host = b.get("host_rewrite_literal", a.get("host_rewrite_literal"))
    if host is not None:
        out["host_rewrite_literal"] = host
    return out


def _set_header_ops(target: Json, side: str, ops: Json) -> None:
    if ops.get("add"):
        target[f"{side}_headers_to_add"] = ops["add"]
    if ops.get("remove"):
        target[f"{side}_headers_to_remove"] = ops["remove"]


# --- consistent hash -------------------------------------------------------------------------------

def hash_policies(ctx: Context, destinations: list[Json]) -> list[Json]:
    """The DestinationRule's consistentHash for the route's destinations, as route hash_policy
    (reference §4.1: the hash key lives on the route). Several destinations hash only when they
    all agree (pilot hashes weighted routes by a common policy)."""
    found = []
    for d in destinations:
        port = (d.get("port") or {}).get("number") or ctx.port
        rule = scope.destination_rule(ctx.mesh, d["host"], ctx.proxy.namespace)
        lb = scope.traffic_policy(rule, d.get("subset", ""), int(port)).get("loadBalancer") or {}
        found.append(_hash_policy(lb.get("consistentHash")))
    if not found or any(f != found[0] for f in found) or found[0] is None:
        return []
    return [found[0]]


def _hash_policy(ch: Json | None) -> Json | None:
    if not ch:
        return None
    if ch.get("httpHeaderName"):
        return {"header": {"header_name": ch["httpHeaderName"]}}
    if ch.get("httpCookie"):
        c = ch["httpCookie"]
        cookie: Json = {"name": c["name"]}
        if c.get("path"):
            cookie["path"] = c["path"]
        if c.get("ttl"):
            cookie["ttl"] = duration(c["ttl"])
        if c.get("attributes"):
            cookie["attributes"] = c["attributes"]
        return {"cookie": cookie}
    if ch.get("useSourceIp"):
        return {"connection_properties": {"source_ip": True}}
    if ch.get("httpQueryParameterName"):
        return {"query_parameter": {"name": ch["httpQueryParameterName"]}}
    return None
