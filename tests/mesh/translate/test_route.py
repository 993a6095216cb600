"""Each VirtualService → route rule of reference §3, one at a time, each with a negative control."""

import pytest

from envoyext.mesh.model import MeshConfig
from envoyext.mesh.translate import route
from tests.mesh.translate.meshes import BOOKINFO, bookinfo, build, resources, service

REVIEWS = "reviews.default.svc.cluster.local"


def vs(http: str, *, hosts: str = "[reviews]", extra: str = "", name: str = "reviews", ns: str = "default") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: {hosts}
{extra}
  http:
{http}
"""


def routes_of(*docs: str, proxy: str = "productpage-v1-0", host: str = REVIEWS, port: int = 9080, **kw) -> list:
    """The routes of `host:port` in the sidecar's RouteConfiguration "port"."""
    mesh = bookinfo(None, *docs, **kw)
    configs = {rc["name"]: rc for rc in route.for_proxy(mesh, mesh.proxy(proxy))}
    vh = next(v for v in configs[str(port)]["virtual_hosts"] if v["name"] == f"{host}:{port}")
    return vh["routes"]


def one(http: str, **kw) -> dict:
    [r] = routes_of(vs(http, **kw))
    return r


# --- matches -----------------------------------------------------------------------------------

def test_uri_exact_prefix_regex_and_ignore_case():
    rs = routes_of(vs("""
  - match: [{uri: {exact: /a}}, {uri: {prefix: /b}, ignoreUriCase: true}, {uri: {regex: "/c.*"}}]
    route: [{destination: {host: reviews}}]"""))
    assert [r["match"] for r in rs] == [{"path": "/a", "case_sensitive": True},
                                         {"prefix": "/b", "case_sensitive": False},
                                         {"safe_regex": {"regex": "/c.*"}, "case_sensitive": True}]


def test_headers_sorted_present_and_without():
    r = one("""
  - match:
    - headers: {zeta: {exact: z}, alpha: {prefix: a}, mid: {regex: "m+"}, any: {}, star: {regex: "*"}}
      withoutHeaders: {beta: {exact: b}, gone: {}}
      method: {exact: GET}
      authority: {prefix: api}
      queryParams: {q: {exact: "1"}, p: {}}
    route: [{destination: {host: reviews}}]""")
    headers = r["match"]["headers"]
    assert [h["name"] for h in headers] == ["alpha", "any", "beta", "gone", "mid", "star", "zeta", ":method",
                                            ":authority"]
    by = {h["name"]: h for h in headers}
    assert by["alpha"] == {"name": "alpha", "string_match": {"prefix": "a"}}
    assert by["mid"]["string_match"] == {"safe_regex": {"regex": "m+"}}
    assert by["any"] == {"name": "any", "present_match": True}
    assert by["star"] == {"name": "star", "present_match": True}
    assert by["beta"] == {"name": "beta", "string_match": {"exact": "b"}, "treat_missing_header_as_empty": True,
                          "invert_match": True}
    assert by["gone"] == {"name": "gone", "present_match": True, "invert_match": True}  # no treat_missing
    assert by[":method"]["string_match"] == {"exact": "GET"}
    assert r["match"]["query_parameters"] == [{"name": "p", "present_match": True},
                                              {"name": "q", "string_match": {"exact": "1"}}]
    assert r["match"]["prefix"] == "/"


def test_generation_stops_at_the_first_catch_all():
    rs = routes_of(vs("""
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v3}}]"""))
    assert [r["route"]["cluster"].split("|")[2] for r in rs] == ["v2", "v1"]   # v3 never reached
    rs = routes_of(vs("""
  - route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v3}}]"""))
    assert len(rs) == 1


def test_matches_for_another_port_source_or_gateway_are_skipped():
    rs = routes_of(vs("""
  - match: [{port: 8000}, {sourceLabels: {app: ratings}}, {gateways: [bookinfo-gateway]}, {sourceNamespace: other},
            {sourceLabels: {app: productpage}, name: mine}]
    name: r
    route: [{destination: {host: reviews}}]"""))
    assert [r["name"] for r in rs] == ["r.mine"]   # only the match fitting this sidecar


