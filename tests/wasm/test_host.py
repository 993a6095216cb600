"""The Wasm host through its public test API, against facts established on Envoy 1.40.

Expected values here were observed on the real Envoy with the same modules (see
test_differential.py, which re-checks the scenario-expressible ones on every run).
"""

from __future__ import annotations

import pytest

from envoyext.errors import EnvoyRejected
from envoyext.wasm.abi import WasmResult
from envoyext.wasm.api import WasmPlugin
from envoyext.wasm.shared import SharedState


@pytest.fixture
def probe(module):
    path = module("probe")

    def load(config=None, *, keep_startup_logs=False, **kw):
        kw.setdefault("name", "probe")
        p = WasmPlugin.load(path, config, **kw)
        if not keep_startup_logs:
            p.clear_logs()     # the on_configure lines of every thread's VM
        return p
    return load


def test_lifecycle_order_of_one_stream(probe):
    p = probe()
    p.call({"x-probe": "none"}, response_body=b"hello")
    assert p.logs() == ["request headers path=/ eos=1 cmd=none", "response headers status=200 eos=0",
                        "response body size=5 eos=0", "response body size=0 eos=1",
                        "on_log status=200 path=/ size=2", "on_done stream", "on_delete stream"]
    assert p.logs("debug") == ["on_done stream", "on_delete stream"]


def test_configure_reads_plugin_configuration_once_per_thread_vm(probe):
    p = probe({"a": 1}, keep_startup_logs=True)
    assert p.logs() == ['configure size=7 config={"a":1}'] * 2   # main thread + 1 worker (the default)


def test_header_mutations_reach_upstream(probe):
    p = probe()
    ex = p.request({"x-probe": "add", "x-replace": "old", "x-remove": "gone", "x-forwarded-proto": "http"})
    hs = ex.request_headers
    assert ("x-added", "1") in hs and ("x-replace", "new") in hs
    assert not any(k == "x-remove" for k, _ in hs)
    assert [v for k, v in hs if k == "x-multi"] == ["a", "b"]          # not an inline header
    assert ("x-forwarded-proto", "http,extra") in hs                   # inline: joined with ','
    assert "absent header=-1" in p.logs()                              # NotFound


def test_bad_arguments_answer_cpp_host_statuses(probe):
    p = probe()
    p.call({"x-probe": "bad"})
    logs = p.logs()
    for line in ["bad log=6", "bad level=2", "bad get_header key=6", "bad get_header out=6", "bad map type=2",
                 "bad add=6", "bad size=6", "bad buffer type=2", "bad time=6", "bad property=6", "bad shared=6",
                 "bad queue=6", "bad metric=2", "bad metric ptr=6", "bad local=6", "bad continue=2",
                 "bad effective=2", "bad log level=6", "bad pairs=6", "bad http_call token=6"]:
        assert line in logs


def test_misc_host_functions(probe):
    p = probe()
    p.call({"x-probe": "misc"})
    logs = p.log_lines
    msgs = [l.message for l in logs]
    for line in ["ffi unknown=1", "grpc no cluster=4", "done=1", "close upstream=2 continue upstream=12",
                 "log level=0", "time ok=1", "counter dec=2", "gauge inc=0 dec=0", "gauge=45",
                 "hist record=0 get=2 inc=2", "unknown metric=1", "vm config=0 plugin config=1 call body=1",
                 "set property=0", "get property=0 v1", "trailers map=2", "to stdout", "to stderr"]:
        assert line in msgs
    assert next(l.level for l in logs if l.message == "to stderr") == "error"
    assert next(l.level for l in logs if l.message == "to stdout") == "info"
    assert p.histogram("probe_hist") == [7]


def test_metrics_under_envoy_stat_names(probe):
    p = probe()
    for _ in range(3):
        p.call({"x-probe": "none"})
    assert p.metrics["probe_requests"] == 3
    assert p.stats["wasmcustom.probe_requests"] == 3
    assert p.stats["wasmcustom.probe_gauge"] == 42


def test_local_response_stops_the_chain_and_is_seen_by_on_response_headers(probe):
    p = probe()
    ex = p.call({"x-probe": "local"})
    r = ex.local_response
    assert (r.status, r.body, r.headers, r.details) == (403, b"nope", [("x-local", "1")], "denied_by_probe")
    assert "response headers status=403 eos=0" in p.logs()
    assert "response body size=4 eos=1" in p.logs()


def test_local_response_from_response_path_replaces_response(probe):
    p = probe()
    ex = p.call({"x-probe": "resp-local"})
    assert ex.local_response.status == 502 and ex.local_response.body == b"replaced"


def test_auth_callout_pauses_until_answered(probe):
    p = probe(clusters={"auth": {"status": 200}}, auto_answer=False)
    ex = p.request({"x-probe": "call"})
    assert ex.paused and len(p.http_calls) == 1
    call = p.http_calls[0]
    assert call.cluster == "auth" and (":path", "/check") in call.headers and call.body == b"ping"
    assert ("content-length", "4") in call.headers and call.timeout_ms == 5000
    p.answer(call, 200, {"x-a": "1"}, b"ok")
    assert not ex.paused and ex.request_headers_get("x-auth-status") == "200"
    assert "http_call_response root=1 headers=2 body=2 status=200" in p.logs()
    assert "effective=0 continue=0" in p.logs()


