"""build.mesh: Resources to the Mesh (config, services, workloads, proxies, addresses)."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import pytest

from envoyext.errors import UserError
from envoyext.mesh import build, resources
from envoyext.mesh.model import AddressPlan


def _load(tmp_path: Path, text: str, name: str = "m.yaml") -> list:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return resources.load([path])


def deployment(name: str, app: str, version: str = "v1", replicas: int = 1, ns: str = "default",
               port: int = 9080, port_name: str = "") -> str:
    named = f", name: {port_name}" if port_name else ""
    return textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}, namespace: {ns}}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: {app}, version: {version}}}}}
          template:
            metadata: {{labels: {{app: {app}, version: {version}}}}}
            spec:
              containers:
              - name: c
                ports: [{{containerPort: {port}{named}}}]
        """)


OPERATOR = """\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {{name: mesh, namespace: istio-system}}
spec:
  {body}
"""


# --- Bookinfo ---------------------------------------------------------------------------------------

def test_bookinfo_mesh(bookinfo_mesh):
    m = bookinfo_mesh
    assert m.config.profile == "default"
    pods = [w.pod for w in m.workloads]
    assert pods == ["details-v1-0", "productpage-v1-0", "ratings-v1-0", "reviews-v1-0", "reviews-v2-0",
                    "reviews-v3-0", "istio-ingressgateway-0"]
    # Addresses by the stable index: pod i gets 127.64.0.(i+1), app 127.65..., capture 127.66...
    assert [w.ip for w in m.workloads] == [f"127.64.0.{i}" for i in range(1, 8)]
    reviews_v2 = next(w for w in m.workloads if w.pod == "reviews-v2-0")
    assert (reviews_v2.app_address, reviews_v2.capture_address) == ("127.65.0.5", "127.66.0.5")
    assert reviews_v2.labels == {"app": "reviews", "version": "v2"}
    assert reviews_v2.service_account == "bookinfo-reviews" and reviews_v2.container_ports == (9080,)
    assert [(p.name, p.kind) for p in m.proxies][-1] == ("istio-ingressgateway-0", "router")
    assert all(p.kind == "sidecar" for p in m.proxies[:-1])
    hosts = [s.hostname for s in m.services]
    assert hosts == ["details.default.svc.cluster.local", "productpage.default.svc.cluster.local",
                     "ratings.default.svc.cluster.local", "reviews.default.svc.cluster.local",
                     "istio-ingressgateway.istio-system.svc.cluster.local"]
    assert [s.vip for s in m.services] == [f"127.67.0.{i}" for i in range(1, 6)]
    reviews = m.service("reviews")
    assert reviews is not None and reviews.ports[0].protocol == "HTTP" and reviews.ports[0].target_port == 9080
    assert [e.workload for e in m.endpoints(reviews, reviews.ports[0])] == ["reviews-v1-0", "reviews-v2-0",
                                                                            "reviews-v3-0"]
    assert len(m.gateways) == 1 and len(m.virtual_services) == 1 and len(m.destination_rules) == 4
    assert m.sidecars == [] and m.service_entries == []


