"""What every way of running Envoy shares: a work dir, the admin API once ready, the listener
address, the log file, and the context-manager lifecycle. Subclasses start and stop Envoy."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from envoyext import tempfiles
from envoyext.envoy.admin import Admin
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.errors import UserError


class EnvoyRuntime:
    """Use as a context manager; `url`, `admin` and `listener` are ready inside. `identity` says
    which proxy `config` makes (its listener is the one `listener` reads back) and its log levels."""

    temp_kind = "envoy"  # work dirs are envoyext-<kind>-<pid>-*: a killed run's are removed by the next

    def __init__(self, config: dict, *, identity: ProxyIdentity = TEST_PROXY, workdir: Path | None = None,
                 concurrency: int = 2):
        self.config = config
        self.identity = identity
        self._own_tmp = tempfiles.mkdtemp(self.temp_kind) if workdir is None else None
        self.workdir = Path(workdir or self._own_tmp)
        self.concurrency = concurrency
        self.admin: Admin | None = None
        self.listener: tuple[str, int] | None = None
        self.log_path = self.workdir / "envoy.log"
        self._last_log: str | None = None

    def start(self) -> None:
        raise NotImplementedError

    def _check_alive(self) -> None:
        """Raise if Envoy has already exited (while waiting for it to become ready)."""

    def exit_reason(self) -> str | None:
        """How Envoy ended, if it has ended on its own ("Envoy exited (killed by SIGKILL)"); None
        while it runs, and where the runtime cannot tell."""
        return None

    def log_tail(self, lines: int = 10) -> str:
        """The last lines of Envoy's log, joined with " | " (one line, for a case's error)."""
        tail = [line.strip() for line in self.log_text().splitlines() if line.strip()][-lines:]
        return " | ".join(tail) if tail else "(nothing logged)"

    def _wait_ready(self, admin_path: Path, timeout: float) -> None:
        """Envoy writes its admin address (--admin-address-path) early and answers /ready with
        LIVE once every listener is up; then the listener's real port can be asked for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.admin is None and admin_path.exists() and admin_path.read_text().strip():
                self.admin = Admin(admin_path.read_text().strip())
            if self.admin is not None and self.admin.ready():
                self.listener = self.admin.listener_address(self.identity.listener)
                return
            time.sleep(0.02)
        # The log is quoted: a work dir of our own (and the log in it) is removed as Envoy stops.
        raise UserError(f"Envoy did not become ready within {timeout:.0f}s; its log ends: {self.log_tail(5)}",
                        file=self.log_path if self._own_tmp is None else None,
                        fix="see why in its log; a slow machine may need a longer start")

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.listener[0]}:{self.listener[1]}"

    def _release_workdir(self) -> None:
        """Remove a work dir we made, keeping the log readable for callers that still ask."""
        if self._own_tmp is not None:
            self._last_log = self.log_text()
            shutil.rmtree(self._own_tmp, ignore_errors=True)
            self._own_tmp = None

    def log_text(self) -> str:
        if self._last_log is not None:
            return self._last_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
