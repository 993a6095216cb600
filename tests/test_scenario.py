"""The scenario format, the checker and the comparer: pure, no Envoy."""

from pathlib import Path

import pytest

from envoyext import scenario as S
from envoyext.envoy.identity import TEST_PROXY
from envoyext.errors import UserError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_loads_defaults(tmp_path):
    sc = S.load(write(tmp_path, "cases: [{name: a, request: {headers: {x-a: [1, 2]}}}]"), default_config={"k": 1})
    assert sc.config == {"k": 1}
    assert sc.cases[0].request.headers == [("x-a", "1"), ("x-a", "2")]
    assert [r.cluster for r in sc.routes] == ["upstream"]


def test_unknown_field_names_file_and_field(tmp_path):
    p = write(tmp_path, "cases:\n  - name: a\n    expect: {stauts: 200}\n")
    with pytest.raises(UserError) as e:
        S.load(p)
    line = e.value.one_line()
    assert str(p) in line and "cases[0].expect.stauts" in line and "unknown field" in line
    assert "allowed:" in line and "\n" not in line


def test_wrong_type_and_yaml_syntax(tmp_path):
    with pytest.raises(UserError, match=r"cases\[0\].repeat"):
        S.load(write(tmp_path, "cases: [{name: a, repeat: many}]"))
    with pytest.raises(UserError, match=r"s.yaml:\d+: YAML syntax error"):
        S.load(write(tmp_path, "cases:\n  - name: a\n   bad: [x\n"))


def test_route_to_unknown_cluster(tmp_path):
    with pytest.raises(UserError, match=r"routes\[0\].cluster.*unknown cluster 'auth'"):
        S.load(write(tmp_path, "routes: [{match: {prefix: /}, cluster: auth}]\ncases: [{name: a}]"))


def obs(**kw):
    base = dict(case="a", runner="t", response=S.Response(200, [("x-a", "1"), ("date", "x")], b"hello"))
    base.update(kw)
    return S.Observation(**base)


def case(expect):
    return S.Case("a", S.Request(), expect)


def test_check_passes_and_fails_precisely():
    o = obs(upstream=[S.Received("GET", "/p", [("x-up", "1")])],
            logs=[S.LogLine("info", "hello world")], stats={"c": 2})
    assert S.check(case({"status": 200, "headers": {"x-a": "1"}, "body": "hello",
                         "upstream": {"called": True, "path": "/p", "headers": {"x-up": 1}},
                         "logs_contain": "world", "stats": {"c": 2}}), o) == []
    fails = S.check(case({"status": 201, "headers_absent": ["x-a"], "body_contains": "nope",
                          "upstream": {"count": 2}, "logs_absent": "hello", "stats": {"c": 1}}), o)
    assert [m.where for m in fails] == ["status", "headers.x-a", "body_contains", "upstream.count",
                                        "logs_absent", "stats.c"]


def test_stat_ranges_and_header_parts():
    xfcc = "By=spiffe://cluster.local/ns/default/sa/r;Hash=ab12;Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/p"
    o = obs(upstream=[S.Received("GET", "/p", [("x-forwarded-client-cert", xfcc)])], stats={"c": 3})
    assert S.check(case({"stats": {"c": {"min": 2, "max": 3}, "d": {"max": 0}},
                         "upstream": {"headers_contain": {"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/p"}}}),
                   o) == []
    wrong = {"x-forwarded-client-cert": "URI=spiffe://x", "x-none": "a"}
    fails = S.check(case({"stats": {"c": {"min": 4}, "d": {"min": 1}}, "upstream": {"headers_contain": wrong}}), o)
    assert [m.where for m in fails] == ["upstream.headers_contain.x-forwarded-client-cert",
                                        "upstream.headers_contain.x-none", "stats.c", "stats.d"]


def test_check_uncalled_upstream_and_reset_stream():
    assert [m.where for m in S.check(case({"upstream": {"headers": {"x": "1"}}}), obs())] == ["upstream.called"]
    assert S.check(case({"status": 200}), obs(response=None))[0].where == "response"


