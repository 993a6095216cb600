"""Traffic leaving the mesh, as translated: ServiceEntry hosts on the sidecar (STATIC and DNS
clusters, the host's virtual host, block_all under REGISTRY_ONLY) and Istio's egress-gateway task
(sidecar → egress gateway subset → external host), against golden YAML; Envoy accepting each
proxy's config; and the gateway port rules (pilot `resolvePorts`) with negative controls.

Regenerate after an intended change with `UPDATE_GOLDEN=1` (then review the diff)."""

import os
from pathlib import Path

import pytest

from envoyext.envoy import xds
from envoyext.envoy.process import validate
from envoyext.mesh.model import MeshConfig
from envoyext.mesh.translate import translate
from tests.mesh.translate.meshes import build, resources
from tests.mesh.translate.test_translate_golden import dump, static_config

EGRESS = Path(__file__).resolve().parent.parent / "testdata" / "egress"
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "egress"
FILES = ["demo-registry-only", "sleep", "external-static", "external-dns", "egress-gateway"]
GW_CLUSTER = "outbound|80|external-api|istio-egressgateway.istio-system.svc.cluster.local"


def egress_mesh(*names: str):
    return build(resources(*(EGRESS / f"{n}.yaml" for n in names or FILES)))


def test_egress_translation_matches_golden():
    configs = translate(egress_mesh(), telemetry=False)
    assert sorted(configs) == ["istio-egressgateway-0", "istio-ingressgateway-0", "sleep-0"]
    for name, config in configs.items():
        got = dump({"listeners": config.listeners, "routes": config.routes, "clusters": config.clusters})
        path = GOLDEN / f"{name}.yaml"
        if os.environ.get("UPDATE_GOLDEN"):
            GOLDEN.mkdir(parents=True, exist_ok=True)
            path.write_text(got)
        assert got == path.read_text(), f"{name} differs from {path}"
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(configs)


@pytest.mark.parametrize("proxy", ["sleep-0", "istio-egressgateway-0"])
def test_envoy_accepts_the_egress_configs(proxy):
    validate(static_config(translate(egress_mesh(), telemetry=False)[proxy]))


def test_envoy_validation_checks_the_service_entry_cluster():
    """Negative control: the DNS cluster with a lookup family Envoy does not have is refused."""
    from envoyext.errors import EnvoyRejected
    config = static_config(translate(egress_mesh(), telemetry=False)["sleep-0"])
    dns = next(c for c in config["static_resources"]["clusters"] if c["name"] == "outbound|80||dns.external.test")
    dns["dns_lookup_family"] = "V5_ONLY"
    with pytest.raises(EnvoyRejected):
        validate(config)


def _vhost(config, route_name: str, name: str) -> dict:
    rc = next(r for r in config.routes if r["name"] == route_name)
    return next(v for v in rc["virtual_hosts"] if v["name"] == name)


