"""`envoyext mesh describe WORKLOAD`: one proxy's config as tables, the way `istioctl proxy-config`
shows listeners, routes, clusters and endpoints, read from the translation (what the proxy is served)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from envoyext.errors import UserError
from envoyext.mesh.model import Json, Mesh
from envoyext.mesh.translate import ProxyConfig

HCM = "envoy.filters.network.http_connection_manager"


def _address(listener: Json) -> str:
    sa = listener.get("address", {}).get("socket_address", {})
    extra = [a.get("address", {}).get("socket_address", {}) for a in listener.get("additional_addresses", [])]
    return ", ".join(f"{s.get('address')}:{s.get('port_value')}" for s in [sa, *extra] if s)


def _chain_summary(chain: Json) -> tuple[str, str]:
    match = chain.get("filter_chain_match", {})
    what = ", ".join(f"{k}={v}" for k, v in sorted(match.items())) or "ALL"
    dest = ""
    for f in chain.get("filters", []):
        cfg = f.get("typed_config", {})
        if f.get("name") == HCM:
            dest = f"Route: {cfg['rds']['route_config_name']}" if "rds" in cfg else \
                f"Inline Route: {cfg.get('route_config', {}).get('name', '')}"
        elif "cluster" in cfg:
            dest = f"Cluster: {cfg['cluster']}"
    return what, dest


def tables(config: ProxyConfig) -> list[Table]:
    listeners = Table("LISTENER", "ADDRESS", "MATCH", "DESTINATION", title="listeners")
    for listener in config.listeners:
        for chain in listener.get("filter_chains", []) or [{}]:
            what, dest = _chain_summary(chain)
            listeners.add_row(listener["name"], _address(listener), what, dest)
    routes = Table("NAME", "VHOST NAME", "DOMAINS", "MATCH", "ROUTE TO", title="routes")
    for rc in config.routes:
        for vh in rc.get("virtual_hosts", []):
            for r in vh.get("routes", []):
                routes.add_row(rc["name"], vh["name"], _domains(vh.get("domains", [])), _match(r.get("match", {})),
                               _action(r))
    clusters = Table("CLUSTER", "TYPE", "LB", "SUBSET/POLICY", title="clusters")
    for c in config.clusters:
        policy = []
        if "outlier_detection" in c:
            policy.append("outlier")
        thresholds = (c.get("circuit_breakers", {}).get("thresholds") or [{}])[0]
        if any(v != 4294967295 for k, v in thresholds.items() if k.startswith("max_")):
            policy.append("circuit breaker")
        clusters.add_row(c["name"], str(c.get("type", "")), str(c.get("lb_policy", "")), ", ".join(policy))
    endpoints = Table("ENDPOINT", "STATUS", "CLUSTER", title="endpoints")
    for cla in config.endpoints:
        for group in cla.get("endpoints", []):
            for ep in group.get("lb_endpoints", []):
                sa = ep.get("endpoint", {}).get("address", {}).get("socket_address", {})
                endpoints.add_row(f"{sa.get('address')}:{sa.get('port_value')}", "HEALTHY", cla["cluster_name"])
    return [listeners, routes, clusters, endpoints]


def _domains(domains: list[str]) -> str:
    return ", ".join(domains[:3]) + (f" + {len(domains) - 3} more" if len(domains) > 3 else "")


def _match(m: Json) -> str:
    for key in ("path", "prefix"):
        if key in m:
            text = f"{m[key]}{'*' if key == 'prefix' else ''}"
            break
    else:
        text = m.get("safe_regex", {}).get("regex", "/*")
    headers = [h["name"] for h in m.get("headers", [])]
    return text + (f" [{', '.join(headers)}]" if headers else "")


def _action(r: Json) -> str:
    action: Any = r.get("route")
    if action:
        if "cluster" in action:
            return str(action["cluster"])
        weighted = action.get("weighted_clusters", {}).get("clusters", [])
        return ", ".join(f"{w['name']} {w.get('weight')}%" for w in weighted)
    if "redirect" in r:
        return "redirect"
    if "direct_response" in r:
        return f"direct response {r['direct_response'].get('status')}"
    return ""


def show(mesh: Mesh, workload: str, console: Console | None = None) -> None:
    from envoyext.mesh import fetch
    from envoyext.mesh.translate import translate
    proxy = mesh.proxy(workload)
    if proxy is None:
        names = sorted({p.workload.deployment for p in mesh.proxies})
        raise UserError(f"no workload '{workload}' in the mesh", field="WORKLOAD", fix=f"one of: {', '.join(names)}")
    config = translate(mesh, fetch=fetch.fetch)[proxy.name]
    console = console or Console()
    console.print(f"[bold]{proxy.name}[/bold] ({proxy.kind}, {proxy.node_id})")
    for t in tables(config):
        console.print(t)
