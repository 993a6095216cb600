"""MeshRuntime with real Envoys and stand-in apps on loopback, driven by a small hand-made
translator (the real one is injected the same way): a gateway, productpage calling reviews
through its sidecar, tracing to the runtime's Zipkin collector."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from envoyext.errors import UserError
from envoyext.mesh import zipkin
from envoyext.mesh.model import (
    AddressPlan,
    Endpoint,
    Mesh,
    MeshConfig,
    Proxy,
    Resource,
    Service,
    ServicePort,
    Workload,
)
from envoyext.mesh.runtime import MeshRuntime, free_plan, readdress
from envoyext.mesh.translate import ProxyConfig

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
ZIPKIN = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"


# --- a small mesh and a hand-made translator ---------------------------------------------------
def small_mesh(plan: AddressPlan, suffix: str = "", direct_reviews: bool = False, bad: bool = False) -> Mesh:
    def workload(i: int, pod: str, labels: dict[str, str], ports: tuple[int, ...], ns: str = "default",
                 gateway: bool = False) -> Workload:
        return Workload(pod + suffix, pod.rsplit("-", 1)[0], ns, labels, "default", ports, plan.pod_ip(i),
                        plan.app_address(i), plan.capture_address(i), gateway)
    gw = workload(0, "istio-ingressgateway-0", {"istio": "ingressgateway", "app": "istio-ingressgateway"},
                  (8080,), "istio-system", gateway=True)
    pp = workload(1, "productpage-v1-0", {"app": "productpage", "version": "v1"}, (9080,))
    rv = workload(2, "reviews-v1-0", {"app": "reviews", "version": "v1"}, (9080,))
    services = [Service(f"{n}.default.svc.cluster.local", n, "default", (ServicePort("http", 9080, 9080, "HTTP"),),
                        {"app": n}, plan.vip(i)) for i, n in enumerate(["productpage", "reviews"])]
    vs = [Resource("VirtualService", "networking.istio.io/v1", "bad" if bad else "reviews", "default", {}, {},
                   "vs.yaml", 0)]
    return Mesh(MeshConfig(), services, [gw, pp, rv], [Proxy("router", gw), Proxy("sidecar", pp),
                                                       Proxy("sidecar", rv)],
                virtual_services=vs if direct_reviews or bad else [], plan=plan)


def _hcm(stat_prefix: str, *, rds: str | None = None, route_config: dict | None = None) -> dict:
    hcm: dict = {"@type": HCM, "stat_prefix": stat_prefix,
                 "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
                 "tracing": {"provider": {"name": "envoy.tracers.zipkin", "typed_config": {
                     "@type": ZIPKIN, "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
                     "collector_endpoint_version": "HTTP_JSON"}}}}
    if rds:
        hcm["rds"] = {"route_config_name": rds, "config_source": {
            "path_config_source": {"path": f"xds/rds/{rds}.yaml"}, "resource_api_version": "V3"}}
    else:
        hcm["route_config"] = route_config
    return hcm


def _listener(name: str, host: str, port: int, hcm: dict) -> dict:
    return {"name": name, "address": {"socket_address": {"address": host, "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def _outbound(mesh: Mesh, source_ip: str) -> tuple[list[dict], list[dict]]:
    clusters, endpoints = [], []
    for s in mesh.services:
        name = f"outbound|9080||{s.hostname}"
        clusters.append({"name": name, "type": "EDS", "connect_timeout": "1s",
                         "upstream_bind_config": {"source_address": {"address": source_ip, "port_value": 0}},
                         "eds_cluster_config": {"eds_config": {
                             "path_config_source": {"path": f"xds/eds/{name}.yaml"}, "resource_api_version": "V3"}}})
        endpoints.append({"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}}}
            for e in mesh.endpoints(s, s.ports[0])]}]})
    return clusters, endpoints


def hand_translate(mesh: Mesh) -> dict[str, ProxyConfig]:
    out = {}
    for proxy in mesh.proxies:
        w = proxy.workload
        clusters, endpoints = _outbound(mesh, w.ip)
        if proxy.kind == "router":
            routes = [{"name": "http.8080", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"},
                 "route": {"cluster": "outbound|9080||productpage.default.svc.cluster.local"}}]}]}]
            listeners = [_listener("0.0.0.0_8080", w.ip, 8080, _hcm("outbound_0.0.0.0_8080", rds="http.8080"))]
        else:
            def action(s: Service) -> dict:
                if s.name == "reviews" and mesh.virtual_services:
                    status = 99 if mesh.virtual_services[0].name == "bad" else 418  # 99: Envoy refuses it
                    return {"direct_response": {"status": status, "body": {"inline_string": "from apply"}}}
                return {"route": {"cluster": f"outbound|9080||{s.hostname}"}}
            routes = [{"name": "9080", "virtual_hosts": [
                {"name": f"{s.hostname}:9080", "domains": [s.name, f"{s.name}:9080"],
                 "routes": [{"match": {"prefix": "/"}, **action(s)}]} for s in mesh.services]}]
            inbound = {"name": "inbound|9080||", "virtual_hosts": [{"name": "inbound", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "inbound|9080||"}}]}]}
            listeners = [_listener("virtualInbound", w.ip, 9080, _hcm("inbound_0.0.0.0_9080", route_config=inbound)),
                         _listener("0.0.0.0_9080", w.capture_address, 9080, _hcm("outbound_0.0.0.0_9080", rds="9080"))]
            clusters.append({"name": "inbound|9080||", "type": "STATIC", "connect_timeout": "1s",
                             "load_assignment": {"cluster_name": "inbound|9080||", "endpoints": [{"lb_endpoints": [
                                 {"endpoint": {"address": {"socket_address": {
                                     "address": w.app_address, "port_value": 9080}}}}]}]}})
        out[proxy.name] = ProxyConfig(proxy, listeners, clusters, routes, endpoints)
    return out


def hand_bootstrap(mesh: Mesh, proxy: Proxy, xds_dir: str) -> dict:
    def source(kind: str) -> dict:
        return {"path_config_source": {"path": f"{xds_dir}/{kind}.yaml", "watched_directory": {"path": xds_dir}},
                "resource_api_version": "V3"}
    host, port = zipkin.collector_address(mesh.plan)
    return {"node": {"id": proxy.node_id, "cluster": proxy.node_cluster},
            "admin": {"address": {"socket_address": {"address": proxy.workload.ip, "port_value": 15000}}},
            "dynamic_resources": {"lds_config": source("lds"), "cds_config": source("cds")},
            "static_resources": {"clusters": [{"name": "zipkin", "type": "STATIC", "connect_timeout": "1s",
                                               "load_assignment": {"cluster_name": "zipkin", "endpoints": [
                                                   {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                                                       "address": host, "port_value": port}}}}]}]}}]},
            # report every span at once (default: batches of 5), so a test need not wait
            "layered_runtime": {"layers": [{"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}]}}


def _get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


def _post(url: str, doc: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    progress: list[str] = []
    with MeshRuntime(small_mesh, tmp_path_factory.mktemp("mesh"), translate=hand_translate,
                     bootstrap=hand_bootstrap, on_progress=progress.append, tracing=True) as r:
        r.progress = progress
        yield r


# --- tests --------------------------------------------------------------------------------------
def test_a_request_goes_gateway_to_productpage_and_through_its_sidecar_to_reviews(run):
    pp = run.app_control("productpage-v1-0")
    _post(pp + "/behaviour", {"calls": ["reviews:9080/reviews/0"]})
    status, body = _get(run.gateway_url() + "/productpage", {"end-user": "jason"})
    assert status == 200 and body["pod"] == "productpage-v1-0" and body["service"] == "productpage"
    call = body["calls"][0]
    assert call["status"] == 200 and call["json"]["pod"] == "reviews-v1-0"
    assert call["json"]["headers"]["end-user"] == "jason"       # propagated by the app
    assert call["json"]["headers"]["host"] == "reviews:9080"
    assert "mesh up: 3 proxies, 2 apps" in run.progress
    # each proxy's admin answers on its pod IP
    assert run.admin("reviews-v1-0").url == f"http://{run.mesh.workloads[2].ip}:15000"
    assert run.admin("reviews-v1-0").stats(r"^cluster\.inbound\|9080\|\|\.upstream_rq_total$")


def test_apply_changes_routes_with_no_restart(run):
    pids = {name: e.proc.pid for name, e in run.envoys.items()}
    uptime = json.loads(run.admin("productpage-v1-0").get("/server_info"))["uptime_all_epochs"]
    pp = run.app_control("productpage-v1-0")
    _post(pp + "/behaviour", {"calls": ["reviews:9080/reviews/0"]})
    try:
        changed = run.apply(lambda plan: small_mesh(plan, direct_reviews=True))
        assert changed["productpage-v1-0"] == ["rds:9080"] and changed["istio-ingressgateway-0"] == []
        call = _get(run.gateway_url() + "/productpage")[1]["calls"][0]
        assert call["status"] == 418 and call["body"] == "from apply"
        assert run.apply(lambda plan: small_mesh(plan))["productpage-v1-0"] == ["rds:9080"]
        assert _get(run.gateway_url() + "/productpage")[1]["calls"][0]["status"] == 200
    finally:
        _post(pp + "/behaviour", {"calls": []})
    assert {name: e.proc.pid for name, e in run.envoys.items()} == pids
    after = json.loads(run.admin("productpage-v1-0").get("/server_info"))["uptime_all_epochs"]
    assert int(after.rstrip("s")) >= int(uptime.rstrip("s"))


def test_a_config_envoy_refuses_fails_apply_with_its_reason_and_the_next_apply_recovers(run):
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"v1-0 rejected the new config: Proto .*Status: value must be"):
        run.apply(lambda plan: small_mesh(plan, bad=True))
    assert time.monotonic() - t0 < 10
    run.apply(lambda plan: small_mesh(plan))
    assert _get(run.gateway_url() + "/productpage")[0] == 200
    assert run.admin("productpage-v1") is run.admin("productpage-v1-0")  # by deployment, one replica


def test_zipkin_collects_the_span_tree_of_one_request(run):
    pp = run.app_control("productpage-v1-0")
    _post(pp + "/behaviour", {"calls": ["reviews:9080/reviews/0"]})
    try:
        body = _get(run.gateway_url() + "/productpage")[1]
    finally:
        _post(pp + "/behaviour", {"calls": []})
    trace_id = body["calls"][0]["json"]["headers"]["x-b3-traceid"]
    assert body["headers"]["x-b3-traceid"] == trace_id              # one trace, across the app
    spans = run.zipkin.wait_for(trace_id, 4)
    services = {s["localEndpoint"]["serviceName"] for s in spans}
    assert services >= {"istio-ingressgateway.istio-system", "productpage.default", "reviews.default"}, spans
    with urllib.request.urlopen(f"{run.zipkin.url}/api/v2/trace/{trace_id}", timeout=5) as r:
        assert len(json.loads(r.read())) == len(spans)


def test_a_mesh_on_taken_addresses_moves_to_a_free_block():
    # Start from whichever block is free now: a mesh fixture of this module (or another run on the
    # machine) may hold the first one, and the check is about moving away from a taken block.
    start = free_plan(200, 3).base
    plan = AddressPlan(start)
    with socket.socket() as s:
        s.bind((plan.pod_ip(1), 15000))
        assert free_plan(start, 3).base != start
    assert free_plan(start, 3).base == start
    mesh = readdress(small_mesh(plan), AddressPlan(100))
    assert [w.ip for w in mesh.workloads] == ["127.100.0.1", "127.100.0.2", "127.100.0.3"]
    assert mesh.proxies[2].workload.capture_address == "127.102.0.3" and mesh.services[1].vip == "127.103.0.2"
    assert mesh.endpoints(mesh.services[1], mesh.services[1].ports[0]) == [
        Endpoint("127.100.0.3", 9080, {"app": "reviews", "version": "v1"}, "reviews-v1-0" , "default")]


def test_zipkin_api_alone():
    with zipkin.Zipkin("127.0.0.1", 0) as z:
        span = {"traceId": "A" * 16, "id": "1", "localEndpoint": {"serviceName": "s"}}
        req = urllib.request.Request(z.url + "/api/v2/spans", data=json.dumps([span]).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 202
        assert z.spans("0" * 16 + "a" * 16) == [span]
        with urllib.request.urlopen(z.url + "/api/v2/traces?serviceName=s", timeout=5) as r:
            assert json.loads(r.read()) == [[span]]


KILLED = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_runtime import small_mesh, hand_translate, hand_bootstrap
from envoyext.mesh.runtime import MeshRuntime
run = MeshRuntime(lambda plan: small_mesh(plan, sys.argv[3]), sys.argv[1], translate=hand_translate,
                  bootstrap=hand_bootstrap, tracing=False).start()
print("up", flush=True)
time.sleep(600)
"""


def _pids_with(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", marker], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if int(p) != os.getpid()]


def test_killing_the_runtime_leaves_no_envoy_or_app(tmp_path):
    marker = "-k" + uuid.uuid4().hex[:8]
    workdir = tmp_path / ("mesh" + marker)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(workdir), str(Path(__file__).parent), marker],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])})
    try:
        assert proc.stdout.readline().strip() == "up"
        children = [p for p in _pids_with(marker) if p != proc.pid]
        assert len(children) >= 5, children          # 3 Envoys, 2 apps
        proc.send_signal(signal.SIGKILL)              # no atexit, no stop(): only PR_SET_PDEATHSIG
        proc.wait(10)
        deadline = time.monotonic() + 15
        while (left := [p for p in _pids_with(marker) if p != proc.pid]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