def test_service_entries_on_the_sidecar():
    sleep = translate(egress_mesh("registry-only", "sleep", "external-static", "external-dns"),
                      telemetry=False)["sleep-0"]
    clusters = {c["name"]: c for c in sleep.clusters}
    static, dns = clusters["outbound|80||api.external.test"], clusters["outbound|80||dns.external.test"]
    assert static["type"] == "STATIC" and static["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    assert dns["type"] == "STRICT_DNS" and dns["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"] == {"address": "localhost", "port_value": 18080}
    vh = _vhost(sleep, "80", "api.external.test:80")
    assert vh["domains"] == ["api.external.test", "api.external.test:80"]
    assert vh["routes"][0]["route"]["cluster"] == "outbound|80||api.external.test"
    rc = next(r for r in sleep.routes if r["name"] == "80")
    assert rc["virtual_hosts"][-1]["routes"][0]["direct_response"] == {"status": 502}
    # negative control: with ALLOW_ANY the last virtual host passes through instead
    allow = build(resources(*(EGRESS / f"{n}.yaml" for n in ("sleep", "external-static"))),
                  MeshConfig(outbound_traffic_policy="ALLOW_ANY"))
    rc = next(r for r in translate(allow, telemetry=False)["sleep-0"].routes if r["name"] == "80")
    assert rc["virtual_hosts"][-1]["name"] == "allow_any"


def test_egress_gateway_task():
    configs = translate(egress_mesh(), telemetry=False)
    sidecar_route = _vhost(configs["sleep-0"], "80", "api.external.test:80")["routes"]
    assert [r["route"]["cluster"] for r in sidecar_route] == [GW_CLUSTER]
    assert GW_CLUSTER in {c["name"] for c in configs["sleep-0"].clusters}
    gw = configs["istio-egressgateway-0"]
    # The Gateway's port 80 is the egress gateway Service's port: it listens on its targetPort.
    listener = xds.listener_named({"static_resources": {"listeners": gw.listeners}}, "0.0.0.0_8080")
    assert listener["address"]["socket_address"]["port_value"] == 8080
    assert [r["route"]["cluster"] for r in _vhost(gw, "http.8080", "api.external.test:80")["routes"]] == [
        "outbound|80||api.external.test"]


GATEWAY_PORTS = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: egressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}
  - {port: {number: 9000, name: http-other, protocol: HTTP}, hosts: [a.example.com]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
  - match: [{port: %d}]
    route: [{destination: {host: a.example.com, port: {number: 80}}}]
"""


@pytest.mark.parametrize("match_port,listeners", [
    (80, {"http.8080": 1, "http.9000": 0}),     # the server port matches, on the listener it resolved to
    (8080, {"http.8080": 0, "http.9000": 0}),   # negative control: the targetPort is not a server port
    (9000, {"http.8080": 0, "http.9000": 1}),   # no Service port 9000: listened on as written
])
def test_gateway_server_ports_resolve_to_target_ports(match_port, listeners):
    mesh = build(resources(EGRESS / "demo-registry-only.yaml", EGRESS / "external-static.yaml",
                           GATEWAY_PORTS % match_port))
    gw = translate(mesh, telemetry=False)["istio-egressgateway-0"]
    assert sorted(lst["name"] for lst in gw.listeners) == ["0.0.0.0_8080", "0.0.0.0_9000"]
    got = {rc["name"]: sum(len(v["routes"]) for v in rc["virtual_hosts"] if v["name"].startswith("a."))
           for rc in gw.routes}
    assert got == listeners


def _outbound(config) -> list[str]:
    return sorted(c["name"] for c in config.clusters if c["name"].startswith("outbound|"))


def test_sidecar_egress_hosts_narrow_clusters_and_bring_in_virtual_service_destinations():
    scoped = translate(egress_mesh(*FILES, "sidecar-external-only"), telemetry=False)["sleep-0"]
    # (the gateway's port 443 stays out: the VirtualService names its port 80 only)
    assert _outbound(scoped) == [
        GW_CLUSTER,
        "outbound|80||api.external.test",
        "outbound|80||istio-egressgateway.istio-system.svc.cluster.local"]
    rc = next(r for r in scoped.routes if r["name"] == "80")
    assert [v["name"] for v in rc["virtual_hosts"]] == [
        "istio-egressgateway.istio-system.svc.cluster.local:80", "api.external.test:80", "block_all"]
    # the same Sidecar without the gateway's VirtualService: only the host it names is in view
    direct = translate(egress_mesh("demo-registry-only", "sleep", "external-static", "external-dns",
                                   "sidecar-external-only"), telemetry=False)["sleep-0"]
    assert _outbound(direct) == ["outbound|80||api.external.test"]
    # negative control: no Sidecar, everything exported is in view
    assert "outbound|80||dns.external.test" in _outbound(translate(egress_mesh(), telemetry=False)["sleep-0"])


def test_every_routed_cluster_exists_with_a_sidecar_scope():
    from tests.mesh.translate.test_translate_golden import referenced_clusters
    for name, config in translate(egress_mesh(*FILES, "sidecar-external-only"), telemetry=False).items():
        missing = referenced_clusters(config) - {c["name"] for c in config.clusters}
        assert not missing, f"{name}: {sorted(missing)}"


SERVICE_ENTRY_FORMS = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: round-robin}
spec:
  hosts: [rr.external.test]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough}
spec:
  hosts: [any.external.test]
  addresses: [192.0.2.10]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: internal}
spec:
  hosts: [sleep.internal.test]
  location: MESH_INTERNAL
  ports: [{number: 8000, name: http, protocol: HTTP, targetPort: 80}]
  resolution: STATIC
  workloadSelector: {labels: {app: sleep}}
"""


def test_service_entry_forms():
    mesh = build(resources(EGRESS / "sleep.yaml", SERVICE_ENTRY_FORMS))
    config = translate(mesh, telemetry=False)["sleep-0"]
    clusters = {c["name"]: c for c in config.clusters}
    rr = clusters["outbound|8000||rr.external.test"]
    # DNS_ROUND_ROBIN without endpoints: Envoy resolves the host itself, one address at a time.
    assert rr["type"] == "LOGICAL_DNS" and rr["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"] == {"address": "rr.external.test", "port_value": 8000}
    assert clusters["outbound|8000||any.external.test"]["type"] == "ORIGINAL_DST"
    # MESH_INTERNAL selecting mesh pods: the pod at its targetPort, with Istio's workload metadata.
    [ep] = clusters["outbound|8000||sleep.internal.test"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    sleep = mesh.proxy("sleep-0")
    assert sleep is not None
    assert ep["endpoint"]["address"]["socket_address"] == {"address": sleep.workload.ip, "port_value": 80}
    assert ep["metadata"]["filter_metadata"]["istio"]["workload"].startswith("sleep;default;sleep;")
    vh = _vhost(config, "8000", "any.external.test:8000")
    assert "192.0.2.10" in vh["domains"] and "192.0.2.10:8000" in vh["domains"]
    validate(static_config(config))
