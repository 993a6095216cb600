"""`envoyext run PROJECT --watch`: one Envoy that takes each new build of the filter without a restart.

The bootstrap is the single-filter one `envoyext run` starts (envoy/bootstrap.py), except that its
listener comes from a file through Envoy's file-based LDS (`dynamic_resources.lds_config` with a
`path_config_source` and a `watched_directory`). When the project's sources change, the filter is
rebuilt, the new bootstrap is checked with `envoy --mode validate`, and the listener file is replaced
by a rename (Envoy reloads a file moved into the watched directory, never half of one). Envoy then
updates the listener's filter chain in place: new connections run the new filter, connections in
flight finish on the old one (see DRAIN_ARGS), and the listening socket stays. A Wasm module is copied to a
content-addressed file name first, so a rebuilt module is a changed config (the same path would
read as no change); a Lua script is inline, so its text is the change.

A build or validation that fails is reported in one line and the running filter stays.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from envoyext import tempfiles
from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap, logs, process
from envoyext.envoy.process import EnvoyProcess
from envoyext.errors import EnvoyRejected, UserError
from envoyext.project import Project
from envoyext.scenario import Scenario
from envoyext.upstreams import UpstreamServers

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
POLL_S = 0.5  # how often the sources' contents are hashed
TAKE_S = 30.0  # how long Envoy may take to report the new listener version before we say it did not
# How a swap treats connections already open (kept alive) on the old filter chain. Envoy's default
# drains them gradually over 600 s, so a kept-alive client would run the old filter for minutes;
# `immediate` has the next response on such a connection say `connection: close` (the request in
# flight finishes on the old filter, the client's next one connects to the new), and what is still
# open after a few seconds is closed.
DRAIN_ARGS = ("--drain-strategy", "immediate", "--drain-time-s", "5")

# (project, its built artifact, the scenario that gives clusters and routes), freshly loaded.
Prepare = Callable[[], tuple[Project, Artifact, Scenario]]


@dataclass
class Swap:
    """What one look at the sources did: nothing (unchanged), a swap, or a refusal (with its line)."""
    changed: bool
    swapped: bool
    message: str = ""


def pinned(artifact: Artifact, into: Path) -> Artifact:
    """A Wasm artifact copied to `into/<name>-<sha256 prefix>.wasm`: each build has its own path."""
    if artifact.kind != "wasm":
        return artifact
    digest = hashlib.sha256(artifact.path.read_bytes()).hexdigest()[:16]
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{artifact.name}-{digest}.wasm"
    if not target.exists():
        tmp = tempfiles.temp_beside(target)
        shutil.copyfile(artifact.path, tmp)
        os.replace(tmp, target)
    return replace(artifact, path=target)


def split_listeners(config: dict[str, Any], lds_file: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pure: the bootstrap with its static listeners replaced by file-based LDS from `lds_file`
    (watched through its directory), and those listeners."""
    out = json.loads(json.dumps(config))
    listeners = out["static_resources"].pop("listeners")
    out["dynamic_resources"] = {"lds_config": {
        "path_config_source": {"path": str(lds_file), "watched_directory": {"path": str(lds_file.parent)}},
        "resource_api_version": "V3"}}
    return out, listeners


def discovery_response(version: str, listeners: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version_info": version, "resources": [{"@type": LISTENER_TYPE, **r} for r in listeners]}


def _delivered(lds_file: Path) -> list[dict[str, Any]]:
    """The listeners the LDS file holds, as split_listeners gave them."""
    doc = json.loads(lds_file.read_text())
    return [{k: v for k, v in r.items() if k != "@type"} for r in doc["resources"]]


def _deliver(path: Path, doc: dict[str, Any]) -> None:
    """Write to a temp name beside `path`, then rename over it (Envoy watches for the move)."""
    tempfiles.write_atomically(path, json.dumps(doc, indent=1))


def source_files(project: Project, scenario: Scenario) -> list[Path]:
    """What a rebuild depends on: the sources, headers beside C ones, filter.yaml, the module, the
    scenario file (its routes and config), and Lua scripts named in lua.source_codes."""
    files = [*project.sources, project.file, Path(scenario.path)]
    if project.lang == "c":
        files += sorted(project.root.glob("*.h"))
    if project.module is not None:
        files.append(project.module)
    for named in ((project.lua_options or {}).get("source_codes") or {}).values():
        files.append(Path(named["filename"]))
    return list(dict.fromkeys(files))  # without --scenario the scenario's file is filter.yaml


def fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f).encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"\0missing")
    return h.hexdigest()