def test_ingress_gateway_as_istio_installs_it(bookinfo_mesh):
    gw = bookinfo_mesh.proxy("istio-ingressgateway")
    assert gw is not None and gw.kind == "router" and gw.namespace == "istio-system" and gw.workload.gateway
    assert gw.labels == {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    svc = bookinfo_mesh.service("istio-ingressgateway.istio-system")
    assert svc is not None
    assert [(p.port, p.target_port, p.protocol) for p in svc.ports] == [
        (15021, 15021, "HTTP"), (80, 8080, "HTTP2"), (443, 8443, "HTTPS")]
    assert 8080 in gw.workload.container_ports
    assert gw.node_id == "router~127.64.0.7~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local"


def test_same_resources_in_any_order_same_addresses(bookinfo):
    rs = resources.load([bookinfo.platform, bookinfo.gateway])
    a, b = build.mesh(rs), build.mesh(list(reversed(rs)))
    assert [(w.pod, w.ip) for w in a.workloads] == [(w.pod, w.ip) for w in b.workloads]
    assert [(s.hostname, s.vip) for s in a.services] == [(s.hostname, s.vip) for s in b.services]


def test_address_plan_base_moves_every_address(bookinfo):
    m = build.load_mesh([bookinfo.platform], AddressPlan(base=100))
    assert m.workloads[0].ip == "127.100.0.1" and m.workloads[0].app_address == "127.101.0.1"
    assert m.services[0].vip == "127.103.0.1" and m.plan.base == 100


def test_load_mesh_is_load_then_mesh(bookinfo):
    paths = [bookinfo.platform, bookinfo.gateway, bookinfo.destination_rules]
    a, b = build.load_mesh(paths), build.mesh(resources.load(paths))
    assert a.workloads == b.workloads and a.services == b.services and a.config == b.config


# --- workloads ---------------------------------------------------------------------------------------

def test_replicas_and_namespaces_sorted(tmp_path):
    rs = _load(tmp_path, deployment("web", "web", replicas=3, ns="shop") + "---\n" + deployment("api", "api")
               + "---\n" + deployment("zero", "zero", replicas=0))
    m = build.mesh(rs, AddressPlan())
    assert [(w.namespace, w.pod) for w in m.workloads] == [
        ("default", "api-0"), ("istio-system", "istio-ingressgateway-0"),
        ("shop", "web-0"), ("shop", "web-1"), ("shop", "web-2")]
    assert [w.ip for w in m.workloads] == ["127.64.0.1", "127.64.0.2", "127.64.0.3", "127.64.0.4", "127.64.0.5"]
    web = [w for w in m.workloads if w.deployment == "web"]
    assert {w.service_account for w in web} == {"default"} and web[0].app == "web" and web[0].version == "v1"
    assert m.proxy("api") is not None and m.proxy("api").name == "api-0"


# --- services ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("port,name,app,proto,want", [
    (9080, "http", None, "TCP", "HTTP"),
    (9080, "http-web", None, "TCP", "HTTP"),
    (80, "http2", None, "TCP", "HTTP2"),
    (50051, "grpc", None, "TCP", "GRPC"),
    (8080, "grpc-web-x", None, "TCP", "GRPC-Web"),
    (443, "https", None, "TCP", "HTTPS"),
    (443, "tls-passthrough", None, "TCP", "TLS"),
    (5432, "tcp-db", None, "TCP", "TCP"),
    (6379, "redis", None, "TCP", "Redis"),
    (9080, "HTTP", None, "TCP", "HTTP"),                # case-insensitive, as Istio's Parse
    (9080, "web", "http2", "TCP", "HTTP2"),             # appProtocol wins over the name
    (9080, "tcp", "kubernetes.io/h2c", "TCP", "HTTP2"),
    (9080, "", None, "TCP", "HTTP"),                    # unnamed: sniffed in Istio; HTTP here
    (3306, "", None, "TCP", "TCP"),                     # well-known port: never sniffed
    (53, "dns", None, "UDP", "UDP"),
])
def test_protocol_from_app_protocol_or_port_name(port, name, app, proto, want):
    assert build.protocol(port, name, app, proto) == want


def test_service_ports_and_named_target_port(tmp_path):
    rs = _load(tmp_path, deployment("web", "web", port=8000, port_name="web-port") + textwrap.dedent("""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          selector: {app: web}
          ports:
          - {name: http, port: 80, targetPort: web-port}
          - {name: grpc-api, port: 81, targetPort: 9000, appProtocol: grpc}
          - {port: 82}
        """))
    svc = build.mesh(rs).service("web")
    assert svc is not None
    assert [(p.name, p.port, p.target_port, p.protocol) for p in svc.ports] == [
        ("http", 80, 8000, "HTTP"), ("grpc-api", 81, 9000, "GRPC"), ("", 82, 82, "HTTP")]


def test_named_target_port_that_names_nothing_is_one_user_error(tmp_path):
    rs = _load(tmp_path, deployment("web", "web") + textwrap.dedent("""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          selector: {app: web}
          ports: [{name: http, port: 80, targetPort: nope}]
        """))
    with pytest.raises(UserError) as e:
        build.mesh(rs)
    assert "spec.ports[0].targetPort" in str(e.value) and "'nope'" in str(e.value) and "fix:" in str(e.value)


