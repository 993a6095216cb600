"""Pure builders for the xDS resources every envoyext config is made of, in the JSON shape of
Envoy's v3 protos: listener, HTTP connection manager, HTTP filter entry, route, virtual host,
cluster, transport socket, socket address, bootstrap.

Every generated config composes these (the single-filter test bootstrap today; mesh sidecars and
gateways, and published plain-Envoy snippets, next), so a field is spelled in one place. They take
plain values and return new dicts; optional fields are left out when not given, so the output is
what a person would write by hand.
"""

from __future__ import annotations

from typing import Any

T = "type.googleapis.com/"
HCM = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = T + "envoy.extensions.filters.http.router.v3.Router"
LUA = T + "envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE = T + "envoy.extensions.filters.http.lua.v3.LuaPerRoute"
WASM = T + "envoy.extensions.filters.http.wasm.v3.Wasm"
FILTER_CONFIG = T + "envoy.config.route.v3.FilterConfig"
STRING_VALUE = T + "google.protobuf.StringValue"
UPSTREAM_TLS = T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

HCM_NAME = "envoy.filters.network.http_connection_manager"
ROUTER_NAME = "envoy.filters.http.router"


def _with(d: dict, **optional: Any) -> dict:
    """`d` plus every optional field that was given (None means: leave the field out)."""
    d.update({k: v for k, v in optional.items() if v is not None})
    return d


def socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def transport_socket(name: str, typed_config: dict) -> dict:
    """e.g. transport_socket("envoy.transport_sockets.tls", {"@type": UPSTREAM_TLS, ...})."""
    return {"name": name, "typed_config": typed_config}


def static_cluster(name: str, endpoints: list[tuple[str, int]], *, connect_timeout: str = "1s",
                   transport_socket: dict | None = None, **extra: Any) -> dict:
    """A STATIC cluster with one locality of endpoints; `extra` adds fields such as
    circuit_breakers or outlier_detection as Envoy spells them."""
    lb_endpoints = [{"endpoint": {"address": socket_address(h, p)}} for h, p in endpoints]
    return _with({"name": name, "type": "STATIC", "connect_timeout": connect_timeout,
                  "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]}},
                 transport_socket=transport_socket, **extra)


def http_filter(name: str, typed_config: dict) -> dict:
    """An entry of HttpConnectionManager.http_filters."""
    return {"name": name, "typed_config": typed_config}


def router_filter() -> dict:
    return http_filter(ROUTER_NAME, {"@type": ROUTER})


def disabled_filter_config() -> dict:
    """Per-route config that turns a filter off for the route (envoy.config.route.v3.FilterConfig)."""
    return {"@type": FILTER_CONFIG, "disabled": True}


def route(name: str, match: dict, *, cluster: str | None = None, timeout: str | None = None,
          direct_response: dict | None = None, metadata: dict | None = None,
          typed_per_filter_config: dict | None = None) -> dict:
    """A route that forwards to `cluster` (with an optional route `timeout`) or answers with
    `direct_response` ({"status": N, "body": {"inline_string": ...}})."""
    entry: dict[str, Any] = {"name": name, "match": match}
    if direct_response is not None:
        entry["direct_response"] = direct_response
    else:
        entry["route"] = _with({"cluster": cluster}, timeout=timeout)
    return _with(entry, metadata=metadata, typed_per_filter_config=typed_per_filter_config)


def virtual_host(name: str, domains: list[str], routes: list[dict], *,
                 typed_per_filter_config: dict | None = None) -> dict:
    return _with({"name": name, "domains": domains, "routes": routes},
                 typed_per_filter_config=typed_per_filter_config or None)


def route_config(name: str, virtual_hosts: list[dict]) -> dict:
    return {"name": name, "virtual_hosts": virtual_hosts}


def http_connection_manager(stat_prefix: str, route_config: dict, http_filters: list[dict], **extra: Any) -> dict:
    """The HCM as a network filter's typed_config, with an inline route_config; `extra` adds
    fields such as codec_type or http_protocol_options as Envoy spells them."""
    return {"@type": HCM, "stat_prefix": stat_prefix, **extra, "route_config": route_config,
            "http_filters": http_filters}


def network_filter(name: str, typed_config: dict) -> dict:
    return {"name": name, "typed_config": typed_config}


def filter_chain(filters: list[dict], *, transport_socket: dict | None = None,
                 filter_chain_match: dict | None = None, name: str | None = None) -> dict:
    return _with({"filters": filters}, transport_socket=transport_socket,
                 filter_chain_match=filter_chain_match, name=name)


def listener(name: str, address: tuple[str, int], filter_chains: list[dict], **extra: Any) -> dict:
    return {"name": name, "address": socket_address(*address), "filter_chains": filter_chains, **extra}


def bootstrap(*, node: dict, admin: tuple[str, int], listeners: list[dict], clusters: list[dict],
              **extra: Any) -> dict:
    """A static bootstrap; `extra` adds top-level fields (stats_config, stats_flush_on_admin, ...)."""
    return {"node": node, **extra, "admin": {"address": socket_address(*admin)},
            "static_resources": {"listeners": listeners, "clusters": clusters}}