class WatchedEnvoy:
    """Upstreams and one Envoy whose listener is file-delivered; `poll()` swaps in new builds.
    Use as a context manager; `envoy` is the running EnvoyProcess inside."""

    def __init__(self, prepare: Prepare, *, echo: Callable[[str], None] = print, concurrency: int = 1):
        self.prepare, self.echo, self.concurrency = prepare, echo, concurrency
        self.project, self.artifact, self.scenario = prepare()
        self.version = 0
        self.workdir = tempfiles.mkdtemp("watch")
        self.xds_dir = self.workdir / "xds"
        self.xds_dir.mkdir()
        self.lds_file = self.xds_dir / "lds.json"
        self.seen = fingerprint(source_files(self.project, self.scenario))
        self._ups: UpstreamServers | None = None
        self.envoy: EnvoyProcess | None = None

    def _config(self, artifact: Artifact, scenario: Scenario) -> dict[str, Any]:
        assert self._ups is not None
        addresses = {name: self._ups.address(name) for name in scenario.all_clusters()}
        return bootstrap.build(pinned(artifact, self.workdir / "modules"), scenario, addresses)

    def __enter__(self) -> WatchedEnvoy:
        try:
            self._ups = UpstreamServers(self.scenario.all_clusters()).__enter__()
            full = self._config(self.artifact, self.scenario)
            _validate(full, self.workdir, self.artifact, self.scenario, self.project)
            config, listeners = split_listeners(full, self.lds_file)
            self.version = 1
            _deliver(self.lds_file, discovery_response(str(self.version), listeners))
            self.envoy = EnvoyProcess(config, concurrency=self.concurrency, check_config=False,
                                      extra_args=DRAIN_ARGS)
            self.envoy.start()  # ready means the initial LDS file was read and its listener is up
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self._ups is not None:
            self._ups.__exit__(None, None, None)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def poll(self) -> Swap:
        """Look at the sources once; on a change rebuild and swap (or report why not)."""
        files = source_files(self.project, self.scenario)
        now = fingerprint(files)
        if now == self.seen:
            return Swap(changed=False, swapped=False)
        self.seen = now
        try:
            project, artifact, scenario = self.prepare()
            if scenario.all_clusters() != self.scenario.all_clusters():
                raise UserError("the scenario's clusters changed", file=scenario.path, field="clusters",
                                fix="restart 'envoyext run --watch' to change upstreams")
            full = self._config(artifact, scenario)
            _, listeners = split_listeners(full, self.lds_file)
            same = listeners == _delivered(self.lds_file)
            if not same:
                _validate(full, self.workdir, artifact, scenario, project)
                self._take(listeners)
        except UserError as e:
            line = f"watch: not swapped, still running the previous filter: {e.one_line()}"
            self.echo(line)
            return Swap(changed=True, swapped=False, message=line)
        self.project, self.artifact, self.scenario = project, artifact, scenario
        self.seen = fingerprint(source_files(project, scenario))  # the new file list, if filter.yaml changed it
        if same:
            # E.g. a comment in C: the same module, so the same listener. Envoy would take the file
            # without taking its version (nothing changed), so nothing is delivered.
            line = f"watch: {project.name} rebuilt; the filter is unchanged, nothing to swap"
            self.echo(line)
            return Swap(changed=True, swapped=False, message=line)
        line = f"watch: {project.name} rebuilt and swapped in (listener version {self.version}), no restart"
        self.echo(line)
        return Swap(changed=True, swapped=True, message=line)

    def _take(self, listeners: list[dict[str, Any]]) -> None:
        """Deliver the listeners as the next version and wait until Envoy reports it (or refused it)."""
        assert self.envoy is not None and self.envoy.admin is not None
        admin = self.envoy.admin
        rejected = admin.stats("listener_manager.lds.update_rejected").get("listener_manager.lds.update_rejected", 0)
        previous = self.lds_file.read_bytes()
        self.version += 1
        log_from = self.envoy.log_size()
        _deliver(self.lds_file, discovery_response(str(self.version), listeners))
        deadline = time.monotonic() + TAKE_S
        while time.monotonic() < deadline:
            if _lds_version(admin.config_dump()) == str(self.version) and not _warming(admin.config_dump()):
                return
            now_rejected = admin.stats("listener_manager.lds.update_rejected").get(
                "listener_manager.lds.update_rejected", 0)
            if now_rejected > rejected:
                break
            time.sleep(0.05)
        # Put back what Envoy runs, so the file keeps saying so.
        self.version -= 1
        _deliver(self.lds_file, json.loads(previous))
        reason = logs.first_error(self.envoy.log_since(log_from)) or "no reason in its log"
        raise UserError(f"Envoy did not take the new listener: {reason}", file=self.envoy.log_path,
                        fix="correct the filter; the previous build keeps running")


def _validate(config: dict[str, Any], workdir: Path, artifact: Artifact, scenario: Scenario,
              project: Project) -> None:
    """`envoy --mode validate`; a refusal names the file and field it is about where Envoy's log
    says (the module, filter.yaml's config), as `envoyext test` does."""
    from envoyext.runners.live import _blame
    try:
        process.validate(config, workdir=workdir)
    except EnvoyRejected as e:
        raise _blame(artifact, scenario, project.file, e) or e from None


def _lds_version(dump: dict[str, Any]) -> str | None:
    for c in dump.get("configs", []):
        if c.get("@type", "").endswith("ListenersConfigDump"):
            return str(c.get("version_info", ""))
    return None


def _warming(dump: dict[str, Any]) -> bool:
    """Whether some listener's new version is still warming (not yet serving)."""
    for c in dump.get("configs", []):
        if c.get("@type", "").endswith("ListenersConfigDump"):
            return any("warming_state" in d for d in c.get("dynamic_listeners", []))
    return False
