"""A filter's own scenario run in its project's mesh (filter.yaml `mesh:`): what its cases mean there.

The filter is attached to one workload's sidecar (SIDECAR_INBOUND: requests sent to that workload;
SIDECAR_OUTBOUND: the workload's own calls) through the resource `envoyext publish` emits. A case's
expectations then read:
- status, headers, body: the response the sender got, after every proxy on the way;
- upstream: what the target app received (every app but the sender's);
- stats: the attached proxy's deltas, its connection manager's prefix (inbound_0.0.0.0_<port> or
  outbound_0.0.0.0_<port>) read as the test Envoy's `ingress_http`, so `http.ingress_http.lua.x`
  names the filter's own counter in the sidecar.
What the mesh cannot judge is NOT RUN there, with the reason, never passed: a scripted test upstream,
extra clusters or routes of the scenario (the mesh's come from its Istio resources), the filter's log
lines (not gathered from the proxies), startup cases, a request that names its authority (the Host
becomes the target service's: the sidecar routes by it), non-ASCII header bytes sent from a workload
(the app's call API carries text), and a body expected from the test upstream's echo when a
stand-in app answered (its JSON is its own).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from envoyext.errors import UserError
from envoyext.mesh import pki
from envoyext.mesh.model import Mesh, Service
from envoyext.mesh.traffic import POD_HEADER
from envoyext.messages import Request
from envoyext.scenario import Case, Observation, Scenario
from envoyext.scenario.model import default_routes

INGRESS = "ingress"
INBOUND, OUTBOUND = "SIDECAR_INBOUND", "SIDECAR_OUTBOUND"
TEST_PREFIX = "http.ingress_http."
_SIDECAR_HCM = re.compile(r"^http\.(inbound|outbound)_0\.0\.0\.0_\d+\.")
NOT_RUN_PREFIX = "not run in the mesh: "


def _services_of(mesh: Mesh, deployment: str) -> list[Service]:
    pods = [w for w in mesh.workloads if w.deployment == deployment]
    return [s for s in mesh.services if s.selector and not s.from_service_entry
            and any(all(w.labels.get(k) == v for k, v in s.selector.items()) for w in pods)]


def _http_port(s: Service) -> int:
    return next((p.port for p in s.ports if p.protocol.startswith("HTTP")), s.ports[0].port)


def endpoints(mesh: Mesh, attach: dict[str, Any], source: str | None, target: str | None) -> tuple[str, str | None]:
    """Who sends each case and to which host:port, by the attach context when filter.yaml leaves
    them out. Inbound: another workload calls the attached workload's service. Outbound: the
    attached workload calls the first other service. Refuses, naming filter.yaml mesh.workload,
    a sender and target whose requests would never pass the filter."""
    workload, context, file = attach["workload"], attach["context"], attach.get("file", "filter.yaml")
    mine = _services_of(mesh, workload)
    deployments = sorted({w.deployment for w in mesh.workloads if not w.gateway})
    if context == INBOUND:
        if not mine:
            raise UserError(f"no Service selects workload '{workload}', so no request reaches its inbound side",
                            file=file, field="mesh.workload", fix="name a workload a Service selects")
        src = source or next((d for d in deployments if d != workload), INGRESS)
        to = target or (f"{mine[0].name}:{_http_port(mine[0])}" if src != INGRESS else None)
        host = (to or "").rsplit(":", 1)[0]
        if src != INGRESS and host and not any(host in (s.name, s.hostname, f"{s.name}.{s.namespace}") for s in mine):
            raise UserError(f"requests to '{to}' go to another service, never through workload '{workload}' "
                            "where the filter is attached (inbound)", file=file, field="mesh.workload",
                            fix=f"attach to a workload behind {host}, or send to: " + ", ".join(s.name for s in mine))
        return src, to
    if context == OUTBOUND:
        if source not in (None, workload):
            raise UserError(f"'{source}' sends the requests, but the filter is attached to workload '{workload}''s "
                            "outbound side", file=file, field="mesh.workload",
                            fix=f"set mesh.from to {workload}, or attach to {source}")
        others = [s for s in mesh.services if s.selector and s not in mine and not s.from_service_entry]
        if target is None and not others:
            raise UserError("no other service for the workload to call", file=file, field="mesh.to",
                            fix="add to: <service>:<port>")
        return workload, target or f"{others[0].name}:{_http_port(others[0])}"
    return source or INGRESS, target


def peer_identity(mesh: Mesh, attach: dict[str, Any], source: str | None) -> str | None:
    """The SPIFFE ID on the attached filter's downstream connection: inbound, the sender's proxy
    (a sidecar, or the ingress gateway) over auto-mTLS; outbound, None (the app's own plaintext)."""
    if attach["context"] != INBOUND or not mesh.config.enable_auto_mtls:
        return None
    sender = mesh.ingress_gateway() if source in (None, INGRESS) else mesh.proxy(source)
    if sender is None:
        return None
    w = sender.workload
    return pki.spiffe_id(mesh.config.trust_domain, w.namespace, w.service_account)


def _peer_not_run(sc: Scenario, case: Case) -> str | None:
    """A case over mTLS (connection.mtls) runs in the mesh only when the mesh's real peer is its peer."""
    if case.mtls is None:
        return None
    peer = sc.mesh.peer if sc.mesh else None
    if peer is None:
        return "the case arrives over mTLS; in the mesh the filter's downstream connection is plaintext"
    if case.mtls.peer != peer:
        return f"the case's peer is {case.mtls.peer}; in the mesh the filter's peer is the sender, {peer}"
    if case.mtls.subject or case.mtls.dns:
        return "the case's certificate has a subject or DNS names; Istio's SVIDs have neither"
    return None


def not_run(sc: Scenario, case: Case) -> str | None:
    """Why this case cannot be judged in the mesh, known before it runs (None: it can)."""
    if case.startup:
        return "a startup case has no request to send through the mesh"
    peer = _peer_not_run(sc, case)
    if peer:
        return peer
    up = sc.upstream
    if up.reply is not None or up.rules or up.down or not up.echo:
        return "the scenario scripts its test upstream's answer; in the mesh a stand-in app answers as itself"
    if sc.clusters or "clusters" in case.expect:
        return f"the filter calls clusters the scenario defines ({', '.join(sc.clusters)}); the mesh has none of them"
    if [(r.match, r.cluster, r.direct_response, r.metadata, r.per_filter_config) for r in sc.routes] != \
            [(r.match, r.cluster, r.direct_response, r.metadata, r.per_filter_config) for r in default_routes()]:
        return "the scenario defines its own routes; in the mesh routes come from the Istio resources"
    rq = case.request
    if rq.authority != Request().authority or any(_names_host(v, rq.authority) for _, v in rq.headers):
        return (f"the request names its authority ({rq.authority}); in the mesh the Host is the target "
                "service's, which the sidecar routes by")
    sender = (case.source or (sc.mesh.source if sc.mesh else None) or INGRESS)
    if sender != INGRESS and any(not (k + v).isascii() for k, v in case.request.headers):
        return "a header holds non-ASCII bytes, which the stand-in app's calls do not send byte for byte"
    if "logs_contain" in case.expect or "logs_absent" in case.expect:
        return "expects the filter's log lines, which the mesh runner does not gather from the proxies"
    return None


def _names_host(value: str, host: str) -> bool:
    """Whether a header value is the host or a URL of it (an Origin, a Referer)."""
    return value == host or urlsplit(value).hostname == host


def not_judged(sc: Scenario, case: Case, obs: Observation) -> str | None:
    """Why this case's observation cannot be judged against its expectations (None: it can)."""
    if obs.error and obs.error.startswith(NOT_RUN_PREFIX):
        return obs.error[len(NOT_RUN_PREFIX):]
    reason = not_run(sc, case)
    if reason:
        return reason
    answered = obs.response is not None and any(k == POD_HEADER for k, _ in obs.response.headers)
    if answered and ("body" in case.expect or "body_contains" in case.expect):
        return "expects a body from the test upstream's echo, but a stand-in app answered with its own JSON"
    return None


def as_filter_sees(obs: Observation, mesh: Mesh, attach: dict[str, Any]) -> Observation:
    """`stats` becomes the attached proxy's (its sidecar HCM prefix read as `ingress_http`), the
    sender's kept under other_stats; a case none of whose requests passed the attached side fails."""
    names = [p.name for p in mesh.proxies if p.workload.deployment == attach["workload"]]
    by_proxy = obs.stats_by_proxy()
    mine: dict[str, int] = {}
    for name in names:
        for k, v in by_proxy.get(name, {}).items():
            key = _SIDECAR_HCM.sub(TEST_PREFIX, k)
            mine[key] = mine.get(key, 0) + v
    side = "inbound" if attach["context"] == INBOUND else "outbound"
    passed = sum(v for name in names for k, v in by_proxy.get(name, {}).items()
                 if k.startswith(f"http.{side}_") and k.endswith(".downstream_rq_total"))
    if obs.proxy not in names:
        obs.other_stats[obs.proxy] = obs.stats
    for name in names:
        obs.other_stats.pop(name, None)
    obs.stats = mine
    if not passed and not obs.error:
        obs.error = (f"no request passed workload '{attach['workload']}''s {side} side, where the filter is "
                     f"attached ({attach.get('file', 'filter.yaml')} mesh.workload): it did not run")
    return obs
