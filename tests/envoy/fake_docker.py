"""A stand-in `docker` for machines with no Docker engine: runs the compose file's one service
command with the real Envoy binary (ENVOYEXT_ENVOY) on the host network, as `docker compose`
would run it in the envoyproxy/envoy image. Only what envoyext.envoy.docker calls is understood."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

args = sys.argv[1:]
if args[:1] == ["info"]:
    print("fake-engine")
    sys.exit(0)
if args[:1] != ["compose"]:
    sys.exit(f"fake docker: unsupported {args}")
compose_file = Path(args[args.index("-f") + 1])
pidfile = compose_file.with_suffix(".pid")
if "up" in args:
    service = yaml.safe_load(compose_file.read_text())["services"]["envoy"]
    assert service["network_mode"] == "host", "the runtime relies on the host network"
    for volume in service["volumes"]:
        host_path = volume.split(":")[0]
        assert Path(host_path).exists(), f"volume source missing: {host_path}"
    command = [os.environ["ENVOYEXT_ENVOY"], *service["command"][1:]]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pidfile.write_text(str(proc.pid))
elif "down" in args and pidfile.exists():
    pid = int(pidfile.read_text())
    pidfile.unlink()

    def running() -> bool:  # an exited Envoy stays a zombie until its adopter reaps it
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2] != "Z"

    if running():
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if running():
            os.kill(pid, signal.SIGKILL)