def test_compare_ignores_volatile_headers_and_echoed_request_ids():
    a = obs(response=S.Response(200, [("date", "1"), ("x-request-id", "a")],
                                b'{"headers": {"x-request-id": "a", "x": "1"}}'))
    b = obs(response=S.Response(200, [("date", "2"), ("x-request-id", "b")],
                                b'{"headers": {"x-request-id": "b", "x": "1"}}'))
    assert S.compare(a, b) == []
    c = obs(response=S.Response(200, [("date", "2")], b'{"headers": {"x": "2"}}'))
    assert {m.where for m in S.compare(a, c)} == {"body"}


def test_compare_stats_only_those_the_first_reports():
    assert S.compare(obs(stats={"mine": 1}), obs(stats={"mine": 1, "envoy.other": 9})) == []
    assert S.compare(obs(stats={"mine": 1}), obs(stats={"mine": 2}))[0].where == "stats.mine"


def test_expectation_on_undeclared_cluster(tmp_path):
    with pytest.raises(UserError, match=r"cases\[0\].expect.clusters.auth.*undeclared cluster 'auth'"):
        S.load(write(tmp_path, "cases: [{name: a, expect: {clusters: {auth: {called: true}}}}]"))


def test_duplicate_case_names_name_both_cases(tmp_path):
    with pytest.raises(UserError, match=r"cases\[2\].name: case name 'a' is already used by cases\[0\]"):
        S.load(write(tmp_path, "cases: [{name: a}, {name: b}, {name: a}]"))


def test_mask_replaces_per_request_values_only():
    line = ("id 6f8e1890-bfe0-46c8-80f3-da02d01cbd02 at Sat, 05 Dec 2026 12:13:47 GMT from 127.0.0.1:43567 "
            "([::1]:8080) t=2026-12-05T12:13:47.123Z {\"x-envoy-upstream-service-time\": \"3\"}")
    assert S.mask(line) == ("id <uuid> at <date> from 127.0.0.1:<port> ([::1]:<port>) t=<timestamp> "
                            "{\"x-envoy-upstream-service-time\": \"<ms>\"}")
    assert S.mask("10.127.0.0.1:5 v1.2.3 port 8080 x-count: 3") == "10.127.0.0.1:5 v1.2.3 port 8080 x-count: 3"


def test_compare_masks_logs_bodies_and_header_values_everywhere():
    def seen(rid: str, port: int):
        return obs(response=S.Response(200, [("x-seen", rid)], f"id={rid} peer=127.0.0.1:{port}".encode()),
                   upstream=[S.Received("GET", f"/?id={rid}", [("x-id", rid)], rid.encode())],
                   logs=[S.LogLine("info", f"request {rid} from 127.0.0.1:{port}")])
    a = seen("6f8e1890-bfe0-46c8-80f3-da02d01cbd02", 50000)
    b = seen("2b320c73-f24b-495e-83cf-64493eada356", 41234)
    assert S.compare(a, b) == []


def test_compare_still_finds_real_differences_and_shows_them_masked():
    """Negative control: a difference that is not a per-request value still disagrees."""
    a = obs(logs=[S.LogLine("info", "request 6f8e1890-bfe0-46c8-80f3-da02d01cbd02 allowed")],
            response=S.Response(200, [], b"id=6f8e1890-bfe0-46c8-80f3-da02d01cbd02 ok"))
    b = obs(logs=[S.LogLine("info", "request 2b320c73-f24b-495e-83cf-64493eada356 denied")],
            response=S.Response(200, [], b"id=2b320c73-f24b-495e-83cf-64493eada356 no"))
    diff = {m.where: m for m in S.compare(a, b)}
    assert set(diff) == {"logs", "body"}
    assert diff["logs"].expected == [("info", "request <uuid> allowed")]
    assert diff["logs"].actual == [("info", "request <uuid> denied")]
    assert (diff["body"].expected, diff["body"].actual) == ("id=<uuid> ok", "id=<uuid> no")


