"""Scenario -> observations inside a modelled Istio mesh: every proxy a real Envoy, every pod a
stand-in app on its own loopback address, routing from the scenario's Istio resources.

A case is sent from outside through the ingress gateway, or from a workload through its sidecar
(`from:`), `repeat` times, `concurrency` at once. What it observes is the one Observation type:
the responses, which workload answered each, what every app received, every proxy's stat deltas
(the sending proxy's as `stats`) and the spans of the last request. Cases may `apply:` resources
first, delivered to the running Envoys as `envoyext mesh apply` delivers them: no restart.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envoyext import prometheus
from envoyext.errors import UserError
from envoyext.mesh import traffic
from envoyext.mesh.model import Mesh, Proxy, Resource, Workload
from envoyext.mesh.overlay import overlay, workload_changes
from envoyext.messages import Received, Request, Response
from envoyext.runners.names import MESH
from envoyext.scenario import Case, MeshSpec, Observation, Scenario

if TYPE_CHECKING:
    from envoyext.artifact import Artifact
    from envoyext.mesh.runtime import MeshRuntime

RUNNER = MESH
INGRESS = "ingress"
# A client outside the mesh (no sidecar, plaintext) sending straight to a pod of the target service.
OUTSIDE = "outside"
# Mirrored copies and the apps' own calls finish after the client's response: how long to wait for
# the apps' received lists to stop growing.
SETTLE_S = 0.3
SETTLE_MAX_S = 3.0


def load_resources(paths: list[Path]) -> list[Resource]:
    """The resources of `paths` in order, a later one replacing an earlier one of the same key."""
    from envoyext.mesh import resources
    out: list[Resource] = []
    for p in paths:
        out = overlay(out, resources.load([p]))
    return out


def build(current: list[Resource], base: int | None = None) -> Mesh:
    from envoyext.mesh import build as build_mod
    from envoyext.mesh.model import AddressPlan
    return build_mod.mesh(current, AddressPlan(base) if base is not None else AddressPlan())


def attached(artifact: Artifact | None, scenario: Scenario, current: list[Resource]) -> list[Resource]:
    """The resources that attach the filter under test to its workload, as `publish` emits them."""
    if artifact is None or scenario.mesh is None or scenario.mesh.attach is None:
        return current
    from envoyext.mesh import attach
    return overlay(current, attach.resources(artifact, scenario, build(current)))


def validate(scenario: Scenario) -> None:
    """Refuse, before anything starts, a case whose sender or target the mesh does not have."""
    assert scenario.mesh is not None
    current = load_resources(scenario.mesh.resources)
    mesh = build(current)
    _filter_endpoints(scenario, mesh)
    _check_names(scenario, mesh, scenario.mesh.workloads, "mesh.workloads")
    for i, case in enumerate(scenario.cases):
        if case.apply:
            current = overlay(current, load_resources(case.apply))
            changed = workload_changes(load_resources(scenario.mesh.resources), current)
            if changed:
                raise UserError(f"applying this changes workloads ({', '.join(changed)}), which a running mesh "
                                "cannot take without new processes", file=scenario.path, field=f"cases[{i}].apply",
                                fix="change routing here; put workload changes in mesh.resources")
            mesh = build(current)
        _check_names(scenario, mesh, case.behaviour, f"cases[{i}].behaviour")
        for j, (_, action, value) in enumerate(case.during):
            where = f"cases[{i}].during[{j}].{action}"
            if action == "apply":
                current = overlay(current, load_resources(value))
                changed = workload_changes(load_resources(scenario.mesh.resources), current)
                if changed:
                    raise UserError(f"applying this changes workloads ({', '.join(changed)}), which a running mesh "
                                    "cannot take without new processes", file=scenario.path, field=where,
                                    fix="change routing here; put workload changes in mesh.resources")
            elif action == "behaviour":
                _check_names(scenario, mesh, value, where)
            else:
                _check_names(scenario, mesh, {value: None}, where)
        source = sender(case, scenario.mesh)
        if source == OUTSIDE:
            _outside_pod(mesh, target(case, scenario.mesh), scenario.path, f"cases[{i}].to")
        elif source == INGRESS:
            if ingress(mesh) is None:
                raise UserError(f"the mesh has no ingress gateway (profile {mesh.config.profile})",
                                file=scenario.path, field=f"cases[{i}].from",
                                fix="send from a workload, or use the default or demo profile")
        elif _sidecar(mesh, source) is None:
            raise UserError(f"no workload '{source}' in the mesh", file=scenario.path, field=f"cases[{i}].from",
                            fix=f"one of: {INGRESS}, " + ", ".join(_deployments(mesh)))
        elif not target(case, scenario.mesh):
            raise UserError("a request from a workload needs a target host:port", file=scenario.path,
                            field=f"cases[{i}].to", fix="add to: <service>:<port>, e.g. reviews:9080")
        else:
            # A short name resolves only to a Service of the sender's namespace (as cluster DNS does);
            # one that names none is a typo, not a request (a host with a dot may be external).
            host = str(target(case, scenario.mesh)).rsplit(":", 1)[0]
            sidecar = _sidecar(mesh, source)
            namespace = sidecar.workload.namespace if sidecar is not None else "default"
            if "." not in host and mesh.service(host, namespace) is None:
                services = sorted({s.name for s in mesh.services
                                   if s.namespace == namespace and not s.from_service_entry})
                raise UserError(f"no service '{host}' in namespace {namespace} of the mesh", file=scenario.path,
                                field=f"cases[{i}].to", fix="one of: " + ", ".join(services))
        expect = case.expect if isinstance(case.expect, dict) else {}
        for key in ("workloads", "answered_by"):
            if isinstance(expect.get(key), dict):
                _check_names(scenario, mesh, expect[key], f"cases[{i}].expect.{key}")


def _filter_endpoints(scenario: Scenario, mesh: Mesh) -> None:
    """A filter's scenario (filter.yaml `mesh:`): the sender and target its attach context implies."""
    assert scenario.mesh is not None
    if scenario.mesh.attach is not None:
        from envoyext.mesh import filtercase
        scenario.mesh.source, scenario.mesh.target = filtercase.endpoints(
            mesh, scenario.mesh.attach, scenario.mesh.source, scenario.mesh.target)
        scenario.mesh.peer = filtercase.peer_identity(mesh, scenario.mesh.attach, scenario.mesh.source)


