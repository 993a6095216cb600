"""Telemetry for mesh proxies, as Istio configures it: the `istio.stats` metrics filter, the stat
tags that turn its stat names into Prometheus labels, Zipkin tracing, and the access log.

Metrics. Istio's own `istio.stats` is a C++ extension of istio-proxy, absent from upstream Envoy;
envoyext ships a C proxy-wasm filter under the same name (`istio_stats/istio_stats.c`) that
records istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes and
istio_response_bytes with Istio's labels. Envoy keeps Wasm metrics in its `wasmcustom.`
namespace and prints them at /stats/prometheus without it; the labels travel in the stat name as
`name=.=value;.;` and `stats_config()`'s tag regexes cut each one out (what Istio's bootstrap does
for its Wasm-era stats filter and for ProxyConfig extraStatTags).

Peers. Istio learns who is on the other end of a request by metadata exchange; the filter does
the same over one header (`PEER_HEADER`): the client proxy sends its identity with the request,
the server proxy answers with its own on the response, and each removes the peer's before the app
sees it. Each proxy's own identity comes from its pluginConfig (`stats_filter`).

The module is compiled once per machine into a content-addressed cache (`module_path()`);
everything else here is pure.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from envoyext.build.c import SDK_SOURCES, STACK_SIZE, compile_wasm
from envoyext.envoy import filter_entry, xds
from envoyext.mesh.model import Json, Mesh, Proxy

Reporter = Literal["source", "destination"]

STATS_FILTER_NAME = "istio.stats"            # pkg/config/xds/filters.go StatsFilterName
PEER_HEADER = "x-envoyext-peer-metadata"     # the filter's metadata-exchange header
ISTIO_CLUSTER_ID = "Kubernetes"              # Istio's default cluster id (source_cluster, destination_cluster)
SOURCE = Path(__file__).parent / "istio_stats" / "istio_stats.c"
CACHE_ENV = "ENVOYEXT_CACHE_DIR"

# Istio's standard labels, in the order istio_requests_total carries them (reference §12).
LABELS = (
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
METRICS = ("istio_requests_total", "istio_request_duration_milliseconds", "istio_request_bytes",
           "istio_response_bytes")

# Istio's default access log line (pilot/pkg/model/telemetry_logging.go EnvoyTextLogFormat, 1.30).
ACCESS_LOG_FORMAT = (
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% "
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

T = xds.T
ZIPKIN = T + "envoy.config.trace.v3.ZipkinConfig"
FILE_ACCESS_LOG = T + "envoy.extensions.access_loggers.file.v3.FileAccessLog"
ZIPKIN_CLUSTER = "zipkin"


# ---- metrics -------------------------------------------------------------------------------------

def stat_tag(label: str) -> Json:
    """The tag extractor for one label: cut `label=.=value;.;` out of the name, `value` is the tag.
    Anchored on the separator before it, so `source_workload` never matches inside another name."""
    return {"tag_name": label, "regex": rf"[.;]({label}=\.=(.*?);\.;)"}


def stats_config(use_all_default_tags: bool = True) -> Json:
    """The bootstrap `stats_config`: one tag per Istio label.

    Istio's bootstrap sets use_all_default_tags false and re-adds its own subset of Envoy's tags
    under other names (cluster_name, http_conn_manager_prefix); envoyext keeps Envoy's defaults
    (envoy_cluster_name, ...) so the rest of its tooling reads Envoy's stats the usual way."""
    return {"use_all_default_tags": use_all_default_tags, "stats_tags": [stat_tag(label) for label in LABELS]}


def _label(labels: dict[str, str], *keys: str, default: str) -> str:
    return next((labels[k] for k in keys if labels.get(k)), default)


def identity(proxy: Proxy) -> Json:
    """This proxy's workload as Istio labels it (pkg/model canonical-name/revision rules)."""
    w = proxy.workload
    return {
        "workload": w.deployment,
        "namespace": w.namespace,
        "app": _label(w.labels, "app", "app.kubernetes.io/name", default="unknown"),
        "version": _label(w.labels, "version", "app.kubernetes.io/version", default="unknown"),
        "canonical_service": _label(w.labels, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app",
                                    default=w.deployment),
        "canonical_revision": _label(w.labels, "service.istio.io/canonical-revision", "app.kubernetes.io/version",
                                     "version", default="latest"),
        "cluster": ISTIO_CLUSTER_ID,
    }