def test_filter_errors_are_error_lines_faults_or_the_lua_error_counter():
    assert S.filter_errors(obs(logs=[S.LogLine("info", "fine"), S.LogLine("warn", "careful")])) == []
    assert S.filter_errors(obs(logs=[S.LogLine("error", "boom")])) == ["error: boom"]
    trap = "Function: proxy_on_request_headers failed: error while executing\n  0: 0xc09\n\nCaused by:\n  wasm trap: x"
    assert S.filter_errors(obs(faults=[trap])) == [
        "Wasm VM failed: Function: proxy_on_request_headers failed: error while executing ... wasm trap: x"]
    assert S.filter_errors(obs(stats={"http.ingress_http.lua.errors": 1})) == ["http.ingress_http.lua.errors +1"]
    assert S.filter_errors(obs(stats={"http.ingress_http.lua.executions": 1, "x.errors": 1})) == []


def mesh_obs(**kw):
    """A request through a gateway to a sidecar (a mesh case): the gateway is the client's proxy."""
    base = dict(proxy="gateway", stats={"gw.requests": 1}, other_stats={"sidecar": {"sc.requests": 1}},
                logs=[S.LogLine("info", "routed", proxy="gateway"), S.LogLine("info", "authorized", proxy="sidecar")],
                upstream=[S.Received("GET", "/p", [("x-up", "1")], proxy="sidecar")])
    base.update(kw)
    return obs(**base)


def test_check_with_two_proxies_reads_every_proxys_logs_and_the_client_proxys_stats():
    o = mesh_obs()
    assert S.check(case({"logs_contain": ["routed", "authorized"], "stats": {"gw.requests": 1},
                         "upstream": {"path": "/p"}}), o) == []
    # The sidecar's counter is not the gateway's: a single-proxy expectation reads the client's proxy.
    fails = S.check(case({"stats": {"sc.requests": 1}, "logs_absent": "authorized"}), o)
    assert [(m.where, m.actual) for m in fails] == [("logs_absent", ["sidecar: authorized"]), ("stats.sc.requests", 0)]
    assert o.stats_of("sidecar") == {"sc.requests": 1} and o.stats_of("nowhere") == {}


def test_compare_with_two_proxies_holds_each_proxy_to_its_own_logs_stats_and_requests():
    assert S.compare(mesh_obs(), mesh_obs()) == []
    both_on_gateway = [S.LogLine("info", "routed", proxy="gateway"), S.LogLine("info", "authorized", proxy="gateway")]
    moved = mesh_obs(logs=both_on_gateway, other_stats={"sidecar": {"sc.requests": 2}},
                     upstream=[S.Received("GET", "/p", [("x-up", "1")], proxy="gateway")])
    diff = {m.where: m for m in S.compare(mesh_obs(), moved)}
    assert set(diff) == {"upstream.proxy", "logs", "proxies.sidecar.logs", "proxies.sidecar.stats.sc.requests"}
    assert (diff["proxies.sidecar.logs"].expected, diff["proxies.sidecar.logs"].actual) == (
        [("info", "authorized")], [])
    assert S.compare(mesh_obs(), mesh_obs(proxy="sidecar"))[0].where == "proxy"


def test_a_filter_error_on_another_proxy_names_that_proxy():
    o = mesh_obs(logs=[S.LogLine("error", "boom", proxy="sidecar")])
    assert S.filter_errors(o) == ["sidecar error: boom"]
    assert o.to_json()["logs"] == ["sidecar error: boom"] and o.to_json()["proxy"] == "gateway"
    lua = mesh_obs(other_stats={"sidecar": {"http.inbound.lua.errors": 1}}, logs=[])
    assert S.filter_errors(lua) == ["proxies.sidecar.http.inbound.lua.errors +1"]


def test_a_single_proxy_is_todays_envoyext_proxy():
    o = obs(logs=[S.LogLine("info", "x")], upstream=[S.Received("GET", "/", [])])
    assert o.proxy == o.logs[0].proxy == o.upstream[0].proxy == TEST_PROXY.name == "envoyext"
    assert o.to_json()["logs"] == ["info: x"] and o.stats_by_proxy() == {"envoyext": {}}
