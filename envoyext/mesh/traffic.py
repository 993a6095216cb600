"""Requests into a running mesh, the two ways a scenario can send them, and what the apps report.

From outside: straight to the ingress gateway's listener, as a client on the internet would reach
the gateway's Service. From a workload: its stand-in app is told (on its control port, which is
not behind Envoy) to send the request through its own sidecar, so the request leaves the pod the
way an application's would: Host `reviews:9080` to the sidecar's outbound listener.
"""

from __future__ import annotations

import http.client
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


def to_pod(address: str, port: int, rq: Request) -> Sent:
    """One plaintext request straight to a pod, as a client outside the mesh (no sidecar) sends
    it. A connection accepted, then reset or closed without an HTTP response is a reset (None, no
    error): what a STRICT sidecar does to plaintext. Nothing listening is an error, never a reset:
    a refusal must come from the sidecar, not from a wrong address."""
    start = time.monotonic()
    try:
        response = send(address, port, rq)
    except TimeoutError:
        return Sent(None, (time.monotonic() - start) * 1000, f"no response within {rq.timeout_ms} ms")
    except ConnectionRefusedError:
        return Sent(None, (time.monotonic() - start) * 1000, f"nothing listens at {address}:{port}")
    except (ConnectionError, http.client.BadStatusLine):
        return Sent(None, (time.monotonic() - start) * 1000)
    except OSError as e:
        return Sent(None, (time.monotonic() - start) * 1000, f"cannot reach {address}:{port}: {e}")
    return Sent(response, (time.monotonic() - start) * 1000)


def control(base_url: str, path: str, body: Any = None, timeout: float = 60, method: str | None = None) -> Any:
    """A call to a stand-in app's control endpoint: JSON in, JSON out."""
    data = None if body is None else json.dumps(body).encode()
    method = method or ("GET" if data is None else "POST")
    req = urllib.request.Request(base_url + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def from_workload(base_url: str, target: str, rq: Request) -> Sent:
    """Have the app at `base_url` send `rq` to `target` (host:port) through its sidecar."""
    headers: dict[str, str] = {}
    for k, v in rq.headers:  # repeated headers joined, as HTTP allows
        headers[k] = f"{headers[k]},{v}" if k in headers else v
    call = {"to": target, "method": rq.method, "path": rq.target, "headers": headers,
            "body": rq.body.decode("latin-1"), "timeout_ms": rq.timeout_ms}
    start = time.monotonic()
    try:
        got = control(base_url, "/call", call, timeout=rq.timeout_ms / 1000 + 5)
    except OSError as e:
        return Sent(None, (time.monotonic() - start) * 1000, f"the app at {base_url} did not make the call: {e}")
    duration = (time.monotonic() - start) * 1000
    if got.get("error"):
        if "Timeout" in str(got["error"]):
            return Sent(None, duration, f"no response within {rq.timeout_ms} ms")
        if "Disconnected" in str(got["error"]) or "reset" in str(got["error"]).lower():
            return Sent(None, duration)  # the stream was reset: no response
        return Sent(None, duration, str(got["error"]))
    got_headers = [(str(k).lower(), str(v)) for k, v in (got.get("headers") or {}).items()]
    return Sent(Response(int(got["status"]), got_headers, str(got.get("body", "")).encode("latin-1")), duration)


def received(base_url: str, pod: str = "") -> list[Received]:
    """The requests the app has received (its last 1000, oldest first); `proxy` names the pod."""
    return [Received(method=r["method"], path=r["path"], headers=header_list(r.get("headers") or {}),
                     body=str(r.get("body", "")).encode("utf-8"), proxy=pod)
            for r in control(base_url, "/received")["requests"]]


def forget_received(base_url: str) -> None:
    """Empty the app's list of received requests (it keeps only its last 1000)."""
    control(base_url, "/received", method="DELETE")
