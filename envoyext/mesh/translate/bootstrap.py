"""The static bootstrap each mesh Envoy starts with, shaped like Istio's
(tools/packaging/common/envoy_bootstrap.json): node identity and metadata, admin on the pod IP,
LDS and CDS read from files in the proxy's xDS directory (watched, so rewrites apply live), and
the two listeners every Istio proxy has on its own: Prometheus on 15090 and health on 15021.

Istio's health listener forwards to the pilot-agent (cluster `agent`, port 15020); there is no
agent here, so `/healthz/ready` goes to Envoy's own admin `/ready`, which is what the agent checks.
"""

from __future__ import annotations

import posixpath

from envoyext.envoy import xds
from envoyext.mesh.model import ADMIN_PORT, HEALTH_PORT, ISTIO_VERSION, PROMETHEUS_PORT, Json, Mesh, Proxy
from envoyext.mesh.translate.cluster import CLUSTER_ID

PROMETHEUS_CLUSTER = "prometheus_stats"   # Istio's name for the admin-backed stats cluster
FILE_ACCESS_LOG = xds.T + "envoy.extensions.access_loggers.file.v3.FileAccessLog"


def node_metadata(mesh: Mesh, proxy: Proxy) -> Json:
    """The node metadata istio-agent sends (the fields filters and EnvoyFilter `match.proxy`
    read): names, labels, version, cluster id, identity."""
    w = proxy.workload
    return {
        "NAME": w.pod,
        "NAMESPACE": w.namespace,
        "WORKLOAD_NAME": w.deployment,
        "LABELS": dict(w.labels),
        "SERVICE_ACCOUNT": w.service_account,
        "INSTANCE_IPS": w.ip,
        "ISTIO_VERSION": ISTIO_VERSION,
        "CLUSTER_ID": CLUSTER_ID,
        "MESH_ID": mesh.config.trust_domain,
    }


def _file_source(path: str, watched: str) -> Json:
    """A path_config_source Envoy re-reads whenever a file is moved into `watched` (the delivery
    layer writes a temp file there and renames it over the old one)."""
    return {"path_config_source": {"path": path, "watched_directory": {"path": watched}},
            "resource_api_version": "V3"}


def _admin_listener(name: str, ip: str, port: int, stat_prefix: str, prefix: str,
                    rewrite: str | None = None) -> Json:
    """A listener whose one route sends `prefix` to the admin interface (optionally rewritten)."""
    entry = xds.route("admin", {"prefix": prefix}, cluster=PROMETHEUS_CLUSTER)
    if rewrite is not None:
        entry["route"]["prefix_rewrite"] = rewrite
    routes = xds.route_config("local", [xds.virtual_host("backend", ["*"], [entry])])
    hcm = xds.http_connection_manager(stat_prefix, routes, [xds.router_filter()], codec_type="AUTO")
    return xds.http_listener(name, (ip, port), hcm)


def for_proxy(mesh: Mesh, proxy: Proxy, xds_dir: str, *, stats_config: Json | None = None,
              telemetry: bool = True) -> Json:
    """The bootstrap for one proxy whose xDS files live in `xds_dir` (relative to Envoy's working
    directory, or absolute): `lds.yaml`, `cds.yaml` there, RDS and EDS files below it.
    With `telemetry`, the stats tags that turn `istio.stats` names into Istio's labels, the
    `zipkin` cluster the connection managers' tracing reports to (the mesh run's collector) and a
    1 s stats flush; `stats_config` replaces the tags."""
    from envoyext.mesh import telemetry as telemetry_mod
    from envoyext.mesh import zipkin
    ip = proxy.workload.ip
    node = {**xds.node(proxy.node_id, proxy.node_cluster), "metadata": node_metadata(mesh, proxy)}
    extra: Json = {}
    clusters = [xds.static_cluster(PROMETHEUS_CLUSTER, [(ip, ADMIN_PORT)], connect_timeout="0.250s")]
    runtime_flags: Json = {"overload.global_downstream_max_connections": 2147483647}
    if telemetry:
        stats_config = stats_config if stats_config is not None else telemetry_mod.stats_config()
        # Istio flushes every 5 s; histograms reach /stats/prometheus only at a flush, and a test
        # scrapes right after its requests.
        extra["stats_flush_interval"] = "1s"
        clusters.append(telemetry_mod.zipkin_cluster(*zipkin.collector_address(mesh.plan)))
        # Envoy batches 5 spans per report by default; a test reads a request's spans right after it.
        runtime_flags["tracing.zipkin.min_flush_spans"] = 1
    if stats_config is not None:
        extra["stats_config"] = stats_config
    config = xds.bootstrap(
        node=node, admin=(ip, ADMIN_PORT),
        listeners=[
            _admin_listener(f"0.0.0.0_{PROMETHEUS_PORT}", ip, PROMETHEUS_PORT, "stats", "/stats/prometheus"),
            _admin_listener(f"0.0.0.0_{HEALTH_PORT}", ip, HEALTH_PORT, "agent", "/healthz/ready", "/ready"),
        ],
        clusters=clusters,
        dynamic_resources={"lds_config": _file_source(posixpath.join(xds_dir, "lds.yaml"), xds_dir),
                           "cds_config": _file_source(posixpath.join(xds_dir, "cds.yaml"), xds_dir)},
        layered_runtime={"layers": [
            # Istio's static runtime flags that matter here: no global connection limit warning.
            {"name": "global config", "static_layer": runtime_flags},
            {"name": "admin", "admin_layer": {}},
        ]},
        **extra,
    )
    config["admin"]["access_log"] = [{"name": "envoy.access_loggers.file",
                                      "typed_config": {"@type": FILE_ACCESS_LOG, "path": "/dev/null"}}]
    return config
