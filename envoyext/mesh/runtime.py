"""Run a mesh on this machine: one real Envoy per proxy, one stand-in app per pod, all on loopback.

    with MeshRuntime(mesh, workdir) as run:      # start(): every proxy ready, every app answering
        run.gateway_url()                         # http://127.64.0.1:8080
        run.apply(changed_mesh)                   # new files, no restart; returns once Envoy has them

Each proxy gets a directory `workdir/<pod>/` (bootstrap.yaml, xds/, envoy.log) and its Envoy runs
with that directory as cwd, because the generated configs name their xDS files relative to it.
Processes are started through envoyext.envoy.process (one spawner thread, PR_SET_PDEATHSIG), so a
killed runtime takes its Envoys and apps with it; stop() (context manager, atexit) does it politely.

The translator is injected (`translate`, `bootstrap`) so the runtime does not depend on how a
Mesh becomes Envoy config; by default it uses envoyext.mesh.translate's.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from envoyext.envoy import logs, process
from envoyext.envoy.admin import Admin
from envoyext.envoy.identity import ProxyIdentity
from envoyext.errors import UserError
from envoyext.mesh import delivery, sds, zipkin
from envoyext.mesh.model import (
    ADMIN_PORT,
    APP_CONTROL_PORT,
    AddressPlan,
    Endpoint,
    Json,
    Mesh,
    Proxy,
    Service,
    Workload,
)
from envoyext.mesh.translate import ProxyConfig

ROTATION_POLL = 0.25  # seconds between checks for a certificate past half-life
XDS_DIR = "xds"  # relative to each proxy's directory (its Envoy's cwd)
Translate = Callable[[Mesh], dict[str, ProxyConfig]]
Bootstrap = Callable[[Mesh, Proxy, str], Json]
MeshSource = Mesh | Callable[[AddressPlan], Mesh]

_live: set["MeshRuntime"] = set()
_live_lock = threading.Lock()


def _default_translate(mesh: Mesh) -> dict[str, ProxyConfig]:
    from envoyext.mesh import fetch, tokens, translate
    # A jwksUri is fetched while translating and its keys inlined, as istiod does by default; a
    # WasmPlugin's oci:// or http(s):// module is pulled to a local file, as istio-agent does.
    result: dict[str, ProxyConfig] = translate.translate(mesh, jwks=tokens.fetch_jwks, fetch=fetch.fetch)
    return result


def _default_bootstrap(mesh: Mesh, proxy: Proxy, xds_dir: str) -> Json:
    from envoyext.mesh.translate import bootstrap
    result: Json = bootstrap.for_proxy(mesh, proxy, xds_dir)
    return result


class MeshRuntime:
    def __init__(self, mesh: MeshSource, workdir: Path, *, translate: Translate | None = None,
                 bootstrap: Bootstrap | None = None, on_progress: Callable[[str], None] | None = None,
                 tracing: bool | None = None, timeout: float = 60):
        """`mesh` is a Mesh, or a function from an AddressPlan to one (then a free plan is built
        directly; a Mesh whose addresses are taken is moved to a free base). `tracing` starts the
        Zipkin collector (default: when the mesh samples any traces)."""
        self._source = mesh
        self.workdir = Path(workdir)
        self._translate = translate or _default_translate
        self._bootstrap = bootstrap or _default_bootstrap
        self._progress = on_progress or (lambda _msg: None)
        self._tracing = tracing
        self.timeout = timeout
        self.mesh: Mesh | None = None
        self.configs: dict[str, ProxyConfig] = {}
        self.envoys: dict[str, process.EnvoyProcess] = {}
        self.apps: dict[str, subprocess.Popen[bytes]] = {}
        self.zipkin: zipkin.Zipkin | None = None
        self.version = 0
        self.rotators: dict[str, sds.Rotator] = {}
        self._rotation: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> MeshRuntime:
        """Start everything. Another mesh (or anything) may take an address between the check
        that it is free and the bind: then this one stops what it started and tries the next
        free block, up to ADDRESS_TRIES times, rather than failing the run."""
        avoid: set[int] = set()
        for attempt in range(ADDRESS_TRIES):
            with _live_lock:
                _live.add(self)
            try:
                self._start(avoid)
                return self
            except BaseException as e:
                base = self.mesh.plan.base if self.mesh is not None else None
                self.stop()
                if base is None or attempt + 1 == ADDRESS_TRIES or not _address_clash(e):
                    raise
                avoid.add(base)
                self._progress(f"addresses 127.{base}.x.y taken meanwhile ({e}); trying another block")
        raise AssertionError("unreachable")

    def _start(self, avoid: set[int]) -> None:
        self.mesh = mesh = self._place(self._source, avoid=avoid)
        self._progress(f"addresses: 127.{mesh.plan.base}.x.y (pods), {len(mesh.proxies)} proxies")
        self.configs = self._translate(mesh)
        self.version = 1
        # Every proxy's SVID, in its sds/ before its Envoy starts (the translated TLS contexts
        # name those files); renewed at half-life by the rotation thread, no restart.
        self.rotators = sds.provision(mesh, self.workdir, ttl=mesh.config.workload_cert_ttl)
        # Renewal runs from here, not once the mesh is up: starting takes seconds (more on a busy
        # machine), and a short-lived certificate issued above must not expire meanwhile. An Envoy
        # that starts later reads whichever files are newest.
        self._stopping.clear()
        self._rotation = threading.Thread(target=self._rotate_certificates, name="envoyext-cert-rotation",
                                          daemon=True)
        self._rotation.start()
        if self._tracing if self._tracing is not None else mesh.config.tracing_sampling > 0:
            self.zipkin = zipkin.Zipkin(*zipkin.collector_address(mesh.plan)).start()
            self._progress(f"zipkin collector at {self.zipkin.url}")
        for w in mesh.workloads:
            if not w.gateway:
                self._start_app(w)
        envoys = []
        for proxy in mesh.proxies:
            config = self.configs.get(proxy.name)
            if config is None:
                raise UserError(f"the translator made no config for proxy {proxy.name}")
            envoys.append(self._prepare_envoy(proxy, config))
        # Envoys start in parallel (each start() waits for its /ready); two at a time is what two
        # cores take without starving the apps that are starting too.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(self._start_envoy, envoys))  # re-raises the first failure
        for name in self.apps:
            self._wait_app(name)
        for name in self.envoys:
            self._wait_warm(name)
        self._progress(f"mesh up: {len(self.envoys)} proxies, {len(self.apps)} apps")

    def _rotate_certificates(self) -> None:
        """Istio's agent: renew each proxy's certificate once half its lifetime has passed, by
        rewriting its SDS files (Envoy watches them). Polls often enough for lifetimes of seconds."""
        while not self._stopping.wait(ROTATION_POLL):
            try:
                renewed = sds.rotate_due(self.rotators, self.workdir)
            except Exception as e:  # a full disk must not end the mesh silently; say it and keep trying
                self._progress(f"certificate rotation failed: {e}")
                continue
            if renewed:
                self._progress(f"certificates rotated: {', '.join(renewed)}")

    def stop(self) -> None:
        """Stop everything, Envoys first (nothing new reaches the apps), then apps, then Zipkin;
        each step even if an earlier one failed."""
        errors: list[BaseException] = []
        self._stopping.set()
        if self._rotation is not None:
            self._rotation.join(5)
            self._rotation = None
        for envoy in reversed(list(self.envoys.values())):
            try:
                envoy.stop(grace=2)
            except Exception as e:  # keep stopping the rest
                errors.append(e)
        self.envoys.clear()
        for app in self.apps.values():
            if app.poll() is None:
                app.terminate()
        for app in self.apps.values():
            try:
                app.wait(3)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait(3)
        self.apps.clear()
        if self.zipkin is not None:
            self.zipkin.stop()
            self.zipkin = None
        with _live_lock:
            _live.discard(self)
        if errors:
            raise errors[0]

    def __enter__(self) -> MeshRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- updates ------------------------------------------------------------------------------
    def apply(self, new_mesh: MeshSource) -> dict[str, list[str]]:
        """Re-translate and deliver new config to the running Envoys (no restart); return once
        each Envoy reports the new files' versions for lds, cds and its route configs, with its
        listeners warm. Returns, per proxy, which xDS kinds changed."""
        assert self.mesh is not None, "apply() before start()"
        mesh = self._place(new_mesh, self.mesh.plan)
        if sorted(p.name for p in mesh.proxies) != sorted(self.envoys):
            raise UserError("the changed files add or remove workloads; apply changes routing and policy only",
                            fix="stop the mesh and start it again ('envoyext mesh up')")
        configs = self._translate(mesh)
        self.version += 1
        version = str(self.version)
        before: dict[str, tuple[dict[str, bytes], int, int]] = {}
        for proxy in mesh.proxies:
            envoy = self.envoys[proxy.name]
            xds = envoy.workdir / XDS_DIR
            before[proxy.name] = (delivery.snapshot(xds), envoy.log_size(), self._rejected(proxy.name))
            delivery.write(configs[proxy.name], xds, version)
        try:
            for name, (_, log_offset, rejected) in before.items():
                self._wait_caught_up(name, log_offset, rejected)
        except BaseException:
            # Put every proxy's files back to what it ran before, so files and Envoy agree again.
            for name, (files, _, _) in before.items():
                delivery.restore(self.envoys[name].workdir / XDS_DIR, files)
            for name in before:
                try:
                    self._wait_caught_up(name, 0, 1 << 62, timeout=10)
                except UserError:
                    pass
            raise
        self.mesh, self.configs = mesh, configs
        changed = {}
        for name, (files, _, _) in before.items():
            now = delivery.snapshot(self.envoys[name].workdir / XDS_DIR)
            changed[name] = sorted(_kind(rel) for rel in set(files) | set(now) if files.get(rel) != now.get(rel))
        return changed

    # --- access -------------------------------------------------------------------------------
    def admin(self, proxy_name: str) -> Admin:
        envoy = self.envoys.get(proxy_name) or self.envoys.get(self._proxy(proxy_name).name)
        if envoy is None or envoy.admin is None:
            raise UserError(f"proxy {proxy_name} is not running")
        return envoy.admin

    def kill_app(self, pod: str) -> None:
        """A pod's stand-in app killed (SIGKILL), its sidecar left running: the workload fails as a
        crashed container does, and its proxy answers for it (503) until outlier detection ejects it."""
        proc = self.apps.get(self._workload(pod).pod)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self._progress(f"app {pod} killed")

    def app_alive(self, pod: str) -> bool:
        proc = self.apps.get(pod)
        return proc is not None and proc.poll() is None

    def app_control(self, pod: str) -> str:
        """The stand-in app's control endpoint, e.g. http://127.65.0.3:15999."""
        w = self._workload(pod)
        return f"http://{w.app_address}:{APP_CONTROL_PORT}"

    def gateway_url(self, name: str | None = None) -> str:
        """The ingress gateway's first HTTP listener (or gateway `name`'s), e.g. http://127.64.0.1:8080."""
        assert self.mesh is not None
        gateways = [p for p in self.mesh.proxies if p.kind == "router" and (
            p.name == name or p.workload.deployment == name if name else
            p.labels.get("istio") == "ingressgateway")]
        for proxy in gateways:
            for listener in self.configs[proxy.name].listeners:
                sa = listener.get("address", {}).get("socket_address", {})
                if sa.get("port_value"):
                    return f"http://{sa['address']}:{sa['port_value']}"
        raise UserError("no ingress gateway listener in this mesh",
                        fix="use a profile with an ingress gateway (default, demo) and a Gateway resource")

    # --- internals ----------------------------------------------------------------------------
    def _proxy(self, name: str) -> Proxy:
        proxy = self.mesh.proxy(name) if self.mesh else None
        if proxy is None:
            raise UserError(f"no proxy named {name} in this mesh")
        return proxy

    def _workload(self, pod: str) -> Workload:
        for w in self.mesh.workloads if self.mesh else []:
            if pod in (w.pod, w.deployment):
                return w
        raise UserError(f"no workload named {pod} in this mesh")

    def _place(self, source: MeshSource, plan: AddressPlan | None = None, avoid: set[int] | None = None) -> Mesh:
        """The mesh on a free (or the given) address plan. The search starts at a block chosen by
        process id, so meshes started at the same moment by different processes rarely race."""
        start = 16 + 4 * (os.getpid() % 59)
        if isinstance(source, Mesh):
            return readdress(source, plan or free_plan(start, len(source.workloads), avoid))
        if plan is None:
            plan = free_plan(start, len(source(AddressPlan(start)).workloads), avoid)
        return source(plan)

    def _start_app(self, w: Workload) -> None:
        d = self.workdir / w.pod
        d.mkdir(parents=True, exist_ok=True)
        listen = ",".join(f"{w.app_address}:{p}" for p in w.container_ports)
        args = [sys.executable, "-m", "envoyext.mesh.workload", "--pod", w.pod, "--service", w.app,
                "--version", w.version, "--namespace", w.namespace, "--listen", listen,
                "--control", f"{w.app_address}:{APP_CONTROL_PORT}", "--outbound", w.capture_address]
        # The app imports envoyext from wherever this process does (a source checkout, too).
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with open(d / "app.log", "wb") as log:
            self.apps[w.pod] = process.spawn(args, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env)
        self._progress(f"app {w.pod} at {listen}")

    def _prepare_envoy(self, proxy: Proxy, config: ProxyConfig) -> process.EnvoyProcess:
        d = self.workdir / proxy.name
        (d / XDS_DIR).mkdir(parents=True, exist_ok=True)
        delivery.write(config, d / XDS_DIR, str(self.version))
        assert self.mesh is not None
        boot = self._bootstrap(self.mesh, proxy, XDS_DIR)
        (d / "bootstrap.yaml").write_text(yaml.safe_dump(boot, sort_keys=False))
        identity = ProxyIdentity(name=proxy.name, node_id=proxy.node_id, node_cluster=proxy.node_cluster,
                                 listener=_a_listener(config, boot, proxy.name), admin_port=ADMIN_PORT)
        envoy = process.EnvoyProcess(boot, identity=identity, workdir=d, cwd=d, check_config=False,
                                     extra_args=ISTIO_PROXY_ARGS)
        self.envoys[proxy.name] = envoy
        return envoy

    def _start_envoy(self, envoy: process.EnvoyProcess) -> None:
        self._progress(f"envoy {envoy.identity.name} starting")
        envoy.start(timeout=self.timeout)
        self._progress(f"envoy {envoy.identity.name} ready (admin {envoy.admin.url if envoy.admin else '?'})")

    def _wait_app(self, pod: str) -> None:
        url = self.app_control(pod) + "/behaviour"
        deadline = time.monotonic() + self.timeout
        while True:
            if self.apps[pod].poll() is not None:
                log = (self.workdir / pod / "app.log").read_text(errors="replace").strip().splitlines()
                raise UserError(f"the stand-in app of {pod} exited: {log[-1] if log else 'no output'}",
                                file=self.workdir / pod / "app.log")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise UserError(f"the stand-in app of {pod} did not answer within {self.timeout:.0f}s")
            time.sleep(0.05)

    def _wait_warm(self, name: str) -> None:
        deadline = time.monotonic() + self.timeout
        while warming := _warming(self.envoys[name].admin):
            if time.monotonic() > deadline:
                raise UserError(f"proxy {name}: listeners still warming after {self.timeout:.0f}s: {warming}",
                                file=self.envoys[name].log_path)
            time.sleep(0.05)

    def _rejected(self, name: str) -> int:
        admin = self.envoys[name].admin
        return sum(admin.stats(r"update_rejected$").values()) if admin else 0

    def _wait_caught_up(self, name: str, log_offset: int, rejected: int, timeout: float | None = None) -> None:
        envoy = self.envoys[name]
        assert envoy.admin is not None
        xds = envoy.workdir / XDS_DIR
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            stale = delivery.caught_up(delivery.expected_versions(xds),
                                       delivery.reported_versions(envoy.admin.config_dump()))
            if not stale and not _warming(envoy.admin):
                return
            if self._rejected(name) > rejected:
                raise UserError(f"proxy {name} rejected the new config: {_rejection(envoy.log_since(log_offset))}",
                                file=envoy.log_path)
            if time.monotonic() > deadline:
                raise UserError(f"proxy {name} did not take version {self.version} within "
                                f"{self.timeout:.0f}s: {'; '.join(stale) or 'listeners warming'}",
                                file=envoy.log_path)
            time.sleep(0.05)


