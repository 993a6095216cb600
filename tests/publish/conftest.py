"""A real OCI registry on loopback for the publish tests: Debian's `docker-registry` (the CNCF
distribution registry, 2.8), started once per session with its storage in a temporary directory,
and killed at the end (and with this process, should it die first: PR_SET_PDEATHSIG).

`make test` installs the package when it is missing; without it the fixture fails and says so
(no skip: the OCI tests are not optional)."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REGISTRY = Path("/usr/bin/docker-registry")
START_TIMEOUT = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start(root: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    config = root / f"config-{port}.yml"
    config.write_text(f"""version: 0.1
log: {{level: warn, accesslog: {{disabled: true}}}}
storage:
  filesystem: {{rootdirectory: {root / "storage"}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{port}
""")
    log = root / f"registry-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(REGISTRY), "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    return proc, log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`127.0.0.1:<port>` of a running registry (plain http, no authentication)."""
    if not REGISTRY.is_file():
        pytest.fail(f"{REGISTRY} is missing: the OCI tests push to a real registry on loopback; `make test` "
                    "installs it (apt-get install docker-registry)", pytrace=False)
    root = tmp_path_factory.mktemp("registry")
    for _attempt in range(3):           # another process may take the free port before the registry binds it
        port = _free_port()
        proc, log = _start(root, port)
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline and not _answers(f"http://127.0.0.1:{port}/v2/"):
            time.sleep(0.1)
        if proc.poll() is None and _answers(f"http://127.0.0.1:{port}/v2/"):
            break
        _stop(proc)
        if "address already in use" not in log.read_text(errors="replace"):
            pytest.fail(f"docker-registry did not start: {log.read_text(errors='replace')[-2000:]}", pytrace=False)
    else:
        pytest.fail("docker-registry found no free port in 3 tries", pytrace=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)