def _outside_pod(mesh: Mesh, to: str | None, file: Path, field: str) -> tuple[Workload, int]:
    """The pod and port a client outside the mesh reaches for `to` (a service's host:port): the
    service's first pod at its target port, where the pod's sidecar takes inbound traffic. A
    ServiceEntry's hosts have no pod to connect to."""
    host, _, port = (to or "").partition(":")
    service = mesh.service(host) if host else None
    if service is None or service.from_service_entry or not port.isdigit():
        raise UserError(f"a request from outside the mesh goes to a mesh service's port, not {to!r}", file=file,
                        field=field, fix="add to: <service>:<port>, e.g. reviews:9080")
    sp = next((p for p in service.ports if p.port == int(port)), None)
    ends = sorted((e for e in mesh.endpoints(service, sp) if e.workload), key=lambda e: str(e.workload)) if sp else []
    if not ends:
        raise UserError(f"service {service.name} has no pod on port {port}", file=file, field=field,
                        fix="name a port of the service that a Deployment serves")
    w = next(w for w in mesh.workloads if w.pod == ends[0].workload)
    return w, ends[0].port


def sender(case: Case, spec: MeshSpec) -> str:
    return case.source or spec.source or INGRESS


def target(case: Case, spec: MeshSpec) -> str | None:
    return case.target or spec.target


def _deployments(mesh: Mesh) -> list[str]:
    return sorted({w.deployment for w in mesh.workloads if not w.gateway})


def _check_names(scenario: Scenario, mesh: Mesh, behaviours: dict[str, Any], where: str) -> None:
    for name in behaviours:
        if _sidecar(mesh, name) is None and not any(w.deployment == name for w in mesh.workloads if not w.gateway):
            raise UserError(f"no workload '{name}' in the mesh", file=scenario.path, field=f"{where}.{name}",
                            fix="name a Deployment (or one of its pods)")


def ingress(mesh: Mesh) -> Proxy | None:
    return mesh.ingress_gateway()


def _sidecar(mesh: Mesh, name: str) -> Proxy | None:
    p = mesh.proxy(name)
    return p if p is not None and p.kind == "sidecar" else None


def _pods(mesh: Mesh, name: str) -> list[str]:
    """A Deployment's pods, or the one pod named."""
    pods = [w.pod for w in mesh.workloads if not w.gateway and name in (w.deployment, w.pod)]
    return pods


@contextmanager
def started(mesh: Mesh, workdir: Path | None = None) -> Iterator[MeshRuntime]:
    """The mesh running in `workdir`, or in a temporary work dir (named for this process) that is
    removed once it stops: it holds the mesh CA's key and every proxy's, which must not outlive the
    run (a killed run's is removed by the next, tempfiles)."""
    import shutil

    from envoyext import tempfiles
    from envoyext.mesh.runtime import MeshRuntime
    own: Path | None = None
    if workdir is None:
        workdir = own = tempfiles.mkdtemp("mesh")
    try:
        with MeshRuntime(mesh, workdir) as rt:
            yield rt
    finally:
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)