def test_service_entry_one_service_per_host(tmp_path):
    rs = _load(tmp_path, """\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext}
        spec:
          hosts: [api.example.com, www.example.com]
          addresses: [240.0.0.1]
          location: MESH_EXTERNAL
          resolution: STATIC
          ports: [{number: 443, name: https, protocol: TLS}, {number: 80, name: web, protocol: http}]
          endpoints:
          - {address: 127.0.0.10, ports: {https: 8443}, labels: {zone: a}}
          - {address: 127.0.0.11, weight: 3}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: internal, namespace: shop}
        spec:
          hosts: [db.internal]
          location: MESH_INTERNAL
          resolution: DNS
          ports: [{number: 5432, name: tcp}]
        """)
    m = build.mesh(rs)
    api = m.service("api.example.com")
    assert api is not None and api.from_service_entry and api.mesh_external and api.resolution == "STATIC"
    assert api.vip == "240.0.0.1" and api.namespace == "default"
    assert [(p.port, p.protocol) for p in api.ports] == [(443, "TLS"), (80, "HTTP")]
    assert [(e.address, e.port, e.weight) for e in api.static_endpoints] == [
        ("127.0.0.10", 8443, None), ("127.0.0.11", 443, 3)]
    assert m.service("www.example.com") is not None
    db = m.service("db.internal")
    assert db is not None and not db.mesh_external and db.resolution == "DNS" and db.vip is None
    assert len(m.service_entries) == 2


# --- mesh config and profiles -----------------------------------------------------------------------

def test_no_istio_operator_is_the_default_profile(tmp_path):
    m = build.mesh(_load(tmp_path, deployment("a", "a")))
    assert m.config.profile == "default" and m.config.tracing_sampling == 1.0 and m.config.access_log_file == ""
    assert m.config.outbound_traffic_policy == "ALLOW_ANY" and m.config.trust_domain == "cluster.local"
    assert [p.name for p in m.proxies if p.kind == "router"] == ["istio-ingressgateway-0"]


def test_demo_profile_adds_egress_gateway_access_log_and_full_sampling(tmp_path):
    m = build.mesh(_load(tmp_path, OPERATOR.format(body="profile: demo")))
    assert m.config.profile == "demo" and m.config.access_log_file == "/dev/stdout"
    assert m.config.tracing_sampling == 100.0
    routers = {p.name: p.labels for p in m.proxies if p.kind == "router"}
    assert routers == {"istio-egressgateway-0": {"app": "istio-egressgateway", "istio": "egressgateway"},
                       "istio-ingressgateway-0": {"app": "istio-ingressgateway", "istio": "ingressgateway"}}
    egress = m.service("istio-egressgateway.istio-system")
    assert egress is not None and [(p.port, p.target_port) for p in egress.ports] == [(80, 8080), (443, 8443)]


@pytest.mark.parametrize("profile", ["minimal", "empty"])
def test_minimal_and_empty_profiles_have_no_gateways(tmp_path, profile):
    m = build.mesh(_load(tmp_path, OPERATOR.format(body=f"profile: {profile}") + "---\n" + deployment("a", "a")))
    assert [p.kind for p in m.proxies] == ["sidecar"] and [s.name for s in m.services] == []


def test_mesh_config_fields_override_the_profile(tmp_path):
    body = textwrap.indent(textwrap.dedent("""\
        profile: demo
        meshConfig:
          trustDomain: example.org
          accessLogFile: ""
          enableAutoMtls: false
          outboundTrafficPolicy: {mode: REGISTRY_ONLY}
          defaultConfig: {tracing: {sampling: 5.5}}
        """), "  ").strip()
    c = build.mesh(_load(tmp_path, OPERATOR.format(body=body))).config
    assert (c.trust_domain, c.access_log_file, c.enable_auto_mtls, c.outbound_traffic_policy, c.tracing_sampling) \
        == ("example.org", "", False, "REGISTRY_ONLY", 5.5)