def test_route_names_metadata_and_decorator():
    r = one("""
  - name: first
    match: [{uri: {prefix: /x}}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]""")
    assert r["name"] == "first"
    assert r["metadata"] == {"filter_metadata": {"istio": {
        "config": "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews"}}}
    assert r["decorator"] == {"operation": f"{REVIEWS}:9080/x*"}
    unnamed = one("""
  - route: [{destination: {host: reviews}, weight: 50}, {destination: {host: reviews, subset: v2}, weight: 50}]""")
    assert "name" not in unnamed
    assert unnamed["decorator"] == {"operation": "reviews:9080/*"}   # several clusters: the VS name


# --- destinations --------------------------------------------------------------------------------

def test_weighted_clusters_drop_weight_zero():
    r = one("""
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 70}
    - {destination: {host: reviews, subset: v2}, weight: 0}
    - {destination: {host: reviews, subset: v3}, weight: 30}""")
    assert r["route"]["weighted_clusters"] == {"clusters": [
        {"name": f"outbound|9080|v1|{REVIEWS}", "weight": 70}, {"name": f"outbound|9080|v3|{REVIEWS}", "weight": 30}]}
    r = one("""
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 100}
    - {destination: {host: reviews, subset: v2}, weight: 0}""")
    assert r["route"]["cluster"] == f"outbound|9080|v1|{REVIEWS}"
    assert "weighted_clusters" not in r["route"]


def test_destination_port_explicit_single_port_or_listener_port():
    extra = "apiVersion: v1\nkind: Service\nmetadata: {name: multi}\nspec:\n  selector: {app: multi}\n" \
            "  ports: [{name: http, port: 9080}, {name: http-alt, port: 9090}]\n"
    r = one("  - route: [{destination: {host: multi}}]")   # reviews listener 9080, multi has two ports
    assert r["route"]["cluster"] == "outbound|9080||multi.default.svc.cluster.local"
    rs = routes_of(extra, vs("  - route: [{destination: {host: ratings}}]"))
    assert rs[0]["route"]["cluster"] == "outbound|9080||ratings.default.svc.cluster.local"  # its only port
    r = one("  - route: [{destination: {host: ratings, port: {number: 7000}}}]")
    assert r["route"]["cluster"] == "outbound|7000||ratings.default.svc.cluster.local"


def test_short_hosts_resolve_in_the_virtual_services_namespace():
    # A VS named reviews in namespace `other` covers reviews.other, not default's reviews.
    rs = routes_of(vs("  - route: [{destination: {host: reviews, subset: v2}}]", ns="other"))
    assert rs[0]["name"] == "default"
    rs = routes_of(vs("  - route: [{destination: {host: reviews, subset: v2}}]", hosts=f"[{REVIEWS}]", ns="other"))
    assert rs[0]["route"]["cluster"] == "outbound|9080|v2|reviews.other.svc.cluster.local"


# --- actions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("redirect,expected", [
    ("{uri: /new}", {"path_redirect": "/new", "response_code": "MOVED_PERMANENTLY"}),
    ("{uri: /new, redirectCode: 302}", {"path_redirect": "/new", "response_code": "FOUND"}),
    ("{authority: b.com, scheme: https, port: 443}", {"host_redirect": "b.com", "scheme_redirect": "https",
                                                       "response_code": "MOVED_PERMANENTLY"}),
    ("{uri: /n, port: 8443, redirectCode: 308}", {"path_redirect": "/n", "port_redirect": 8443,
                                                  "response_code": "PERMANENT_REDIRECT"}),
    ("{uri: /n, derivePort: FROM_REQUEST_PORT}", {"path_redirect": "/n", "port_redirect": 9080,
                                                  "response_code": "MOVED_PERMANENTLY"}),
    ("{uri: /n, port: 80}", {"path_redirect": "/n", "response_code": "MOVED_PERMANENTLY"}),
])
def test_redirect(redirect, expected):
    r = one(f"  - redirect: {redirect}")
    assert r["redirect"] == expected
    assert "route" not in r


