"""delivery.write: the files a proxy's Envoy watches, and a real Envoy taking updates with no restart."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from envoyext.envoy.identity import ProxyIdentity
from envoyext.envoy.process import EnvoyProcess
from envoyext.mesh import delivery
from envoyext.mesh.model import Proxy, Workload
from envoyext.mesh.translate import ProxyConfig

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

PROXY = Proxy("sidecar", Workload("p-0", "p", "default", {"app": "p"}, "default", (), "127.0.0.1", "127.0.0.1",
                                  "127.0.0.1"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(port: int, body: str, *, route_name: str = "r1", extra_cluster: bool = False,
           upstream: int = 0) -> ProxyConfig:
    """One listener using RDS `route_name` (a direct response, and /up to an EDS cluster)."""
    listener = {"name": "l1", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": {
                    "@type": HCM, "stat_prefix": "l1",
                    "rds": {"route_config_name": route_name,
                            "config_source": {"path_config_source": {"path": f"xds/rds/{route_name}.yaml"},
                                              "resource_api_version": "V3"}},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}}]}]}
    route = {"name": route_name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/up"}, "route": {"cluster": "c1", "prefix_rewrite": "/ready"}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]}
    clusters = [{"name": name, "type": "EDS", "connect_timeout": "1s",
                 "eds_cluster_config": {"eds_config": {"path_config_source": {"path": f"xds/eds/{name}.yaml"},
                                                       "resource_api_version": "V3"}}}
                for name in (["c1", "c2"] if extra_cluster else ["c1"])]
    endpoints = [{"cluster_name": c["name"], "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
        "socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]} for c in clusters]
    return ProxyConfig(PROXY, listeners=[listener], clusters=clusters, routes=[route], endpoints=endpoints)


def bootstrap(admin_port: int) -> dict:
    def source(name: str) -> dict:
        return {"path_config_source": {"path": f"xds/{name}.yaml", "watched_directory": {"path": "xds"}},
                "resource_api_version": "V3"}
    return {"node": {"id": "p-0", "cluster": "p.default"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "dynamic_resources": {"lds_config": source("lds"), "cds_config": source("cds")}}


def test_files_are_discovery_responses_in_the_contract_layout(tmp_path):
    delivery.write(config(1, "one", extra_cluster=True), tmp_path, "1")
    lds = delivery.read(tmp_path / "lds.yaml")
    assert lds and lds["version_info"] == "1"
    assert lds["resources"][0]["@type"] == delivery.LISTENER
    assert delivery.read(tmp_path / "cds.yaml")["resources"][0]["@type"] == delivery.CLUSTER  # type: ignore[index]
    assert delivery.read(tmp_path / "rds/r1.yaml")["resources"][0]["@type"] == delivery.ROUTE_CONFIGURATION  # type: ignore[index]
    assert sorted(p.name for p in (tmp_path / "eds").iterdir()) == ["c1.yaml", "c2.yaml"]
    # version 2: c2 and r1 gone, r2 new; unchanged c1 keeps its version; no temp files left
    delivery.write(config(1, "one", route_name="r2"), tmp_path, "2")
    assert sorted(p.name for p in (tmp_path / "eds").iterdir()) == ["c1.yaml"]
    assert sorted(p.name for p in (tmp_path / "rds").iterdir()) == ["r2.yaml"]
    assert delivery.read(tmp_path / "eds/c1.yaml")["version_info"] == "1"  # type: ignore[index]
    assert delivery.expected_versions(tmp_path) == {"lds": "2", "cds": "2", "rds:r2": "2"}
    assert not [p for p in tmp_path.rglob(".*")]


def test_a_snapshot_put_back_is_the_files_as_they_were(tmp_path):
    delivery.write(config(1, "one", extra_cluster=True), tmp_path, "1")
    files = delivery.snapshot(tmp_path)
    assert sorted(files) == ["cds.yaml", "eds/c1.yaml", "eds/c2.yaml", "lds.yaml", "rds/r1.yaml"]
    delivery.write(config(1, "two", route_name="r2"), tmp_path, "2")
    delivery.restore(tmp_path, files)
    assert delivery.snapshot(tmp_path) == files


def test_a_bad_name_is_refused():
    with pytest.raises(ValueError):
        delivery.rds_path("../x")


def _get(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def _wait(predicate, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _caught_up(admin, xds) -> bool:
    return not delivery.caught_up(delivery.expected_versions(xds), delivery.reported_versions(admin.config_dump()))


def test_envoy_takes_route_cluster_and_listener_updates_without_restart(tmp_path):
    port, admin_port = free_port(), free_port()
    xds = tmp_path / "xds"
    delivery.write(config(port, "one", upstream=admin_port), xds, "1")
    identity = ProxyIdentity(name="p-0", node_id="p-0", listener="l1", stat_prefix="l1")
    with EnvoyProcess(bootstrap(admin_port), identity=identity, workdir=tmp_path, cwd=tmp_path,
                      check_config=False) as envoy:
        assert envoy.admin is not None
        admin = envoy.admin
        pid, uptime = envoy.proc.pid, json.loads(admin.get("/server_info"))["uptime_current_epoch"]
        assert _get(port) == "one"
        assert _get(port, "/up").strip() == "LIVE"   # through the EDS cluster to Envoy's own admin /ready
        assert delivery.reported_versions(admin.config_dump()) == {"lds": "1", "cds": "1", "rds:r1": "1"}

        # A route change only: the rds file is replaced; lds and cds, unchanged, keep version 1.
        delivery.write(config(port, "two", upstream=admin_port), xds, "2")
        assert delivery.expected_versions(xds) == {"lds": "1", "cds": "1", "rds:r1": "2"}
        _wait(lambda: _get(port) == "two")
        _wait(lambda: _caught_up(admin, xds))

        # A new route config name and a new cluster: the listener switches to r2 once it exists.
        delivery.write(config(port, "three", route_name="r2", extra_cluster=True, upstream=admin_port), xds, "3")
        _wait(lambda: _get(port) == "three")
        assert delivery.expected_versions(xds) == {"lds": "3", "cds": "3", "rds:r2": "3"}
        _wait(lambda: _caught_up(admin, xds))
        assert "c2" in json.dumps(admin.clusters())
        assert _get(port, "/up").strip() == "LIVE"

        assert envoy.proc.pid == pid and envoy.proc.poll() is None
        after = json.loads(admin.get("/server_info"))
        assert after["uptime_current_epoch"] == after["uptime_all_epochs"]  # the same epoch: no hot restart
        assert int(after["uptime_current_epoch"].rstrip("s")) >= int(uptime.rstrip("s"))
        assert "rejected" not in envoy.log_text().lower()
