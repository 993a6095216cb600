"""`envoyext mesh graph`: workloads, proxies and routes with their weights, as an SVG picture.

Three columns, left to right: who sends (the ingress gateway and every workload that routes
somewhere), the services (hosts the routes name), and the workloads that serve them; an edge per
route destination, labelled with its weight (and subset). Built from the translated routes, so the
picture shows what Envoy is told, not what the YAML hoped."""

from __future__ import annotations

from html import escape

from envoyext.mesh.model import Mesh

ROW, COL, BOX_W, BOX_H = 44, 300, 220, 28


def _edges(mesh: Mesh) -> list[tuple[str, str, str]]:
    """(from, service host, label) for every weighted or single route destination."""
    from envoyext.mesh import fetch
    from envoyext.mesh.translate import translate
    out: set[tuple[str, str, str]] = set()
    for config in translate(mesh, fetch=fetch.fetch).values():
        source = config.proxy.workload.deployment
        for rc in config.routes:
            for vh in rc.get("virtual_hosts", []):
                for r in vh.get("routes", []):
                    action = r.get("route") or {}
                    weighted = action.get("weighted_clusters", {}).get("clusters", [])
                    targets = [(action["cluster"], 100)] if "cluster" in action else [
                        (w["name"], w.get("weight", 0)) for w in weighted]
                    for cluster, weight in targets:
                        parts = cluster.split("|")
                        if len(parts) == 4 and parts[0] == "outbound":
                            label = f"{parts[2] or 'all'} {weight}%"
                            out.add((source, parts[3], label))
    return sorted(out)


def svg(mesh: Mesh) -> str:
    edges = _edges(mesh)
    sources = sorted({s for s, _, _ in edges})
    services = sorted({h for _, h, _ in edges})
    workloads = sorted({w.deployment for w in mesh.workloads if not w.gateway})
    columns = [sources, services, workloads]
    pos = {(c, n): (20 + c * COL, 40 + i * ROW) for c, names in enumerate(columns) for i, n in enumerate(names)}
    height = 60 + ROW * max(len(c) for c in columns) if edges else 100
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{40 + 2 * COL + BOX_W}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<text x="20" y="20" font-weight="bold">senders</text>',
             f'<text x="{20 + COL}" y="20" font-weight="bold">services</text>',
             f'<text x="{20 + 2 * COL}" y="20" font-weight="bold">workloads</text>']
    for (src, host, label) in edges:
        x1, y1 = pos[(0, src)]
        x2, y2 = pos[(1, host)]
        parts.append(f'<line x1="{x1 + BOX_W}" y1="{y1 + BOX_H / 2}" x2="{x2}" y2="{y2 + BOX_H / 2}" stroke="#888"/>')
        parts.append(f'<text x="{(x1 + BOX_W + x2) / 2 - 20}" y="{(y1 + y2) / 2 + BOX_H / 2 - 3}" fill="#333">'
                     f'{escape(label)}</text>')
    for svc in services:
        service = mesh.service(svc)
        for w in mesh.workloads:
            if service is not None and not w.gateway and w.namespace == service.namespace and service.selector and all(
                    w.labels.get(k) == v for k, v in service.selector.items()):
                x1, y1 = pos[(1, svc)]
                x2, y2 = pos[(2, w.deployment)]
                parts.append(f'<line x1="{x1 + BOX_W}" y1="{y1 + BOX_H / 2}" x2="{x2}" y2="{y2 + BOX_H / 2}" '
                             f'stroke="#bbb" stroke-dasharray="4 3"/>')
    for (c, name), (x, y) in pos.items():
        fill = ["#e8f0fe", "#fef7e0", "#e6f4ea"][c]
        parts.append(f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5" fill="{fill}" stroke="#666"/>')
        parts.append(f'<text x="{x + 8}" y="{y + 18}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