def test_redirect_prefix_rewrite_wins_over_uri():
    # prefixRewrite is newer than the shipped 1.30 CRD, so it is checked on the function itself
    ctx = route.Context(bookinfo(), bookinfo().proxy("productpage-v1"), 9080, gateway=None)
    assert route.translate_redirect(ctx, {"uri": "/new", "prefixRewrite": "/p", "redirectCode": 303}) == {
        "prefix_rewrite": "/p", "response_code": "SEE_OTHER"}


def test_redirect_with_an_unsupported_code_gives_no_route():
    assert routes_of(vs("  - redirect: {uri: /n, redirectCode: 399}")) == []


def test_direct_response():
    assert one('  - directResponse: {status: 418, body: {string: "teapot"}}')["direct_response"] == {
        "status": 418, "body": {"inline_string": "teapot"}}
    assert one("  - directResponse: {status: 204}")["direct_response"] == {"status": 204}


def test_rewrite_uri_regex_authority():
    r = one("""
  - rewrite: {uri: /v2/, authority: new.host}
    route: [{destination: {host: reviews}}]""")
    assert r["route"]["prefix_rewrite"] == "/v2/"
    assert r["route"]["host_rewrite_literal"] == "new.host"
    r = one("""
  - rewrite: {uriRegexRewrite: {match: "^/a/(.*)", rewrite: "/\\\\1"}}
    route: [{destination: {host: reviews}}]""")
    assert r["route"]["regex_rewrite"] == {"pattern": {"regex": "^/a/(.*)"}, "substitution": "/\\1"}
    assert "prefix_rewrite" not in r["route"] and "host_rewrite_literal" not in r["route"]


def test_timeout_defaults_to_zero():
    assert one("  - route: [{destination: {host: reviews}}]")["route"]["timeout"] == "0s"
    r = one("  - timeout: 0.5s\n    route: [{destination: {host: reviews}}]")
    assert r["route"]["timeout"] == "0.5s"
    assert r["route"]["max_grpc_timeout"] == "0.5s"


# --- retries -------------------------------------------------------------------------------------

def test_default_retry_policy():
    assert one("  - route: [{destination: {host: reviews}}]")["route"]["retry_policy"] == {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2, "retry_host_predicate": [route.previous_hosts()], "host_selection_retry_max_attempts": 5}


def test_retries_zero_attempts_means_none():
    assert "retry_policy" not in one("  - retries: {attempts: 0}\n    route: [{destination: {host: reviews}}]")["route"]


def test_retries_attempts_retry_on_codes_per_try_timeout():
    r = one("""
  - retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,503,gateway-error", retryRemoteLocalities: true,
              retryIgnorePreviousHosts: false, backoff: 25ms}
    route: [{destination: {host: reviews}}]""")
    p = r["route"]["retry_policy"]
    assert p["num_retries"] == 3
    assert p["retry_on"] == "5xx,gateway-error,retriable-status-codes"
    assert p["retriable_status_codes"] == [503]
    assert p["per_try_timeout"] == "2s"
    assert p["retry_priority"]["typed_config"]["update_frequency"] == 2
    assert "retry_host_predicate" not in p
    assert p["retry_back_off"] == {"base_interval": "0.025s"}
    plain = one('  - retries: {attempts: 1, retryOn: "connect-failure"}\n    route: [{destination: {host: reviews}}]')
    assert plain["route"]["retry_policy"]["retry_on"] == "connect-failure"        # no codes: nothing appended
    assert "retriable_status_codes" not in plain["route"]["retry_policy"]


