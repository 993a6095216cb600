"""Plain Envoy, no control plane: the filter's HTTP filter entry (envoy.filter_entry.for_artifact) as
YAML to put in an HttpConnectionManager's http_filters before the router, plus the cluster a remote
Wasm module is fetched through. Checked by `envoy --mode validate` on a minimal bootstrap holding it.
"""

from __future__ import annotations

from typing import Any

from envoyext.artifact import Artifact
from envoyext.envoy import filter_entry, xds
from envoyext.publish import istio

Json = dict[str, Any]


def snippet(artifact: Artifact, config: Any, url: str | None = None) -> Json:
    """{"http_filters": [the entry]} and, for a Wasm module fetched from `url`, {"clusters": [its cluster]}."""
    code, cluster = istio.remote_module(artifact, url) if url and artifact.kind == "wasm" else (None, None)
    out: Json = {"http_filters": [filter_entry.for_artifact(artifact, config, wasm_code=code)]}
    if cluster is not None:
        out["clusters"] = [cluster]
    return out


def bootstrap(snip: Json) -> Json:
    """The smallest bootstrap that holds `snip`: one listener whose HCM runs its filters and the router."""
    routes = xds.route_config("local", [xds.virtual_host("any", ["*"], [
        xds.route("all", {"prefix": "/"}, direct_response=xds.direct_response(200))])])
    hcm = xds.http_connection_manager("publish", routes, [*snip["http_filters"], xds.router_filter()])
    return xds.bootstrap(node=xds.node("envoyext-publish", "envoyext-publish"), admin=("127.0.0.1", 0),
                         listeners=[xds.http_listener("publish", ("127.0.0.1", 0), hcm)],
                         clusters=list(snip.get("clusters", [])))


HEADER = ("# envoyext publish --as envoy: put http_filters' entry into your HttpConnectionManager's\n"
          "# http_filters, before envoy.filters.http.router{clusters}.\n")


def header(snip: Json) -> str:
    return HEADER.format(clusters="; the clusters go into static_resources.clusters" if snip.get("clusters") else "")