def test_auth_callout_denied_sends_local_reply(probe):
    p = probe(clusters={"auth": {"status": 403}}, auto_answer=False)
    ex = p.request({"x-probe": "call"})
    p.answer(p.http_calls[0], 403)
    assert ex.local_response.status == 401 and ex.local_response.body == b"unauthorized"


def test_failed_callout_reports_no_headers(probe):
    p = probe(clusters={"auth": {}}, auto_answer=False)
    ex = p.request({"x-probe": "call"})
    p.fail(p.http_calls[0])
    assert "http_call_response root=1 headers=0 body=0 status=" in p.logs()
    assert ex.local_response.status == 401


def test_callout_answered_by_cluster_automatically(probe):
    p = probe(clusters={"auth": {"status": 200, "body": "fine"}})
    ex = p.call({"x-probe": "call"})
    assert ex.request_headers_get("x-auth-status") == "200"
    assert p.env.received["auth"][0].path == "/check"


def test_callout_to_unknown_cluster_is_bad_argument(probe):
    p = probe()
    p.call({"x-probe": "call-nowait", "x-arg": "nope"})
    assert "http_call nope=2" in p.logs()


def test_body_buffering_and_rewrite(probe):
    p = probe()
    ex = p.request({"x-probe": "upper", ":method": "POST"}, b"hello")
    assert ex.request_body == b"HELLO"
    assert p.logs()[-2:] == ["request body size=5 eos=0", "request body size=5 eos=1"]


def test_trap_fails_closed_with_503_and_the_vm_stays_failed(probe):
    p = probe()
    ex = p.call({"x-probe": "trap"})
    assert ex.local_response.status == 503 and ex.local_response.details == "wasm_fail_stream"
    assert "unreachable" in p.failures[0] and "proxy_on_request_headers" in p.failures[0]
    assert p.call({"x-probe": "none"}).local_response.status == 503      # Envoy 1.40: no reload by default
    assert not any("Traceback" in f for f in p.failures)


def test_trap_fail_open_lets_traffic_through(probe):
    p = probe(fail_open=True)
    ex = p.call({"x-probe": "trap"})
    assert ex.local_response is None
    ex = p.call({"x-probe": "add"})
    assert ex.request_headers_get("x-added") is None                      # the filter is skipped


def test_reload_policy_gives_the_next_request_a_fresh_vm(probe):
    p = probe(failure_policy="reload")
    assert p.call({"x-probe": "trap"}).local_response.status == 503
    ex = p.call({"x-probe": "add"})
    assert ex.local_response is None and ex.request_headers_get("x-added") == "1"


def test_endless_loop_is_stopped_by_the_deadline(probe):
    p = probe(deadline_ms=200)
    ex = p.call({"x-probe": "loop"})
    assert ex.local_response.status == 503
    assert "deadline" in p.failures[0]


def test_memory_growth_is_capped(probe):
    p = probe(memory_limit=32 * 1024 * 1024)
    p.call({"x-probe": "grow"})
    failed = [m for m in p.logs() if m.startswith("malloc failed at")]
    assert failed and int(failed[0].split()[3]) < 32


def test_ticks_fire_in_every_thread_vm_on_the_virtual_clock(probe):
    p = probe({"tick": True})
    p.advance(999)
    assert "tick" not in p.logs()
    p.advance(1)
    assert p.logs().count("tick") == 2 and p.metrics["probe_ticks"] == 2
    p.advance(2000)
    assert p.metrics["probe_ticks"] == 6


def test_shared_data_and_queue(probe):
    p = probe(vm_id="v")
    p.call({"x-probe": "shared"})
    logs = p.logs()
    assert "shared get=1 value=" in logs and "shared set=0 again=0" in logs
    assert "resolve=0 absent=1" in logs and "enqueue=0 bad token=1" in logs and "dequeue bad token=1" in logs
    assert "queue ready same_token=1 dequeue=0 value=hello" in logs
    assert p.shared_data() == {b"k": b"b"}
    p.call({"x-probe": "shared"})
    assert "shared get=0 value=b" in p.logs()


def test_shared_data_is_shared_by_vm_id_across_plugins(probe):
    shared = SharedState()
    a = probe(vm_id="same", shared=shared)
    b = probe(vm_id="same", shared=shared)
    c = probe(vm_id="other", shared=shared)
    a.call({"x-probe": "shared"})
    b.call({"x-probe": "shared"})
    c.call({"x-probe": "shared"})
    assert "shared get=0 value=b" in b.logs()
    assert "shared get=1 value=" in c.logs()


def test_shared_data_cas():
    s = SharedState()
    assert s.set("v", b"k", b"1", 0) == WasmResult.Ok
    _, _, cas = s.get("v", b"k")
    assert s.set("v", b"k", b"2", cas + 1) == WasmResult.CasMismatch
    assert s.set("v", b"k", b"2", cas) == WasmResult.Ok
    assert s.get("v", b"k")[1] == b"2"