def _kind(rel: str) -> str:
    """A delivered file's name as apply() reports it: "lds", "cds", "rds:9080", "eds:<cluster>"."""
    sub, _, name = rel.rpartition("/")
    stem = name.removesuffix(".yaml")
    return f"{sub}:{stem}" if sub else stem


def _rejection(log: str) -> str:
    """Envoy's reason for refusing a file update. It logs "Filesystem config update rejected:",
    then the whole offending resource as text proto over many lines, then ": <reason>"."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if "config update rejected" in line]
    if not starts:
        return logs.first_error(log)
    first = lines[starts[-1]]
    for line in lines[starts[-1] + 1:]:
        if line.startswith("["):  # the next log line: the reason was on the first one
            break
        if line.startswith(": "):
            return line[2:].strip()
    return first.split("rejected:", 1)[-1].strip()


def _a_listener(config: ProxyConfig, boot: Json, proxy: str) -> str:
    """A listener the proxy has, for EnvoyProcess's readiness read-back."""
    names = [str(x["name"]) for x in config.listeners if x.get("name")]
    names += [str(x["name"]) for x in boot.get("static_resources", {}).get("listeners", []) if x.get("name")]
    if not names:
        raise UserError(f"proxy {proxy} has no named listener")
    return names[0]


def _warming(admin: Admin | None) -> list[str]:
    """Listeners that have a warming state (waiting for their route configs or clusters)."""
    if admin is None:
        return []
    doc: Json = json.loads(admin.get("/config_dump?resource=dynamic_listeners"))
    return [str(x.get("name")) for x in doc.get("configs", []) if x.get("warming_state")]