def run_scenario(artifact: Artifact | None, scenario: Scenario) -> list[Observation]:
    assert scenario.mesh is not None
    current = attached(artifact, scenario, load_resources(scenario.mesh.resources))
    mesh = build(current)
    _filter_endpoints(scenario, mesh)
    attach = scenario.mesh.attach
    from envoyext.mesh import filtercase
    out: list[Observation] = []
    with started(mesh) as rt:
        behave(rt, running(rt), scenario.mesh.workloads)
        for case in scenario.cases:
            reason = filtercase.not_run(scenario, case) if attach is not None else None
            if reason:  # judged NOT RUN in the mesh by testrun, with this reason
                out.append(Observation(case=case.name, runner=RUNNER, error=filtercase.NOT_RUN_PREFIX + reason))
                continue
            if case.apply:
                current = overlay(current, load_resources(case.apply))
                rt.apply(build(current, running(rt).plan.base))
            if case.behaviour:
                behave(rt, running(rt), case.behaviour)

            def act(action: str, value: Any) -> None:   # a `during:` action, while the requests fly
                nonlocal current
                if action == "apply":
                    current = overlay(current, load_resources(value))
                    rt.apply(build(current, running(rt).plan.base))
                elif action == "behaviour":
                    behave(rt, running(rt), value)
                else:
                    for pod in _pods(running(rt), value):
                        rt.kill_app(pod)
            seen = observe(rt, case, scenario.mesh, act)
            out.append(filtercase.as_filter_sees(seen, running(rt), attach) if attach is not None else seen)
    return out


def behave(rt: MeshRuntime, mesh: Mesh, behaviours: dict[str, Any]) -> None:
    for name, behaviour in behaviours.items():
        for pod in _pods(mesh, name):
            if rt.app_alive(pod):   # a killed app stays down (`during: kill`)
                traffic.control(rt.app_control(pod), "/behaviour", behaviour)


