"""The mesh bootstrap: golden files per Bookinfo proxy, and one real Envoy that starts from a
rendered bootstrap + CDS/EDS files and shows the clusters loaded with their endpoints.
UPDATE_GOLDEN=1 rewrites the golden files."""

from __future__ import annotations

import http.client
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoyext.envoy import xds
from envoyext.envoy.identity import ProxyIdentity
from envoyext.envoy.process import EnvoyProcess, validate
from envoyext.mesh.model import AddressPlan, Endpoint, Proxy
from envoyext.mesh.translate import bootstrap, cluster
from tests.mesh.translate.test_cluster import MESH, XDS, bookinfo_mesh, dr, se_service

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bootstrap"
CLUSTER_TYPE = xds.T + "envoy.config.cluster.v3.Cluster"
CLA_TYPE = xds.T + "envoy.config.endpoint.v3.ClusterLoadAssignment"


@pytest.mark.parametrize("proxy", [p.name for p in MESH.proxies])
def test_matches_golden(proxy: str) -> None:
    found = MESH.proxy(proxy)
    assert found is not None
    got = yaml.safe_dump(bootstrap.for_proxy(MESH, found, XDS.format(proxy=proxy)), sort_keys=False, width=120)
    path = GOLDEN / f"{proxy}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def test_node_and_file_sources() -> None:
    proxy = MESH.proxies[2]
    config = bootstrap.for_proxy(MESH, proxy, "/d/xds", stats_config={"stats_tags": []})
    assert config["node"]["id"] == f"sidecar~{proxy.workload.ip}~reviews-v1-0.default~default.svc.cluster.local"
    assert config["node"]["cluster"] == "reviews.default"
    meta = config["node"]["metadata"]
    assert (meta["NAMESPACE"], meta["WORKLOAD_NAME"], meta["CLUSTER_ID"]) == ("default", "reviews-v1", "Kubernetes")
    assert meta["LABELS"] == {"app": "reviews", "version": "v1"} and meta["ISTIO_VERSION"]
    assert config["dynamic_resources"]["cds_config"]["path_config_source"] == {
        "path": "/d/xds/cds.yaml", "watched_directory": {"path": "/d/xds"}}
    assert config["stats_config"] == {"stats_tags": []}
    assert "stats_config" not in bootstrap.for_proxy(MESH, proxy, "/d/xds", telemetry=False)
    with_telemetry = bootstrap.for_proxy(MESH, proxy, "/d/xds")
    assert with_telemetry["stats_config"]["stats_tags"][0]["tag_name"] == "reporter"
    assert "zipkin" in [c["name"] for c in with_telemetry["static_resources"]["clusters"]]


