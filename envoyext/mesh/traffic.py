"""Requests into a running mesh, the two ways a scenario can send them, and what the apps report.

From outside: straight to the ingress gateway's listener, as a client on the internet would reach
the gateway's Service. From a workload: its stand-in app is told (on its control port, which is
not behind Envoy) to send the request through its own sidecar, so the request leaves the pod the
way an application's would: Host `reviews:9080` to the sidecar's outbound listener.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from envoyext.envoy.client import send
from envoyext.messages import Received, Request, Response, header_list

# The header every stand-in app puts on its answers: which pod answered.
POD_HEADER = "x-envoyext-pod"


@dataclass
class Sent:
    response: Response | None
    duration_ms: float
    error: str | None = None


def to_gateway(address: str, port: int, rq: Request) -> Sent:
    """One request to a gateway listener (None response: the stream was reset)."""
    start = time.monotonic()
    try:
        response = send(address, port, rq)
    except TimeoutError:
        return Sent(None, (time.monotonic() - start) * 1000, f"no response within {rq.timeout_ms} ms")
    except OSError as e:
        return Sent(None, (time.monotonic() - start) * 1000, f"cannot reach the gateway at {address}:{port}: {e}")
    return Sent(response, (time.monotonic() - start) * 1000)


def control(base_url: str, path: str, body: Any = None, timeout: float = 60) -> Any:
    """A call to a stand-in app's control endpoint: JSON in, JSON out."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base_url + path, data=data, method="GET" if data is None else "POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def from_workload(base_url: str, target: str, rq: Request) -> Sent:
    """Have the app at `base_url` send `rq` to `target` (host:port) through its sidecar."""
    call = {"to": target, "method": rq.method, "path": rq.target, "headers": [list(h) for h in rq.headers],
            "body": rq.body.decode("latin-1"), "timeout_ms": rq.timeout_ms}
    start = time.monotonic()
    try:
        got = control(base_url, "/call", call, timeout=rq.timeout_ms / 1000 + 5)
    except OSError as e:
        return Sent(None, (time.monotonic() - start) * 1000, f"the app at {base_url} did not make the call: {e}")
    duration = (time.monotonic() - start) * 1000
    if got.get("error"):
        if got.get("reset"):
            return Sent(None, duration)
        return Sent(None, duration, str(got["error"]))
    headers = [(str(k).lower(), str(v)) for k, v in got.get("headers", [])]
    return Sent(Response(int(got["status"]), headers, str(got.get("body", "")).encode("latin-1")), duration)


def received(base_url: str) -> list[Received]:
    """Every request the app has received so far (oldest first)."""
    out = []
    for r in control(base_url, "/received"):
        out.append(Received(method=r["method"], path=r["path"], headers=header_list(dict(r.get("headers") or {}))
                            if isinstance(r.get("headers"), dict) else [(str(k).lower(), str(v)) for k, v in
                                                                         r.get("headers") or []],
                            body=str(r.get("body", "")).encode("latin-1"), proxy=str(r.get("pod", ""))))
    return out