class During:
    """A case's `during:` actions, each run `after_ms` after the first request is sent, on a thread
    of its own while the requests are in flight. An action whose time comes after the last response
    did not happen under load: that is reported, not skipped silently."""

    def __init__(self, actions: list[tuple[int, str, Any]], act: Callable[[str, Any], None] | None):
        self.actions, self.act = actions, act
        self.done = threading.Event()
        self.errors: list[str] = []
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.actions and self.act is not None:
            self.thread = threading.Thread(target=self._run, name="envoyext-during", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        assert self.act is not None
        start = time.monotonic()
        for i, (after_ms, action, value) in enumerate(self.actions):
            if self.done.wait(max(0.0, start + after_ms / 1000 - time.monotonic())):
                self.errors.append(f"during[{i}] ({action} after {after_ms} ms) came after the last response: "
                                   "lower after_ms or send more requests (repeat)")
                return
            try:
                self.act(action, value)
            except Exception as e:  # the case reports it; the mesh runs on
                self.errors.append(f"during[{i}] ({action}) failed: {e}")

    def finish(self) -> list[str]:
        self.done.set()
        if self.thread is not None:
            self.thread.join(60)
        return self.errors


def _gateway_port(rt: MeshRuntime, to: str | None) -> int:
    """The ingress port: the `to:` port, else the gateway's first HTTP listener (Bookinfo: 8080)."""
    if to and ":" in to:
        return int(to.rsplit(":", 1)[1])
    return int(rt.gateway_url().rsplit(":", 1)[1])


def running(rt: MeshRuntime) -> Mesh:
    """The mesh a started runtime runs (on the addresses it chose)."""
    assert rt.mesh is not None, "the mesh runtime is not started"
    return rt.mesh


def observe(rt: MeshRuntime, case: Case, spec: MeshSpec,
            act: Callable[[str, Any], None] | None = None) -> Observation:
    """`act` runs the case's `during:` actions (see run_scenario)."""
    mesh = running(rt)
    source, to = sender(case, spec), target(case, spec)
    outside = _outside_pod(mesh, to, Path("scenario"), "to") if source == OUTSIDE else None
    # From outside there is no sending proxy: `stats` are then the receiving pod's sidecar's.
    proxy = ingress(mesh) if source == INGRESS else _sidecar(mesh, outside[0].pod if outside else source)
    assert proxy is not None
    obs = Observation(case=case.name, runner=RUNNER, proxy=proxy.name)
    if case.wait_ms:
        time.sleep(case.wait_ms / 1000)
    apps = {w.pod: rt.app_control(w.pod) for w in mesh.workloads if not w.gateway and rt.app_alive(w.pod)}
    for url in apps.values():
        traffic.forget_received(url)
    stats_before = {p.name: rt.admin(p.name).stats() for p in mesh.proxies}
    series_before = _scrape(rt, mesh) if "prometheus" in case.expect else None
    rq = _request(case, source, to)

    def one(_: int) -> traffic.Sent:
        if outside is not None:
            return traffic.to_pod(outside[0].ip, outside[1], rq)
        if source == INGRESS:
            return traffic.to_gateway(proxy.workload.ip, _gateway_port(rt, to), rq)
        return traffic.from_workload(rt.app_control(proxy.workload.pod), str(to), rq)

    during = During(case.during, act)
    with concurrent.futures.ThreadPoolExecutor(max_workers=case.concurrency) as pool:
        during.start()
        sent = list(pool.map(one, range(case.repeat)))
    failed_actions = during.finish()
    apps = {pod: url for pod, url in apps.items() if rt.app_alive(pod)}   # killed meanwhile: nothing to ask
    deployments = {w.pod: w.deployment for w in mesh.workloads}
    for s in sent:
        obs.durations_ms.append(s.duration_ms)
        if s.error:
            obs.error = s.error
        if s.response is not None:
            obs.responses.append(s.response)
            pod = next((v for k, v in s.response.headers if k == traffic.POD_HEADER), None)
            obs.answered_by.append(deployments.get(pod) if pod else None)
        elif not s.error:
            obs.resets += 1
    if failed_actions:
        obs.error = "; ".join(failed_actions)
    obs.response = sent[-1].response if sent else None
    obs.workloads = _received(apps, deployments)
    # A filter's scenario speaks of "the upstream": here, every app but the sender's.
    obs.upstream = [r for name, rx in obs.workloads.items() if name != proxy.workload.deployment for r in rx]
    for p in mesh.proxies:
        delta = _delta(stats_before[p.name], rt.admin(p.name).stats())
        if p.name == proxy.name:
            obs.stats = delta
        elif delta:
            obs.other_stats[p.name] = delta
    if series_before is not None:
        obs.prometheus = prometheus.delta(series_before, _scrape(rt, mesh, settle=True))
    if "trace" in case.expect:
        obs.spans = _spans(rt, obs.response, case.expect["trace"].get("min_spans", 1))
    return obs


def _scrape(rt: MeshRuntime, mesh: Mesh, settle: bool = False) -> prometheus.Series:
    """Every proxy's /stats/prometheus series, added up: Istio's metrics carry their reporter and
    workloads as labels, so an expectation names the proxy's side by its labels."""
    def once() -> prometheus.Series:
        total: prometheus.Series = {}
        for p in mesh.proxies:
            for key, value in prometheus.parse(rt.admin(p.name).prometheus()).items():
                total[key] = total.get(key, 0) + value
        return total
    current = once()
    deadline = time.monotonic() + 3.0
    while settle and time.monotonic() < deadline:  # the filters record at stream end, a moment later
        time.sleep(0.2)
        previous, current = current, once()
        if current == previous:
            break
    return current


def _spans(rt: MeshRuntime, response: Response | None, count: int) -> list[dict[str, Any]]:
    """The spans of the request behind `response`: its trace id is the x-b3-traceid the answering
    app received (it echoes its request headers), looked up at the mesh's Zipkin collector."""
    if response is None or rt.zipkin is None:
        return []
    try:
        trace_id = json.loads(response.body)["headers"]["x-b3-traceid"]
    except (ValueError, KeyError, TypeError):
        return []
    return list(rt.zipkin.wait_for(str(trace_id), count, timeout=10))


def _request(case: Case, source: str, to: str | None) -> Request:
    rq = case.request
    host = to.rsplit(":", 1)[0] if to and source == INGRESS else None
    if host:
        return Request(method=rq.method, path=rq.path, authority=host, headers=rq.headers, body=rq.body,
                       trailers=rq.trailers, timeout_ms=rq.timeout_ms)
    return rq


def _received(apps: dict[str, str], deployments: dict[str, str]) -> dict[str, list[Received]]:
    """What each workload received over the case, waiting until the apps stop receiving (mirrors
    and the apps' own onward calls land after the client's response)."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last: dict[str, int] = {}
    while True:
        got = {pod: traffic.received(url, pod) for pod, url in apps.items()}
        counts = {pod: len(v) for pod, v in got.items()}
        if counts == last or time.monotonic() > deadline:
            break
        last = counts
        time.sleep(SETTLE_S)
    out: dict[str, list[Received]] = {}
    for pod, rx in got.items():
        if rx:
            out.setdefault(deployments[pod], []).extend(rx)
    return out


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
