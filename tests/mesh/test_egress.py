"""Traffic leaving the mesh, against live Envoys: ServiceEntry hosts reached through the sidecar
(STATIC and DNS resolution, REGISTRY_ONLY blocking the rest) and, with the demo profile, through
the egress gateway (Istio's "Egress Gateways" task for HTTP).

The "external" service is a small HTTP server this module runs on 127.0.0.1 (outside every mesh
address block) at a free port; the ServiceEntries' endpoint port 18080 is replaced by that port in
a copy of tests/mesh/testdata/egress. Every check has a negative control: the same observations
judged against a wrong expectation must fail.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from envoyext import scenario, testrun
from envoyext.runners import MESH
from envoyext.runners.mesh import validate
from envoyext.scenario import Scenario

HERE = Path(__file__).parent
SCENARIOS = HERE / "scenarios"
TESTDATA = HERE / "testdata" / "egress"
PLACEHOLDER_PORT = "18080"
MARK = "external-server"


@dataclass(frozen=True)
class Seen:
    client: str                  # the connection's source address: who really connected
    host: str
    path: str
    forwarded_for: str | None


class External:
    """An HTTP server outside the mesh that answers every request and remembers who sent it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        lock = threading.Lock()
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with lock:
                    seen.append(Seen(self.client_address[0], self.headers.get("host", ""), self.path,
                                     self.headers.get("x-forwarded-for")))
                body = json.dumps({"server": MARK, "host": self.headers.get("host"), "path": self.path}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def external() -> Iterator[External]:
    server = External()
    yield server
    server.close()


def at_port(sc: Scenario, port: int, tmp: Path) -> Scenario:
    """The scenario with each egress testdata file swapped for a copy naming the server's port."""
    sc = copy.deepcopy(sc)
    assert sc.mesh is not None

    def swap(p: Path) -> Path:
        if p.resolve().parent != TESTDATA.resolve():
            return p
        out = tmp / p.name
        out.write_text(p.read_text().replace(PLACEHOLDER_PORT, str(port)))
        return out
    sc.mesh.resources = [swap(p) for p in sc.mesh.resources]
    for c in sc.cases:
        c.apply = [swap(p) for p in c.apply]
    return sc


def run(sc: Scenario) -> list[testrun.CaseResult]:
    validate(sc)
    return testrun.run_scenario(None, sc, runners=(MESH,), validated=True)


def _failures(results: list[testrun.CaseResult]) -> dict[str, list[str]]:
    return {r.case: [str(m) for ms in r.failures.values() for m in ms] for r in results if not r.passed}


def _judge_again(sc: Scenario, results: list[testrun.CaseResult], case_name: str, expect: dict) -> list:
    i = next(i for i, c in enumerate(sc.cases) if c.name == case_name)
    wrong = copy.deepcopy(sc.cases[i])
    wrong.expect = expect
    return scenario.check(wrong, results[i].observations[MESH])


@pytest.fixture(scope="module")
def sidecar(external: External, tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, list]:
    sc = at_port(scenario.load(SCENARIOS / "egress-sidecar.yaml"), external.port, tmp_path_factory.mktemp("egress"))
    return sc, run(sc)


@pytest.fixture(scope="module")
def gateway(external: External, tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, list]:
    sc = at_port(scenario.load(SCENARIOS / "egress-gateway.yaml"), external.port, tmp_path_factory.mktemp("egress"))
    return sc, run(sc)


STATIC = "a STATIC ServiceEntry host is reached through the sidecar"
DNS = "a DNS ServiceEntry host is reached through the sidecar"
BLOCKED = "with REGISTRY_ONLY a host outside the registry is blocked"
VIA_GATEWAY = "the external host is reached through the egress gateway"
SCOPED = "a Sidecar naming only the external host still reaches it through the egress gateway"
OUT_OF_SCOPE = "a host the Sidecar leaves out is blocked"


def test_service_entry_hosts_leave_through_the_sidecar(sidecar, external):
    sc, results = sidecar
    assert _failures(results) == {}
    # The external server got exactly the requests, straight from the sidecar (no edge proxy
    # appended x-forwarded-for), with the ServiceEntry host as Host.
    for path, host in (("/static", "api.external.test"), ("/dns", "dns.external.test")):
        seen = external.paths(path)
        assert len(seen) == 5 and all(s.host.split(":")[0] == host and s.forwarded_for is None for s in seen), seen
    assert external.paths("/blocked") == []


@pytest.mark.parametrize("case_name,wrong", [
    (STATIC, {"statuses": {502: 5}}),
    (STATIC, {"stats": {"cluster.outbound|80||dns.external.test.upstream_rq_200": 5}}),
    (DNS, {"stats": {"cluster.outbound|80||dns.external.test.upstream_rq_200": 4}}),
    (BLOCKED, {"statuses": {200: 3}}),
    (BLOCKED, {"body_contains": MARK}),
])
def test_sidecar_negative_controls(sidecar, case_name, wrong):
    sc, results = sidecar
    assert _judge_again(sc, results, case_name, wrong), f"{case_name}: a wrong expectation passed"


def test_egress_gateway_carries_the_external_host(gateway, external):
    sc, results = gateway
    assert _failures(results) == {}
    obs = results[0].observations[MESH]
    # The egress gateway's own stats moved: its listener and its cluster to the external host.
    egw = obs.other_stats.get("istio-egressgateway-0", {})
    assert egw.get("cluster.outbound|80||api.external.test.upstream_rq_200") == 5, egw
    assert egw.get("http.outbound_0.0.0.0_8080.downstream_rq_2xx") == 5, egw
    # The sender's sidecar never went to the external host itself.
    assert not any("api.external.test" in k for k in obs.stats), obs.stats
    # The server saw the gateway connect (an edge proxy: it appended the sidecar's address).
    seen = external.paths("/through-the-gateway")
    assert len(seen) == 5 and all(s.forwarded_for for s in seen), seen
    assert len({s.client for s in seen}) == 1 and seen[0].client not in seen[0].forwarded_for


@pytest.mark.parametrize("wrong", [
    {"stats": {"cluster.outbound|80||api.external.test.upstream_rq_200": 5}},   # direct, not via the gateway
    {"prometheus": {"istio_requests_total": [
        {"labels": {"reporter": "source", "source_workload": "istio-egressgateway", "response_code": "502"},
         "value": 5}]}},
    {"statuses": {502: 5}},
])
def test_egress_gateway_negative_controls(gateway, wrong):
    sc, results = gateway
    assert _judge_again(sc, results, VIA_GATEWAY, wrong), "a wrong expectation passed"


@pytest.fixture(scope="module")
def scoped(external: External, tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, list]:
    sc = at_port(scenario.load(SCENARIOS / "egress-sidecar-scope.yaml"), external.port,
                 tmp_path_factory.mktemp("egress"))
    return sc, run(sc)


def test_sidecar_scope_keeps_the_gateway_route_and_blocks_the_rest(scoped, external):
    sc, results = scoped
    assert _failures(results) == {}
    assert len(external.paths("/scoped")) == 3 and external.paths("/out-of-scope") == []
    assert _judge_again(sc, results, OUT_OF_SCOPE, {"statuses": {200: 1}})
    assert _judge_again(sc, results, SCOPED, {"statuses": {502: 3}})