def test_secret_ttl_sets_the_workload_certificate_lifetime(tmp_path):
    default = build.mesh(_load(tmp_path, OPERATOR.format(body="profile: demo"))).config
    assert default.workload_cert_ttl == datetime.timedelta(hours=24)
    body = "meshConfig: {defaultConfig: {proxyMetadata: {SECRET_TTL: 1h30m}}}"
    c = build.mesh(_load(tmp_path, OPERATOR.format(body=body))).config
    assert c.workload_cert_ttl == datetime.timedelta(minutes=90)


@pytest.mark.parametrize("ttl", ["soon", "0s", "100d"])
def test_a_bad_secret_ttl_is_one_user_error(tmp_path, ttl):
    body = f"meshConfig: {{defaultConfig: {{proxyMetadata: {{SECRET_TTL: {ttl}}}}}}}"
    with pytest.raises(UserError, match=r"m.yaml: spec.meshConfig.defaultConfig.proxyMetadata.SECRET_TTL: "
                                        r"SECRET_TTL .* is not a lifetime .*fix: write a Go duration"):
        build.mesh(_load(tmp_path, OPERATOR.format(body=body)))


def test_two_istio_operators_are_one_user_error(tmp_path):
    rs = _load(tmp_path, OPERATOR.format(body="profile: demo") + "---\n"
               + OPERATOR.format(body="profile: minimal").replace("name: mesh", "name: other"))
    with pytest.raises(UserError, match=r"second IstioOperator .*fix: keep one IstioOperator"):
        build.mesh(rs)


# --- the official Bookinfo manifests ---------------------------------------------------------------

def test_every_bookinfo_networking_file_loads_with_the_platform(bookinfo):
    """The platform + gateway + destination rules, then each other routing file on top of that, one
    at a time (they reuse names: all-v1, 80-20, jason-v2-v3... each define VirtualService reviews).
    With ENVOYEXT_BOOKINFO set these are Istio's own files, unmodified."""
    assert bookinfo.variants, bookinfo.root
    base = resources.load([bookinfo.platform, bookinfo.gateway, bookinfo.destination_rules])
    kinds = {r.kind for r in base}
    assert {"Service", "ServiceAccount", "Deployment", "Gateway", "VirtualService", "DestinationRule"} <= kinds
    for variant in bookinfo.variants:
        extra = resources.load([variant])
        assert extra, variant
        keys = {r.key for r in extra}
        # `mesh apply` semantics: a variant replaces what it names.
        merged = [r for r in base if r.key not in keys] + extra
        m = build.mesh(merged)
        assert len(m.proxies) == 7, variant
    if bookinfo.official:
        names = {p.name for p in bookinfo.variants}
        assert {"virtual-service-reviews-80-20.yaml", "virtual-service-reviews-jason-v2-v3.yaml",
                "virtual-service-ratings-test-delay.yaml", "virtual-service-ratings-test-abort.yaml",
                "egress-rule-google-apis.yaml"} <= names


def test_variants_together_are_refused_as_duplicates(bookinfo):
    """Negative control for the test above: the variants really do collide, and say so."""
    with pytest.raises(UserError, match=r"duplicate (VirtualService|DestinationRule) default/\w+ .*fix: "):
        resources.load([bookinfo.platform, *bookinfo.variants])


def test_a_gateway_deployment_of_the_profile_name_replaces_the_profile_one(tmp_path):
    """A customised ingress gateway (two replicas) replaces the profile's, and is still a router."""
    rs = _load(tmp_path, deployment("istio-ingressgateway", "istio-ingressgateway", replicas=2,
                                    ns="istio-system", port=8080).replace(
        "{app: istio-ingressgateway, version: v1}", "{app: istio-ingressgateway, istio: ingressgateway}"))
    m = build.mesh(rs)
    assert [(p.name, p.kind) for p in m.proxies] == [("istio-ingressgateway-0", "router"),
                                                     ("istio-ingressgateway-1", "router")]
    assert m.proxies[0].labels == {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    # The profile's Service still selects them.
    svc = m.service("istio-ingressgateway.istio-system")
    assert svc is not None and len(m.endpoints(svc, svc.ports[1])) == 2