def plugin_config(mesh: Mesh, proxy: Proxy, reporter: Reporter) -> Json:
    """The filter's configuration: who this proxy is, its role, and (for the destination side) the
    services it serves with their target ports, to name destination_service by the local port."""
    services = []
    for s in mesh.services:
        if s.from_service_entry or s.namespace != proxy.namespace or not s.selector:
            continue
        if all(proxy.labels.get(k) == v for k, v in s.selector.items()):
            services.append({"host": s.hostname, "name": s.name, "namespace": s.namespace,
                             "ports": sorted({p.target_port for p in s.ports})})
    return {"reporter": reporter, **identity(proxy), "services": services}


def stats_filter(mesh: Mesh, proxy: Proxy, reporter: Reporter, *, module: Path | str | None = None) -> Json:
    """The HCM http_filters entry `istio.stats` for one side of a proxy (`source` on sidecar
    outbound and gateways, `destination` on sidecar inbound), running the cached module unless
    `module` names another path (golden tests pass a placeholder). Fail-open: metrics never take
    traffic down."""
    path = module if module is not None else module_path()
    root_id = "stats_outbound" if reporter == "source" else "stats_inbound"
    return filter_entry.wasm_filter(STATS_FILTER_NAME, path, plugin_name=STATS_FILTER_NAME, root_id=root_id,
                                    vm_id=root_id, failure_policy="fail_open",
                                    config=plugin_config(mesh, proxy, reporter))


# ---- the module ------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where built modules live: $ENVOYEXT_CACHE_DIR, else $XDG_CACHE_HOME/envoyext, else ~/.cache/envoyext."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "envoyext"


def _digest() -> str:
    """What the module is built from: the filter, the SDK sources and headers, the compiler."""
    h = hashlib.sha256()
    for f in (SOURCE, *SDK_SOURCES, *sorted(SDK_SOURCES[0].parent.glob("*.h"))):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    try:
        h.update(importlib.metadata.version("ziglang").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    h.update(str(STACK_SIZE).encode())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def module_path() -> Path:
    """The compiled `istio.stats` module, built on first use per machine (content-addressed, so a
    changed source or compiler builds a new file; a lock makes concurrent first uses build once)."""
    out = cache_dir() / "wasm" / f"istio_stats-{_digest()}.wasm"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            compile_wasm([SOURCE], out)
    return out


# ---- tracing and access logs ---------------------------------------------------------------------------

def tracing(mesh: Mesh, proxy: Proxy) -> Json:
    """The HCM `tracing` block Istio gives every proxy with a Zipkin provider (TR zipkinConfig,
    configureSampling): B3, 128-bit trace ids, client/overall sampling 100, random sampling from
    the mesh (default 1%), and Istio's canonical span tags."""
    ident = identity(proxy)
    literal = {"istio.canonical_revision": ident["canonical_revision"],
               "istio.canonical_service": ident["canonical_service"],
               "istio.mesh_id": mesh.config.trust_domain,
               "istio.namespace": proxy.namespace}
    return {
        "client_sampling": {"value": 100.0},
        "random_sampling": {"value": float(mesh.config.tracing_sampling)},
        "overall_sampling": {"value": 100.0},
        "custom_tags": [{"tag": k, "literal": {"value": v}} for k, v in literal.items()],
        "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": ZIPKIN,
            "collector_cluster": ZIPKIN_CLUSTER,
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True,
            "shared_span_context": False,
        }},
    }


def zipkin_cluster(address: str, port: int) -> Json:
    """The bootstrap cluster `zipkin` (Istio: STRICT_DNS, connect 1s); STATIC for an IP address."""
    try:
        ipaddress.ip_address(address)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"
    cluster = xds.static_cluster(ZIPKIN_CLUSTER, [(address, port)], connect_timeout="1s")
    cluster["type"] = kind
    return cluster


def access_log(mesh: Mesh) -> list[Json]:
    """The HCM `access_log` when the mesh sets accessLogFile: Envoy's file logger with Istio's text
    format (an empty list when it is off, Istio's default outside the demo profile)."""
    path = mesh.config.access_log_file
    if not path:
        return []
    typed: dict[str, Any] = {"@type": FILE_ACCESS_LOG, "path": path,
                             "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}}}
    return [{"name": "envoy.access_loggers.file", "typed_config": typed}]