def test_consistent_hash_from_the_destination_rule():
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-hash}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"""
    # Bookinfo's own rule for reviews (older, so it would win) is left out here
    mesh = build(resources(BOOKINFO / "platform.yaml", dr))
    rc = next(c for c in route.for_proxy(mesh, mesh.proxy("productpage-v1")) if c["name"] == "9080")
    [r] = next(v for v in rc["virtual_hosts"] if v["name"] == f"{REVIEWS}:9080")["routes"]  # default route
    assert r["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert "retry_host_predicate" not in r["route"]["retry_policy"]
    cookie = dr.replace("{httpHeaderName: x-user}", "{httpCookie: {name: u, ttl: 0s}}").replace("reviews-hash", "c")
    mesh = build(resources(BOOKINFO / "platform.yaml", cookie, vs("  - route: [{destination: {host: reviews}}]")))
    rc = next(c for c in route.for_proxy(mesh, mesh.proxy("productpage-v1")) if c["name"] == "9080")
    r = next(v for v in rc["virtual_hosts"] if v["name"] == f"{REVIEWS}:9080")["routes"][0]
    assert r["route"]["hash_policy"] == [{"cookie": {"name": "u", "ttl": "0s"}}]
    # negative control: Bookinfo's own rules have no consistentHash
    [plain] = routes_of()
    assert "hash_policy" not in plain["route"]


# --- fault, mirror, cors ---------------------------------------------------------------------------

def test_fault_delay_and_abort_percentages():
    r = one("""
  - fault:
      delay: {fixedDelay: 7s, percentage: {value: 100.0}}
      abort: {httpStatus: 500, percentage: {value: 50.5}}
    route: [{destination: {host: reviews}}]""")
    f = r["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert f["@type"] == route.FAULT
    assert f["delay"] == {"fixed_delay": "7s", "percentage": {"numerator": 1000000, "denominator": "MILLION"}}
    assert f["abort"] == {"http_status": 500, "percentage": {"numerator": 505000, "denominator": "MILLION"}}
    grpc = one("  - fault: {abort: {grpcStatus: UNAVAILABLE}}\n    route: [{destination: {host: reviews}}]")
    assert grpc["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"] == {"grpc_status": 14}
    # a delay with no percentage is no delay; with nothing valid left there is no per-filter config
    none = one("  - fault: {delay: {fixedDelay: 1s}}\n    route: [{destination: {host: reviews}}]")
    assert "typed_per_filter_config" not in none


def test_mirror_percentages():
    r = one("""
  - mirror: {host: reviews, subset: v3}
    mirrorPercentage: {value: 50.0}
    mirrors: [{destination: {host: ratings}, percentage: {value: 0}}, {destination: {host: details}}]
    route: [{destination: {host: reviews}}]""")
    assert r["route"]["request_mirror_policies"] == [
        {"cluster": f"outbound|9080|v3|{REVIEWS}", "runtime_fraction": {
            "default_value": {"numerator": 500000, "denominator": "MILLION"}}, "trace_sampled": False},
        {"cluster": "outbound|9080||details.default.svc.cluster.local", "runtime_fraction": {
            "default_value": {"numerator": 100, "denominator": "HUNDRED"}}, "trace_sampled": False}]
    zero = one("  - mirror: {host: reviews}\n    mirrorPercentage: {value: 0}\n"
               "    route: [{destination: {host: reviews}}]")
    assert "request_mirror_policies" not in zero["route"]


def test_cors_policy():
    r = one("""
  - corsPolicy:
      allowOrigins: [{exact: "https://a.com"}, {regex: ".*b.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b, x-c]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: reviews}}]""")
    assert r["typed_per_filter_config"]["envoy.filters.http.cors"] == {
        "@type": route.CORS_POLICY,
        "allow_origin_string_match": [{"exact": "https://a.com"}, {"safe_regex": {"regex": ".*b.com"}}],
        "allow_methods": "GET,POST", "allow_headers": "x-a", "expose_headers": "x-b,x-c", "max_age": "86400",
        "allow_credentials": True, "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "forward_not_matching_preflights": True}
    ignore = one("  - corsPolicy: {unmatchedPreflights: IGNORE}\n    route: [{destination: {host: reviews}}]")
    assert ignore["typed_per_filter_config"]["envoy.filters.http.cors"]["forward_not_matching_preflights"] is False


# --- headers -------------------------------------------------------------------------------------

def test_header_operations_route_and_destination():
    r = one("""
  - headers:
      request:
        set: {x-set: "1", ":path": /no, host: a.com}
        add: {x-add: "2", ":authority": b.com}
        remove: [x-rm, host]
      response: {set: {x-r: "3"}, remove: [server]}
    route:
    - destination: {host: reviews}
      headers: {request: {add: {x-dest: d}}, response: {remove: [x-gone]}}""")
    assert r["request_headers_to_add"] == [
        {"header": {"key": "x-set", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-add", "value": "2"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-dest", "value": "d"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}]
    assert r["request_headers_to_remove"] == ["x-rm"]
    assert r["response_headers_to_add"] == [
        {"header": {"key": "x-r", "value": "3"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert r["response_headers_to_remove"] == ["server", "x-gone"]
    assert r["route"]["host_rewrite_literal"] == "a.com"       # set beats add; pseudo-headers dropped


def test_weighted_destination_headers_stay_on_the_cluster_weight():
    r = one("""
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50, headers: {request: {set: {x-v: "1"}}}}
    - {destination: {host: reviews, subset: v2}, weight: 50}""")
    cw = r["route"]["weighted_clusters"]["clusters"]
    assert cw[0]["request_headers_to_add"] == [{"header": {"key": "x-v", "value": "1"},
                                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert "request_headers_to_add" not in cw[1] and "request_headers_to_add" not in r


# --- binding, scope, defaults --------------------------------------------------------------------

def test_gateway_bound_virtual_service_does_not_apply_to_sidecars():
    gw_only = vs("  - route: [{destination: {host: reviews, subset: v2}}]", extra="  gateways: [bookinfo-gateway]")
    assert routes_of(gw_only)[0]["name"] == "default"
    both = vs("  - route: [{destination: {host: reviews, subset: v2}}]", extra="  gateways: [bookinfo-gateway, mesh]")
    assert routes_of(both)[0]["route"]["cluster"] == f"outbound|9080|v2|{REVIEWS}"


def test_export_to_limits_visibility():
    private = vs("  - route: [{destination: {host: reviews, subset: v2}}]", extra='  exportTo: ["."]', ns="other",
                 hosts=f"[{REVIEWS}]")
    assert routes_of(private)[0]["name"] == "default"
    public = private.replace('exportTo: ["."]', 'exportTo: ["*"]')
    assert routes_of(public)[0]["route"]["cluster"].startswith("outbound|9080|v2|reviews.other")


def test_default_route_and_domains():
    [r] = routes_of()
    assert r["name"] == "default" and r["match"] == {"prefix": "/"}
    assert r["route"]["cluster"] == f"outbound|9080||{REVIEWS}"
    mesh = bookinfo()
    rc = next(c for c in route.for_proxy(mesh, mesh.proxy("productpage-v1")) if c["name"] == "9080")
    vh = next(v for v in rc["virtual_hosts"] if v["name"] == f"{REVIEWS}:9080")
    assert vh["domains"][:4] == [REVIEWS, f"{REVIEWS}:9080", "reviews", "reviews:9080"]
    assert rc["virtual_hosts"][-1]["name"] == "allow_any"
    assert rc["virtual_hosts"][-1]["routes"][0]["route"]["cluster"] == "PassthroughCluster"


def test_short_names_only_for_proxies_in_the_services_namespace():
    other = service("reviews", namespace="other", vip="127.67.9.9")
    assert route.sidecar_domains(other, 9080, bookinfo().proxy("productpage-v1"))[:4] == [
        "reviews.other.svc.cluster.local", "reviews.other.svc.cluster.local:9080", "reviews.other",
        "reviews.other:9080"]


def test_registry_only_blocks_unknown_hosts():
    mesh = bookinfo(None, config=MeshConfig(outbound_traffic_policy="REGISTRY_ONLY"))
    rc = route.for_proxy(mesh, mesh.proxy("productpage-v1"))[-1]
    assert rc["virtual_hosts"][-1] == {"name": "block_all", "domains": ["*"], "routes": [
        {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}],
        "include_request_attempt_count": True}


# --- gateway -------------------------------------------------------------------------------------

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {hosts: ["*/bookinfo.example.com", "*.example.com", "other/x.com"], port: {number: 80, name: http, protocol: HTTP}}
  - {hosts: ["*"], port: {number: 443, name: https, protocol: HTTPS}}
"""


def gateway_routes(*docs: str) -> dict:
    mesh = build(resources(BOOKINFO / "platform.yaml", *docs))
    return {rc["name"]: rc for rc in route.for_proxy(mesh, mesh.proxy("istio-ingressgateway-0"))}


def test_gateway_virtual_hosts_and_domains():
    bound = vs("  - route: [{destination: {host: reviews}}]", hosts='["bookinfo.example.com", "*.example.com", x.com]',
               extra="  gateways: [gw]")
    rcs = gateway_routes(GATEWAY, bound)
    assert list(rcs) == ["http.8080"]   # port 80 of the gateway Service: its targetPort; HTTPS waits
    hosts = {v["name"]: v["domains"] for v in rcs["http.8080"]["virtual_hosts"]}
    assert hosts == {"bookinfo.example.com:80": ["bookinfo.example.com", "bookinfo.example.com:*"],
                     "*.example.com:80": ["*.example.com", "*.example.com:80"]}   # x.com: server wants ns other
    [r] = rcs["http.8080"]["virtual_hosts"][0]["routes"]
    assert r["route"]["cluster"] == f"outbound|9080||{REVIEWS}"


def test_gateway_without_bound_virtual_services_answers_404():
    sidecar_vs = vs("  - route: [{destination: {host: reviews}}]", hosts='["bookinfo.example.com"]')
    [vh] = gateway_routes(GATEWAY, sidecar_vs)["http.8080"]["virtual_hosts"]
    assert vh["name"] == "blackhole:80" and vh["routes"][0]["direct_response"] == {"status": 404}


def test_gateway_domains_helper():
    assert route.gateway_domains("*", 8080) == ["*"]
    assert route.gateway_domains("a.com", 8080) == ["a.com", "a.com:*"]
    assert route.gateway_domains("*.a.com", 8080) == ["*.a.com", "*.a.com:8080"]


def test_jwt_claim_matches_read_dynamic_metadata():
    r = one("""
  - match: [{headers: {"@request.auth.claims.group": {exact: admin}, "@request.auth.claims[a][b]": {}, x: {exact: y}}}]
    route: [{destination: {host: reviews}}]""")
    assert r["match"]["dynamic_metadata"] == [
        {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, {"key": "group"}],
         "value": {"string_match": {"exact": "admin"}}},
        {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, {"key": "a"}, {"key": "b"}],
         "value": {"present_match": True}}]
    assert [h["name"] for h in r["match"]["headers"]] == ["x"]     # claims are not headers


def test_durations_are_written_as_envoy_reads_them():
    assert [route.duration(v) for v in ("10ms", "1m", "1h30m", "0.5s", "7s", 3)] == [
        "0.01s", "60s", "5400s", "0.5s", "7s", "3s"]
    r = one("  - timeout: 1m\n    retries: {attempts: 1, perTryTimeout: 250ms}\n"
            "    route: [{destination: {host: reviews}}]")
    assert (r["route"]["timeout"], r["route"]["retry_policy"]["per_try_timeout"]) == ("60s", "0.25s")
