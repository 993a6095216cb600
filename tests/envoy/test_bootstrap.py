"""The bootstrap generator is pure: same inputs, same config, checked against golden files.

Regenerate after an intended change with `make golden` (then review the diff)."""

import json
import os
from pathlib import Path

import pytest

from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap, filter_entry, xds
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.envoy.process import validate
from envoyext.scenario import from_dict

GOLDEN = Path(__file__).parent / "golden"
ADDRESSES = {"upstream": ("127.0.0.1", 18081), "auth": ("127.0.0.1", 18082)}
SCENARIO = {
    "config": {"header": "x-a", "limit": 3},
    "clusters": {"auth": {"status": 200}},
    "routes": [
        {"name": "alt", "match": {"prefix": "/alt", "headers": {"x-route": "alt"}}, "cluster": "auth",
         "metadata": {"team": "edge"}, "timeout_ms": 2500},
        {"name": "static", "match": {"path": "/static"}, "direct_response": {"status": 202, "body": "hi"}},
        {"name": "default", "match": {"prefix": "/"}},
    ],
    "cases": [{"name": "-"}],
}
CASES = {
    "lua": Artifact("lua", GOLDEN / "f.lua", "my-lua", lua_options={
        "stat_prefix": "mine", "clear_route_cache": False,
        "source_codes": {"alt": {"filename": str(GOLDEN / "noop.lua")}}}),
    "wasm": Artifact("wasm", Path("/filters/f.wasm"), "my-wasm", root_id="root", vm_id="vm",
                     failure_policy="fail_open"),
}


def config_for(kind: str, per_route=None) -> dict:
    doc = json.loads(json.dumps(SCENARIO))
    if per_route is not None:
        doc["routes"][0]["per_filter_config"] = per_route
    return bootstrap.build(CASES[kind], from_dict(doc, Path("golden.yaml")), ADDRESSES)


@pytest.mark.parametrize("kind,per_route", [("lua", {"name": "alt"}), ("wasm", None)])
def test_matches_golden(kind, per_route):
    got = json.dumps(config_for(kind, per_route), indent=1, sort_keys=True) + "\n"
    path = GOLDEN / f"bootstrap_{kind}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def test_wasm_configuration_is_json_string():
    hcm = xds.hcm_of(xds.listener_named(config_for("wasm"), TEST_PROXY.listener))
    plugin = hcm["http_filters"][0]["typed_config"]["config"]
    assert json.loads(plugin["configuration"]["value"]) == {"header": "x-a", "limit": 3}
    assert [f["name"] for f in hcm["http_filters"]] == ["my-wasm", "envoy.filters.http.router"]


def test_real_envoy_accepts_the_lua_bootstrap():
    validate(config_for("lua", {"name": "alt"}))


def test_lua_config_is_lua_data_on_the_first_line():
    from envoyext.artifact import lua_code, to_lua
    assert to_lua({"a": [1, True, None], "b": 'q"\n'}) == '{["a"] = {1, true, nil}, ["b"] = "q\\"\\n"}'
    assert to_lua("\x01" "23") == '"\\00123"'  # fixed-width escape: not "\123" ("{")
    code = lua_code("line1\nline2", {"k": 1})
    assert code.splitlines() == ['envoyext_config = {["k"] = 1}; line1', "line2"]  # line numbers unchanged


def test_lua_libraries_are_appended_after_the_users_lines():
    from envoyext.artifact import LUA_LIBRARY_DIR, lua_code
    code = lua_code("line1\nline2", {"k": 1}, ["pw_match"])
    lines = code.splitlines()
    assert lines[:3] == ['envoyext_config = {["k"] = 1}; line1', "line2", "pw_match = (function()"]
    assert code.endswith(f"\n{(LUA_LIBRARY_DIR / 'pw_match.lua').read_text()}\nend)()\n")
    assert lua_code("line1", None, ["pw_match"]).startswith("line1\npw_match = ")


def test_an_unknown_lua_library_is_named_with_the_available_ones():
    from envoyext.artifact import check_lua_libraries
    from envoyext.errors import UserError
    with pytest.raises(UserError) as e:
        check_lua_libraries(["pw_match", "json"], file=Path("filter.yaml"))
    assert e.value.one_line() == ("filter.yaml: lua_libraries[1]: unknown Lua library 'json' "
                                  "(fix: use one of: pw_match)")


def test_connect_route_full_metadata_and_no_default_script_are_envoy_config():
    """The scenario format's connect_matcher + upgrade_configs, full route Metadata, and a Lua
    filter without default_source_code, as Envoy 1.40 takes them (`--mode validate`)."""
    doc = {"routes": [
        {"name": "tunnel", "match": {"connect_matcher": {}}, "upgrade_configs": [{"upgrade_type": "CONNECT"}],
         "metadata": {"filter_metadata": {"envoy.filters.http.lua": {"a": 1}, "other": {"b": "x"}}},
         "per_filter_config": {"name": "alt"}},
        {"name": "short", "match": {"prefix": "/"}, "metadata": {"team": "edge"}}],
        "cases": [{"name": "-"}]}
    artifact = Artifact("lua", GOLDEN / "noop.lua", "my-lua", lua_options={
        "default_source_code": False, "source_codes": {"alt": {"filename": str(GOLDEN / "noop.lua")}}})
    config = bootstrap.build(artifact, from_dict(doc, Path("s.yaml")), ADDRESSES)
    hcm = xds.hcm_of(xds.listener_named(config, TEST_PROXY.listener))
    tunnel, short = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert tunnel["match"] == {"connect_matcher": {}}
    assert tunnel["route"]["upgrade_configs"] == [{"upgrade_type": "CONNECT"}]
    assert set(tunnel["metadata"]["filter_metadata"]) == {"envoy.filters.http.lua", "other"}
    assert short["metadata"] == {"filter_metadata": {"my-lua": {"team": "edge"}}}  # the short form
    lua = hcm["http_filters"][0]["typed_config"]
    assert "default_source_code" not in lua and set(lua["source_codes"]) == {"alt"}
    validate(config)


def test_the_proxy_identity_names_node_listener_stat_prefix_and_admin_port():
    gateway = ProxyIdentity(name="gw", node_id="router~10.0.0.1~gw.default~cluster.local", node_cluster="gw",
                            listener="gw_http", stat_prefix="gateway", admin_port=15000)
    config = bootstrap.build(CASES["wasm"], from_dict(json.loads(json.dumps(SCENARIO)), Path("s.yaml")), ADDRESSES,
                             identity=gateway)
    assert config["node"] == {"id": "router~10.0.0.1~gw.default~cluster.local", "cluster": "gw"}
    assert config["admin"]["address"]["socket_address"]["port_value"] == 15000
    assert xds.hcm_of(xds.listener_named(config, "gw_http"))["stat_prefix"] == "gateway"
    with pytest.raises(KeyError):
        xds.listener_named(config, TEST_PROXY.listener)


def test_a_route_turns_the_filter_off_with_the_shared_disabled_config():
    config = config_for("lua", filter_entry.disabled())
    routes = xds.hcm_of(xds.listener_named(config, TEST_PROXY.listener))["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["typed_per_filter_config"] == {"my-lua": filter_entry.disabled()}
    validate(config)
