"""Pure builders for the xDS resources every envoyext config is made of, in the JSON shape of
Envoy's v3 protos: listener, HTTP connection manager, HTTP filter entry, route, virtual host,
cluster, transport socket, socket address, bootstrap; and small readers that find them again.

Every generated config composes these (the single-filter test bootstrap today; mesh sidecars and
gateways, and published plain-Envoy snippets, next), so a field is spelled in one place. They take
plain values and return new dicts; optional fields are left out when not given, so the output is
what a person would write by hand. How a filter receives its own configuration (Lua, Wasm, per
route) is envoy/filter_entry.py's.
"""

from __future__ import annotations

from typing import Any, cast

Json = dict[str, Any]

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


def _with(d: Json, **optional: Any) -> Json:
    """`d` plus every optional field that was given (None means: leave the field out)."""
    d.update({k: v for k, v in optional.items() if v is not None})
    return d


def socket_address(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def transport_socket(name: str, typed_config: Json) -> Json:
    """e.g. transport_socket("envoy.transport_sockets.tls", {"@type": UPSTREAM_TLS, ...})."""
    return {"name": name, "typed_config": typed_config}


def static_cluster(name: str, endpoints: list[tuple[str, int]], *, connect_timeout: str = "1s",
                   transport_socket: Json | None = None, **extra: Any) -> Json:
    """A STATIC cluster with one locality of endpoints; `extra` adds fields such as
    circuit_breakers or outlier_detection as Envoy spells them."""
    lb_endpoints = [{"endpoint": {"address": socket_address(h, p)}} for h, p in endpoints]
    return _with({"name": name, "type": "STATIC", "connect_timeout": connect_timeout,
                  "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]}},
                 transport_socket=transport_socket, **extra)


def dns_cluster(name: str, host: str, port: int, *, connect_timeout: str = "5s",
                transport_socket: Json | None = None) -> Json:
    """A STRICT_DNS cluster of one host name and port (e.g. the server a remote Wasm module is fetched from)."""
    lb_endpoints = [{"endpoint": {"address": socket_address(host, port)}}]
    return _with({"name": name, "type": "STRICT_DNS", "connect_timeout": connect_timeout,
                  "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]}},
                 transport_socket=transport_socket)


def upstream_tls(sni: str, trusted_ca: str) -> Json:
    """TLS to the upstream host `sni`: its certificate must chain to the CA bundle file `trusted_ca`
    and name `sni` (Envoy checks no host name unless told to)."""
    return transport_socket(TLS_SOCKET, {"@type": UPSTREAM_TLS, "sni": sni, "common_tls_context": {
        "validation_context": {"trusted_ca": {"filename": trusted_ca}, "match_typed_subject_alt_names": [
            {"san_type": "DNS", "matcher": {"exact": sni}}]}}})


def http_filter(name: str, typed_config: Json) -> Json:
    """An entry of HttpConnectionManager.http_filters."""
    return {"name": name, "typed_config": typed_config}


def router_filter() -> Json:
    return http_filter(ROUTER_NAME, {"@type": ROUTER})


def route(name: str, match: Json, *, cluster: str | None = None, timeout: str | None = None,
          upgrade_configs: list[Json] | None = None, direct_response: Json | None = None,
          metadata: Json | None = None, typed_per_filter_config: Json | None = None) -> Json:
    """A route that forwards to `cluster` (with an optional route `timeout` and `upgrade_configs`)
    or answers with `direct_response` ({"status": N, "body": {"inline_string": ...}})."""
    entry: Json = {"name": name, "match": match}
    if direct_response is not None:
        entry["direct_response"] = direct_response
    else:
        entry["route"] = _with({"cluster": cluster}, timeout=timeout, upgrade_configs=upgrade_configs or None)
    return _with(entry, metadata=metadata, typed_per_filter_config=typed_per_filter_config)


def direct_response(status: int, body: str | None = None) -> Json:
    """A route's direct_response; an empty body is left out, as Envoy sends none."""
    return _with({"status": status}, body={"inline_string": body} if body else None)


def virtual_host(name: str, domains: list[str], routes: list[Json], *,
                 typed_per_filter_config: Json | None = None) -> Json:
    return _with({"name": name, "domains": domains, "routes": routes},
                 typed_per_filter_config=typed_per_filter_config or None)


def route_config(name: str, virtual_hosts: list[Json]) -> Json:
    return {"name": name, "virtual_hosts": virtual_hosts}


def http_connection_manager(stat_prefix: str, route_config: Json, http_filters: list[Json], **extra: Any) -> Json:
    """The HCM as a network filter's typed_config, with an inline route_config; `extra` adds
    fields such as codec_type or http_protocol_options as Envoy spells them."""
    return {"@type": HCM, "stat_prefix": stat_prefix, **extra, "route_config": route_config,
            "http_filters": http_filters}


def network_filter(name: str, typed_config: Json) -> Json:
    return {"name": name, "typed_config": typed_config}


def filter_chain(filters: list[Json], *, transport_socket: Json | None = None,
                 filter_chain_match: Json | None = None, name: str | None = None) -> Json:
    return _with({"filters": filters}, transport_socket=transport_socket,
                 filter_chain_match=filter_chain_match, name=name)


def tls_inspector() -> Json:
    """The listener filter that tells TLS from plaintext (and reads SNI and ALPN) for filter chain
    matching; a new dict each call, so no two configs share one."""
    return {"name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": T + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}


TLS_SOCKET = "envoy.transport_sockets.tls"


def listener(name: str, address: tuple[str, int], filter_chains: list[Json], **extra: Any) -> Json:
    return {"name": name, "address": socket_address(*address), "filter_chains": filter_chains, **extra}


def http_listener(name: str, address: tuple[str, int], hcm: Json) -> Json:
    """A listener with one filter chain holding one HTTP connection manager (typed_config `hcm`)."""
    return listener(name, address, [filter_chain([network_filter(HCM_NAME, hcm)])])


def bootstrap(*, node: Json, admin: tuple[str, int], listeners: list[Json], clusters: list[Json],
              **extra: Any) -> Json:
    """A static bootstrap; `extra` adds top-level fields (stats_config, stats_flush_on_admin, ...)."""
    return {"node": node, **extra, "admin": {"address": socket_address(*admin)},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


def node(node_id: str, cluster: str) -> Json:
    return {"id": node_id, "cluster": cluster}


# Readers: find a resource again in a config built from the above (or by hand), without digging
# through static_resources / filter_chains / filters indices.

def listener_named(config: Json, name: str) -> Json:
    """The static listener called `name` (the object itself: changes to it change `config`)."""
    for found in config["static_resources"]["listeners"]:
        if found["name"] == name:
            return cast(Json, found)
    raise KeyError(f"no listener named {name!r}")


def hcm_of(listener: Json) -> Json:
    """The typed_config of the listener's HTTP connection manager (its first, in chain order)."""
    for chain in listener["filter_chains"]:
        for network in chain["filters"]:
            if network["name"] == HCM_NAME:
                return cast(Json, network["typed_config"])
    raise KeyError(f"listener {listener['name']!r} has no HTTP connection manager")


def http_filter_named(hcm: Json, name: str) -> Json:
    """The entry of the HCM's http_filters called `name`."""
    for entry in hcm["http_filters"]:
        if entry["name"] == name:
            return cast(Json, entry)
    raise KeyError(f"no HTTP filter named {name!r}")
