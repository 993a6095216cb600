"""The second runtime: the official `envoyproxy/envoy` image under docker compose.

Same interface as `EnvoyProcess` (start/stop, `admin`, `listener`, `log_*`), so the live runner
drives either. The container uses the host network so it reaches the loopback test upstreams
and we reach its listener; the work dir and the artifact's dir are mounted at the same paths,
so the bootstrap needs no rewriting. `compose_file()` is pure and works without Docker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from envoyext.envoy import logs
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.envoy.runtime import EnvoyRuntime
from envoyext.errors import UserError

IMAGE = "envoyproxy/envoy:v1.40.0"
SERVICE = "envoy"


def engine_available() -> bool:
    exe = shutil.which("docker")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                             text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def mounts_for(config: dict, workdir: Path) -> list[Path]:
    """Every local file the bootstrap names (Wasm modules, Lua scripts), by directory."""
    dirs = {workdir.resolve()}

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "filename" and isinstance(v, str):
                    dirs.add(Path(v).resolve().parent)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(config)
    return sorted(dirs)


def compose_file(config: dict, workdir: Path, *, image: str = IMAGE, concurrency: int = 2,
                 identity: ProxyIdentity = TEST_PROXY) -> dict:
    """The docker compose document that runs Envoy with `workdir/envoy.json`."""
    workdir = workdir.resolve()
    volumes = [f"{d}:{d}" + ("" if d == workdir else ":ro") for d in mounts_for(config, workdir)]
    return {
        "services": {SERVICE: {
            "image": image,
            "network_mode": "host",
            "volumes": volumes,
            "command": ["envoy", "-c", f"{workdir}/envoy.json", "--disable-hot-restart",
                        "--concurrency", str(concurrency), "-l", identity.log_level,
                        "--component-log-level", identity.component_log_level,
                        "--log-format", logs.LOG_FORMAT,
                        # A log file is flushed in 64 KiB blocks by default; each case reads its
                        # filter's lines right after the request, so flush every write.
                        "--log-path", f"{workdir}/envoy.log", "--file-flush-min-size-kb", "0",
                        "--admin-address-path", f"{workdir}/admin-address"],
        }},
    }


class DockerEnvoy(EnvoyRuntime):
    """Envoy in a container; a drop-in for EnvoyProcess."""

    temp_kind = "docker"

    def __init__(self, config: dict, *, identity: ProxyIdentity = TEST_PROXY, workdir: Path | None = None,
                 concurrency: int = 2, **_):
        super().__init__(config, identity=identity, workdir=workdir, concurrency=concurrency)
        self.project = f"envoyext-{self.workdir.name.lower().replace('_', '-')}"

    def _compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "compose", "-p", self.project, "-f", str(self.workdir / "compose.yaml"),
                               *args], capture_output=True, text=True, timeout=timeout)

    def start(self, timeout: float = 120) -> None:
        if not engine_available():
            raise UserError("no Docker engine", fix="start Docker, or use --runtime process")
        (self.workdir / "envoy.json").write_text(json.dumps(self.config, indent=1))
        (self.workdir / "compose.yaml").write_text(yaml.safe_dump(
            compose_file(self.config, self.workdir, concurrency=self.concurrency, identity=self.identity),
            sort_keys=False))
        out = self._compose("up", "-d")
        if out.returncode != 0:
            raise UserError(f"docker compose up failed: {out.stderr.strip().splitlines()[-1:]}")
        try:
            self._wait_ready(self.workdir / "admin-address", timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if (self.workdir / "compose.yaml").exists() and shutil.which("docker"):
            self._compose("down", "--timeout", "5")
        self._release_workdir()
