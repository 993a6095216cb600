"""Proxy identity is a parameter: a live Envoy under other names (listener, stat prefix, node)
is started, waited for, probed and observed under those names."""

import json
from pathlib import Path

from envoyext.artifact import Artifact
from envoyext.envoy.identity import ProxyIdentity
from envoyext.runners import live
from envoyext.scenario import check, from_dict

GATEWAY = ProxyIdentity(name="gateway", node_id="router~127.0.0.1~gateway.edge~edge.svc.cluster.local",
                        node_cluster="gateway.edge", listener="edge_http_8080", stat_prefix="edge_gw",
                        log_level="warning")


def test_a_live_run_under_another_identity_passes_with_its_stat_prefix(tmp_path):
    script = tmp_path / "f.lua"
    script.write_text("function envoy_on_response(h) h:headers():add('x-t', '1') h:logWarn('seen') end\n")
    sc = from_dict({"cases": [{"name": "counted under the gateway's prefix", "expect": {
        "status": 200, "headers": {"x-t": "1"}, "logs_contain": "seen",
        "stats": {"http.edge_gw.downstream_rq_2xx": 1}}}]}, Path("gw.yaml"))
    [obs] = live.run_scenario(Artifact("lua", script, "t-lua"), sc, identity=GATEWAY)
    assert check(sc.cases[0], obs) == []
    assert not [name for name in obs.stats if name.startswith("http.ingress_http.")]
    # What the observation says came from this proxy names it.
    assert obs.proxy == "gateway" and {line.proxy for line in obs.logs} == {"gateway"}
    assert [r.proxy for r in obs.upstream] == ["gateway"]


def test_the_running_envoy_is_the_node_the_identity_names(tmp_path):
    script = tmp_path / "f.lua"
    script.write_text("function envoy_on_request(h) end\n")
    sc = from_dict({"cases": [{"name": "-"}]}, Path("gw.yaml"))
    with live.started(Artifact("lua", script, "t-lua"), sc, identity=GATEWAY) as (envoy, _):
        node = json.loads(envoy.admin.get("/server_info"))["node"]
        assert (node["id"], node["cluster"]) == (GATEWAY.node_id, GATEWAY.node_cluster)
        assert envoy.listener == envoy.admin.listener_address("edge_http_8080")


def test_at_log_level_runs_envoy_and_its_filters_at_that_level(tmp_path):
    """What a measurement runs: production's log level, not the tests' trace-level components."""
    from envoyext.envoy.identity import TEST_PROXY
    quiet = TEST_PROXY.at_log_level("warning")
    assert (quiet.log_level, quiet.component_log_level) == ("warning", "wasm:warning,lua:warning")
    assert quiet.listener == TEST_PROXY.listener and quiet.stat_prefix == TEST_PROXY.stat_prefix
    script = tmp_path / "f.lua"
    script.write_text("function envoy_on_request(h) h:logInfo('chatty') h:logWarn('kept') end\n")
    sc = from_dict({"cases": [{"name": "info dropped, warning kept", "expect": {
        "status": 200, "logs_contain": "kept", "logs_absent": "chatty"}}]}, Path("q.yaml"))
    [obs] = live.run_scenario(Artifact("lua", script, "t-lua"), sc, identity=quiet)
    assert check(sc.cases[0], obs) == []