def _write(path: Path, resources: list[dict[str, Any]], type_url: str) -> None:
    """A DiscoveryResponse file as the delivery layer will write it (test-only stand-in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"version_info": "1", "resources": [{"@type": type_url, **r} for r in resources]}))


def _render(proxy: Proxy, root: Path) -> dict[str, Any]:
    xds_dir = root / proxy.name / "xds"
    clusters, assignments = cluster.for_proxy(LIVE, proxy, str(xds_dir))
    _write(xds_dir / "cds.yaml", clusters, CLUSTER_TYPE)
    _write(xds_dir / "lds.yaml", [], xds.T + "envoy.config.listener.v3.Listener")
    for cla in assignments:
        _write(Path(cluster.eds_file(str(xds_dir), cla["cluster_name"])), [cla], CLA_TYPE)
    return bootstrap.for_proxy(LIVE, proxy, str(xds_dir))


# Own loopback range per test process, so parallel runs (and other suites' meshes) do not collide.
LIVE = bookinfo_mesh(AddressPlan(base=100 + os.getpid() % 120))
# Every policy field the translator emits, so Envoy itself accepts each of them.
LIVE.destination_rules[2] = dr("ratings", {"host": "ratings", "trafficPolicy": {
    "loadBalancer": {"consistentHash": {"ringHash": {"minimumRingSize": 256}, "useSourceIp": True}},
    "connectionPool": {"tcp": {"maxConnections": 5, "connectTimeout": "250ms", "maxConnectionDuration": "1h",
                               "tcpKeepalive": {"time": "60s", "interval": "5s", "probes": 3}},
                       "http": {"http1MaxPendingRequests": 2, "http2MaxRequests": 9, "maxRetries": 1,
                                "maxRequestsPerConnection": 10, "idleTimeout": "30s"}},
    "outlierDetection": {"consecutive5xxErrors": 1, "consecutiveGatewayErrors": 2, "interval": "1s",
                         "baseEjectionTime": "1m30s", "maxEjectionPercent": 50, "minHealthPercent": 10,
                         "splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailures": 3}},
    "subsets": [{"name": "v1", "labels": {"version": "v1"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"maglev": {"tableSize": 65537}}}}},
                {"name": "h2", "labels": {"version": "v1"},
                 "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}}]})
LIVE.services += [se_service("DNS", (Endpoint("127.9.0.1", 8080, {}),)),
                  replace(se_service("NONE"), hostname="none.example.com", name="none.example.com")]


def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _hosts(envoy: EnvoyProcess, name: str) -> list[str]:
    assert envoy.admin is not None
    found = [c for c in envoy.admin.clusters().get("cluster_statuses", []) if c["name"] == name]
    return [h["address"]["socket_address"]["address"] for c in found for h in c.get("host_statuses", [])]


def test_real_envoy_loads_clusters_and_endpoints(tmp_path: Path) -> None:
    productpage, reviews = LIVE.proxies[5], LIVE.proxies[2]
    validate(_render(reviews, tmp_path), workdir=tmp_path)   # --mode validate: the bootstrap only
    config = _render(productpage, tmp_path)
    validate(config, workdir=tmp_path)
    identity = ProxyIdentity(name=productpage.name, node_id=productpage.node_id,
                             node_cluster=productpage.node_cluster, listener="0.0.0.0_15090", stat_prefix="stats")
    with EnvoyProcess(config, identity=identity, workdir=tmp_path / "envoy", check_config=False) as envoy:
        assert envoy.admin is not None
        deadline = time.monotonic() + 20
        statuses: dict[str, list[str]] = {}
        while time.monotonic() < deadline:   # EDS files are read right after CDS; wait for both
            statuses = {c["name"]: [h["address"]["socket_address"]["address"] for h in c.get("host_statuses", [])]
                        for c in envoy.admin.clusters().get("cluster_statuses", [])}
            if statuses.get("outbound|9080|v3|reviews.default.svc.cluster.local"):
                break
            time.sleep(0.1)
        ip = {w.deployment: w.ip for w in LIVE.workloads}
        assert statuses["outbound|9080||reviews.default.svc.cluster.local"] == [
            ip["reviews-v1"], ip["reviews-v2"], ip["reviews-v3"]]
        assert statuses["outbound|9080|v3|reviews.default.svc.cluster.local"] == [ip["reviews-v3"]]
        assert statuses["inbound|9080||"] == [productpage.workload.app_address]
        assert {"BlackHoleCluster", "PassthroughCluster", "InboundPassthroughCluster", "prometheus_stats",
                "outbound|9080|v1|ratings.default.svc.cluster.local",
                "outbound|9080|h2|ratings.default.svc.cluster.local",
                "outbound|80||none.example.com"} <= set(statuses)
        assert statuses["outbound|80||api.example.com"] == ["127.9.0.1"]
        # An EDS file renamed over (as delivery writes) changes the endpoints without a restart.
        v3 = "outbound|9080|v3|reviews.default.svc.cluster.local"
        eds = Path(cluster.eds_file(str(tmp_path / productpage.name / "xds"), v3))
        more = {"cluster_name": v3, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": xds.socket_address(a, 9080)}} for a in (ip["reviews-v3"], ip["reviews-v1"])]}]}
        _write(eds.with_suffix(".tmp"), [more], CLA_TYPE)
        os.replace(eds.with_suffix(".tmp"), eds)
        deadline = time.monotonic() + 10
        while len(_hosts(envoy, v3)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _hosts(envoy, v3) == [ip["reviews-v3"], ip["reviews-v1"]]
        # The Prometheus and health listeners answer on the pod IP, through the admin interface.
        status, body = _get(productpage.workload.ip, 15090, "/stats/prometheus")
        assert status == 200 and b"envoy_cluster_" in body
        assert _get(productpage.workload.ip, 15021, "/healthz/ready") == (200, b"LIVE\n")