# --- addresses ----------------------------------------------------------------------------------
def free_plan(start: int, pods: int, avoid: set[int] | None = None) -> AddressPlan:
    """The first AddressPlan from `start` whose pod IPs and app addresses are all free here (the
    ports every mesh binds: Envoy's admin, the app's control), so two meshes can run at once."""
    for base in [start, *range(start + 4, 253, 4), *range(16, start, 4)]:
        if avoid and base in avoid:
            continue
        plan = AddressPlan(base)
        if all(_bindable(plan.pod_ip(i), ADMIN_PORT) and _bindable(plan.app_address(i), APP_CONTROL_PORT)
               for i in range(pods)):
            return plan
    raise UserError("no free loopback address block for the mesh (127.16-255.x.y all in use)",
                    fix="stop other running meshes")


ADDRESS_TRIES = 4
# The drain flags Istio's pilot-agent starts every proxy with (pkg/envoy/proxy.go): on a listener
# update, connections on the old filter chain are told to close at once (`Connection: close` on
# their next response) rather than over Envoy's default 600 s gradual drain, so a changed route or
# a swapped filter reaches kept-alive clients too.
ISTIO_PROXY_ARGS = ("--drain-time-s", "45", "--drain-strategy", "immediate", "--parent-shutdown-time-s", "60")