def test_properties_encodings(probe):
    p = probe(root_id="r", vm_id="v")
    paths = ("plugin_name,plugin_root_id,plugin_vm_id,request.path,source.port,xds.route_name,route_name,node,"
             "connection.mtls,request.size")
    p.call({"x-probe": "props", "x-arg": paths})
    logs = p.logs()
    assert "prop plugin_name = 0 70726f6265" in logs          # "probe"
    assert "prop plugin_root_id = 0 72" in logs and "prop plugin_vm_id = 0 76" in logs
    assert "prop request.path = 0 2f" in logs
    assert "prop source.port = 0 50c3000000000000" in logs    # 50000, int64 little-endian
    assert "prop xds.route_name = 0 64656661756c74" in logs    # "default"
    assert "prop route_name = 1 " in logs and "prop node = 1 " in logs
    assert "prop connection.mtls = 0 00" in logs and "prop request.size = 0 0000000000000000" in logs


def test_abi_v010_module(module):
    p = WasmPlugin.load(module("abi010"), "cfg-x", name="old")
    ex = p.call({"x-probe": "x"})
    assert p.logs() == ["cfg-x"] * 2 + ["abs=0/0"]           # missing header: Ok and "" in 0.1.0
    assert ex.request_headers_get("x-config") == "cfg-x"


def test_module_without_abi_marker_is_rejected_like_envoy(module):
    with pytest.raises(EnvoyRejected, match="Missing or unknown Proxy-Wasm ABI version"):
        WasmPlugin.load(module("noabi"))


def test_restricted_call_during_initialize_is_rejected_like_envoy(module):
    with pytest.raises(EnvoyRejected, match="restricted_callback"):
        WasmPlugin.load(module("restricted"))


def test_missing_import_is_rejected(tmp_path):
    import wasmtime
    wat = '(module (import "env" "proxy_nonexistent" (func)) (memory (export "memory") 1)' \
          ' (func (export "proxy_abi_version_0_2_1")) (func (export "malloc") (param i32) (result i32) i32.const 0))'
    path = tmp_path / "m.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    with pytest.raises(EnvoyRejected, match="missing import: env.proxy_nonexistent"):
        WasmPlugin.load(path)


def test_configure_returning_false_is_rejected(probe):
    with pytest.raises(EnvoyRejected, match="Failed to configure"):
        probe("reject")


def test_request_with_trailers_gets_body_then_trailers(probe):
    # Envoy 1.40 over HTTP/1 chunked: body (end_stream false), then trailers; no empty chunk.
    p = probe()
    p.request({"x-probe": "none", ":method": "POST"}, b"abc", trailers={"x-t": "1"})
    assert p.logs() == ["request headers path=/ eos=0 cmd=none", "request body size=3 eos=0",
                        "request trailers n=1"]


def test_a_stream_nothing_can_resume_is_one_user_error_naming_the_module(tmp_path):
    import wasmtime

    from envoyext.artifact import Artifact
    from envoyext.runners import emulated
    from envoyext.scenario import load
    wat = '(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))' \
          ' (func (export "malloc") (param i32) (result i32) i32.const 1024)' \
          ' (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 1))'
    path = tmp_path / "stall.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    (tmp_path / "s.yaml").write_text("cases: [{name: paused, request: {}}, {name: next, request: {}}]\n")
    stuck, after = emulated.run_scenario(Artifact("wasm", path, "stall"), load(tmp_path / "s.yaml"))
    # That case fails with the reason, one line; the run goes on to the next case.
    assert stuck.response is None and stuck.error.startswith(f"{path}: the filter paused the stream")
    assert "\n" not in stuck.error and after.case == "next"


def test_the_proxy_identity_names_the_node_and_the_connection_manager_stats(module, tmp_path):
    from envoyext.artifact import Artifact
    from envoyext.envoy.identity import ProxyIdentity
    from envoyext.runners import emulated
    from envoyext.scenario import load
    (tmp_path / "s.yaml").write_text(
        "cases: [{name: node, request: {headers: {x-probe: props, x-arg: 'xds.node.id,xds.node.cluster'}}}]\n")
    gateway = ProxyIdentity(name="gateway", node_id="gw-1", node_cluster="gateways", stat_prefix="gateway_http")
    [obs] = emulated.run_scenario(Artifact("wasm", module("probe"), "probe"), load(tmp_path / "s.yaml"),
                                  identity=gateway)
    logs = [line.message for line in obs.logs]
    assert f"prop xds.node.id = 0 {b'gw-1'.hex()}" in logs
    assert f"prop xds.node.cluster = 0 {b'gateways'.hex()}" in logs
    assert obs.stats["http.gateway_http.downstream_rq_total"] == 1
    assert not any(name.startswith("http.ingress_http.") for name in obs.stats)
    # What the observation says came from this proxy names it.
    assert obs.proxy == "gateway" and {line.proxy for line in obs.logs} == {"gateway"}
    assert [r.proxy for r in obs.upstream] == ["gateway"]
