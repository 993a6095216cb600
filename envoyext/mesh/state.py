"""What a running `envoyext mesh up` leaves in its work directory so that `envoyext mesh apply`, a
separate command, can change it: the resources it runs, what was applied since, and its addresses.

`apply` does what istiod's push does, through files: it re-translates the changed mesh and rewrites
every proxy's xDS files; each Envoy watching them takes the new config without a restart.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from envoyext import tempfiles
from envoyext.errors import UserError

STATE = "state.json"
XDS_DIR = "xds"
APPLY_TIMEOUT_S = 30.0


def save(workdir: Path, *, files: list[Path], base: int) -> None:
    doc = {"pid": os.getpid(), "files": [str(f.resolve()) for f in files], "applied": [], "base": base}
    _write(workdir, doc)


def _write(workdir: Path, doc: dict[str, Any]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    tempfiles.write_atomically(workdir / STATE, json.dumps(doc, indent=1))


def load(workdir: Path) -> dict[str, Any]:
    path = workdir / STATE
    fix = "start one with 'envoyext mesh up -f DIR' (or pass its --workdir)"
    if not path.exists():
        raise UserError("no mesh is running here", file=workdir, fix=fix)
    doc: dict[str, Any] = json.loads(path.read_text())
    if not tempfiles.pid_alive(int(doc["pid"])):
        raise UserError("the mesh that ran here has stopped", file=workdir, fix=fix)
    return doc


def apply(workdir: Path, files: list[Path]) -> str:
    """Apply `files` to the mesh running in `workdir`; returns the config version delivered once
    every proxy reports it."""
    from envoyext.mesh import delivery, fetch
    from envoyext.mesh.overlay import overlay, workload_changes
    from envoyext.mesh.translate import translate
    from envoyext.runners.mesh import build, load_resources

    doc = load(workdir)
    before = load_resources([Path(f) for f in doc["files"] + doc["applied"]])
    after = overlay(before, load_resources(files))
    changed = workload_changes(before, after)
    if changed:
        raise UserError(f"changes workloads ({', '.join(changed)}), which a running mesh cannot take",
                        file=files[0], fix="stop the mesh and run 'envoyext mesh up' with the new files")
    mesh = build(after, int(doc["base"]))
    version = str(time.time_ns())
    configs = translate(mesh, fetch=fetch.fetch)
    for name, config in configs.items():
        delivery.write(config, workdir / name / XDS_DIR, version=version)
    doc["applied"] += [str(f.resolve()) for f in files]
    _write(workdir, doc)
    wait_delivered(mesh, workdir)
    return version


def wait_delivered(mesh: Any, workdir: Path, timeout: float = APPLY_TIMEOUT_S) -> None:
    """Wait until every proxy reports the versions its files now hold (admin /config_dump)."""
    from envoyext.envoy.admin import Admin
    from envoyext.mesh import delivery
    deadline = time.monotonic() + timeout
    pending = {p.name: Admin(f"http://{p.workload.ip}:15000") for p in mesh.proxies}
    behind: dict[str, list[str]] = {}
    while pending:
        for name, admin in list(pending.items()):
            try:
                reported = delivery.reported_versions(admin.config_dump())
            except OSError:
                continue
            behind[name] = delivery.caught_up(delivery.expected_versions(workdir / name / XDS_DIR), reported)
            if not behind[name]:
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise UserError(f"proxies did not take the new config within {timeout:.0f} s: "
                            + "; ".join(f"{n} ({', '.join(behind.get(n, []))})" for n in sorted(pending)),
                            fix="see each proxy's envoy.log in the mesh work directory")
        if pending:
            time.sleep(0.1)