def _address_clash(e: BaseException) -> bool:
    """Whether a start failed because an address was taken (by Envoy, an app or the collector)."""
    if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
        return True
    return "address already in use" in str(e).lower()


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def readdress(mesh: Mesh, plan: AddressPlan) -> Mesh:
    """The same mesh on another address plan: every address of the old plan's blocks moved to the
    new one (pods, apps, capture, VIPs); addresses outside them (ServiceEntry hosts) are kept."""
    old = mesh.plan.base
    if plan.base == old:
        return mesh

    def move(address: str | None) -> Any:
        if not address:
            return address
        parts = address.split(".")
        if len(parts) == 4 and parts[0] == "127" and old <= int(parts[1]) <= old + 3:
            parts[1] = str(int(parts[1]) - old + plan.base)
        return ".".join(parts)

    def endpoint(e: Endpoint) -> Endpoint:
        return replace(e, address=move(e.address))

    def service(s: Service) -> Service:
        return replace(s, vip=move(s.vip), static_endpoints=tuple(endpoint(e) for e in s.static_endpoints))

    workloads = {w.pod: replace(w, ip=move(w.ip), app_address=move(w.app_address),
                                capture_address=move(w.capture_address)) for w in mesh.workloads}
    return replace(mesh, plan=plan, services=[service(s) for s in mesh.services],
                   workloads=list(workloads.values()),
                   proxies=[replace(p, workload=workloads.get(p.workload.pod) or replace(
                       p.workload, ip=move(p.workload.ip), app_address=move(p.workload.app_address),
                       capture_address=move(p.workload.capture_address))) for p in mesh.proxies])


def _stop_all() -> None:
    with _live_lock:
        runs = list(_live)
    for run in runs:
        try:
            run.stop()
        except Exception:  # at exit: stop the others regardless
            pass


atexit.register(_stop_all)
