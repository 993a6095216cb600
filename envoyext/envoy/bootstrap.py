"""Pure: (filter artifact, scenario, addresses, proxy identity) -> the single-filter test bootstrap.

Composed of envoy/xds.py's builders and envoy/filter_entry.py's filter entries: one listener
(`identity.listener`) whose HTTP connection manager has stat_prefix `identity.stat_prefix`, route
config `local_route`, and one STATIC cluster per scenario cluster under the scenario's name
(`upstream` for the default). Nothing here touches files, sockets or processes.
"""

from __future__ import annotations

import copy
from typing import Any

from envoyext.artifact import Artifact
from envoyext.envoy import filter_entry, xds
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.errors import UserError
from envoyext.scenario import Oracle, Route, Scenario


def route_entry(route: Route, artifact: Artifact | None) -> dict[str, Any]:
    match = {k: v for k, v in route.match.items() if k in ("prefix", "path", "connect_matcher")}
    if not match:
        match["prefix"] = "/"
    if "headers" in route.match:
        match["headers"] = [{"name": k, "string_match": {"exact": str(v)}}
                            for k, v in route.match["headers"].items()]
    direct = route.direct_response
    metadata = per_filter = None
    if route.metadata and artifact is not None:
        metadata = {"filter_metadata": route.filter_metadata(artifact.filter_name)}
    if route.per_filter_config is not None and artifact is not None:
        per_filter = {artifact.filter_name: filter_entry.per_route(
            artifact, route.per_filter_config, field=f"routes.{route.name}.per_filter_config")}
    return xds.route(
        route.name, match, cluster=route.cluster,
        timeout=None if route.timeout_ms is None else f"{route.timeout_ms / 1000:.3f}s",
        upgrade_configs=route.upgrade_configs,
        direct_response=None if direct is None else xds.direct_response(direct["status"], direct.get("body")),
        metadata=metadata, typed_per_filter_config=per_filter)


def http_filters(artifact: Artifact | None, scenario: Scenario, native: Oracle | None) -> list[dict[str, Any]]:
    """The filter under test, or the scenario's `native` oracle filters, then the router."""
    if native is not None:
        filters = [dict(f) for f in native.http_filters]
    elif artifact is None:
        raise UserError("no filter to test", fix="build the filter, or run the scenario's native oracle")
    else:
        filters = [filter_entry.for_artifact(artifact, scenario.config)]
    return filters + [xds.router_filter()]


def _listener(name: str, listen: tuple[str, int], hcm: dict[str, Any], listener_tls: Any) -> dict[str, Any]:
    if listener_tls is None:
        return xds.http_listener(name, listen, hcm)
    from envoyext.envoy import peer_tls
    plain = xds.filter_chain([xds.network_filter(xds.HCM_NAME, hcm)],
                             filter_chain_match={"transport_protocol": "raw_buffer"})
    tls = xds.filter_chain([xds.network_filter(xds.HCM_NAME, copy.deepcopy(hcm))],
                           filter_chain_match={"transport_protocol": "tls"},
                           transport_socket=xds.transport_socket(xds.TLS_SOCKET,
                                                                 peer_tls.downstream_tls_context(listener_tls)))
    return xds.listener(name, listen, [plain, tls], listener_filters=[xds.tls_inspector()])


def build(artifact: Artifact | None, scenario: Scenario, addresses: dict[str, tuple[str, int]],
          *, identity: ProxyIdentity = TEST_PROXY, listen: tuple[str, int] = ("127.0.0.1", 0),
          oracle: bool = False, listener_tls: Any = None) -> dict[str, Any]:
    """The whole bootstrap. `oracle` swaps the filter under test for the scenario's native filters.
    `listener_tls` (peer_tls.ListenerTls, when a case arrives over mTLS): the listener also takes
    TLS connections, told apart from plaintext by the TLS inspector, with a client certificate
    required and verified; the same connection manager serves both."""
    native = scenario.oracle if oracle else None
    if oracle and native is None:
        raise UserError("the scenario has no native oracle", file=scenario.path, fix="add an `oracle:` block")
    subject = None if oracle else artifact
    virtual_host = xds.virtual_host(
        "local", ["*"], [route_entry(r, subject) for r in scenario.routes],
        typed_per_filter_config=native.typed_per_filter_config if native is not None else None)
    hcm = xds.http_connection_manager(
        identity.stat_prefix, xds.route_config("local_route", [virtual_host]),
        http_filters(artifact, scenario, native),
        codec_type="AUTO",
        # Trailers over HTTP/1.1 reach filters only when the codec is told to keep them.
        http_protocol_options={"enable_trailers": True})
    config = xds.bootstrap(
        node=xds.node(identity.node_id, identity.node_cluster),
        # Histograms reach /stats/prometheus only after a flush; let each admin scrape flush.
        stats_flush_on_admin=True,
        admin=("127.0.0.1", identity.admin_port),
        listeners=[_listener(identity.listener, listen, hcm, listener_tls)],
        clusters=[xds.static_cluster(name, [addresses[name]]) for name in scenario.all_clusters()])
    if artifact is not None and artifact.stats_tags:
        config["stats_config"] = {"stats_tags": list(artifact.stats_tags), "use_all_default_tags": True}
    return config
