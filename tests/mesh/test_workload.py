"""The stand-in app, as two real processes: B stands in for A's sidecar (A's capture address is B's
address), so A's calls reach B with the Host and headers a sidecar would get."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
import urllib.request

import pytest

from envoyext.envoy import process
from envoyext.mesh.workload import POD_HEADER

A, B = "127.0.0.1", "127.0.0.2"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start(pod: str, host: str, ports: list[int], control: int, outbound: str):
    listen = ",".join(f"{host}:{p}" for p in ports)
    proc = process.spawn([sys.executable, "-m", "envoyext.mesh.workload", "--pod", pod, "--service", pod[:1],
                          "--version", "v1", "--listen", listen, "--control", f"{host}:{control}",
                          "--outbound", outbound], stdout=process.subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == f"ready {pod}"
    return proc


def req(host: str, port: int, method: str = "GET", path: str = "/", body: object = None,
         headers: dict | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers=headers or {})
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(payload)


@pytest.fixture(scope="module")
def apps():
    pa, pb, ca, cb = free_port(A), free_port(B), free_port(A), free_port(B)
    procs = [start("a-0", A, [pa], ca, B), start("b-0", B, [pb, free_port(B)], cb, A)]
    try:
        yield {"a": (pa, ca), "b": (pb, cb)}
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def test_answers_with_who_it_is_and_what_it_got(apps):
    pa, _ = apps["a"]
    status, headers, body = req(A, pa, "POST", "/x?y=1", body={"k": 1}, headers={"End-User": "jason"})
    assert status == 200 and headers[POD_HEADER] == "a-0"
    assert body["pod"] == "a-0" and body["service"] == "a" and body["version"] == "v1"
    assert body["namespace"] == "default" and body["method"] == "POST" and body["path"] == "/x?y=1"
    assert body["headers"]["end-user"] == "jason" and json.loads(body["body"]) == {"k": 1}
    assert body["calls"] == []


def test_calls_go_to_the_capture_address_with_host_and_propagated_headers(apps):
    (pa, ca), (pb, cb) = apps["a"], apps["b"]
    req(B, cb, "DELETE", "/received")
    assert req(A, ca, "POST", "/behaviour", body={"calls": [f"b:{pb}/details/0"]})[0] == 200
    try:
        _, _, body = req(A, pa, headers={"x-request-id": "r1", "x-b3-traceid": "t1", "cookie": "user=x",
                                          "x-not-propagated": "1", "user-agent": "ua"})
    finally:
        req(A, ca, "DELETE", "/behaviour")
    call = body["calls"][0]
    assert call["status"] == 200 and call["to"] == f"b:{pb}" and call["json"]["pod"] == "b-0"
    got = call["json"]["headers"]
    assert got["host"] == f"b:{pb}" and got["x-request-id"] == "r1" and got["x-b3-traceid"] == "t1"
    assert got["cookie"] == "user=x" and got["user-agent"] == "ua" and "x-not-propagated" not in got
    received = req(B, cb, "GET", "/received")[2]
    assert received["count_by_path"] == {"/details/0": 1}


def test_call_endpoint_sends_one_request_through_the_sidecar(apps):
    (_, ca), (pb, _) = apps["a"], apps["b"]
    _, _, r = req(A, ca, "POST", "/call", body={"to": f"b:{pb}", "path": "/p", "method": "PUT",
                                                  "headers": {"end-user": "u"}, "body": "hi"})
    assert r["status"] == 200 and r["headers"][POD_HEADER] == "b-0"
    assert r["json"]["method"] == "PUT" and r["json"]["body"] == "hi" and r["json"]["headers"]["end-user"] == "u"


def test_misbehaves_on_demand(apps):
    pa, ca = apps["a"]
    assert req(A, ca, "POST", "/behaviour", body={"error_rate": 2})[0] == 400
    assert req(A, ca, "POST", "/behaviour", body={"nope": 1})[0] == 400
    try:
        req(A, ca, "POST", "/behaviour", body={"error_rate": 1, "error_status": 502, "latency_ms": 200})
        t0 = time.monotonic()
        status, _, body = req(A, pa)
        assert status == 502 and body["error"] is True and time.monotonic() - t0 >= 0.2
        req(A, ca, "POST", "/behaviour", body={"error_rate": 0, "latency_ms": 0, "reset_rate": 1})
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
            urllib.request.urlopen(f"http://{A}:{pa}/", timeout=5)
    finally:
        req(A, ca, "DELETE", "/behaviour")
    assert req(A, pa)[0] == 200
    assert req(A, ca, "GET", "/behaviour")[2]["behaviour"]["reset_rate"] == 0
