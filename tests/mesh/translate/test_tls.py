"""mTLS translation (reference §4.4, §5, §7): Bookinfo per proxy against golden YAML with mesh-wide
STRICT, PERMISSIVE, and a DISABLE port-level exception; DestinationRule and Gateway TLS modes; and
Envoy itself (`--mode validate`) accepting every variant with real certificate files.

Regenerate after an intended change with `UPDATE_GOLDEN=1` (then review the diff)."""

import datetime
import json
import os
from pathlib import Path

import pytest
import yaml

from envoyext.envoy.process import validate
from envoyext.errors import EnvoyRejected, UserError
from envoyext.mesh.model import Json, Mesh
from envoyext.mesh.render import static_bootstrap
from envoyext.mesh.translate import ProxyConfig, cluster, listener, route, tls
from envoyext.mesh.translate import bootstrap as bootstrap_mod
from tests.mesh.translate.meshes import BOOKINFO, bookinfo, build, resources
from tests.mesh.translate.test_peer_authn import pa

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "mtls"
MESH_STRICT = pa("default", "istio-system", "STRICT")
MESH_PERMISSIVE = pa("default", "istio-system", "PERMISSIVE")
RATINGS_PLAIN = pa("ratings-plain", "default", "UNSET", {"app": "ratings"}, {9080: "DISABLE"})
VARIANTS = {"strict": [MESH_STRICT], "permissive": [MESH_PERMISSIVE],
            "strict-ratings-disable": [MESH_STRICT, RATINGS_PLAIN]}


def secured(mesh: Mesh, xds_dir: str = "xds") -> dict[str, ProxyConfig]:
    """Every proxy's config with the mTLS hooks wired as translate() will wire them."""
    out = {}
    for proxy in mesh.proxies:
        clusters, endpoints = cluster.for_proxy(mesh, proxy, xds_dir, upstream_tls=tls.upstream_tls(mesh))
        listeners = listener.for_proxy(mesh, proxy, xds_dir=xds_dir, inbound_tls=tls.inbound_tls(mesh),
                                       gateway_tls=tls.gateway_listeners)
        routes = route.for_proxy(mesh, proxy) + (tls.gateway_routes(mesh, proxy) if proxy.kind == "router" else [])
        out[proxy.name] = ProxyConfig(proxy=proxy, listeners=listeners, clusters=clusters, routes=routes,
                                      endpoints=tls.endpoint_tls_modes(mesh, endpoints))
    return out


def dump(doc: object) -> str:
    doc = json.loads(json.dumps(doc))   # shared sub-dicts written out in full, not as YAML anchors
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def security_view(config: ProxyConfig) -> Json:
    """What mTLS changes: the inbound listener, TLS listeners, clusters' sockets, endpoint modes."""
    clusters = [{k: c[k] for k in ("name", "transport_socket", "transport_socket_matches") if k in c}
                for c in config.clusters]
    modes = {e["cluster_name"]: sorted({lb.get("metadata", {}).get("filter_metadata", {})
                                        .get("envoy.transport_socket_match", {}).get("tlsMode", "-")
                                        for loc in e["endpoints"] for lb in loc["lb_endpoints"]})
             for e in config.endpoints if e["endpoints"]}
    listeners = [x for x in config.listeners if x["name"] == "virtualInbound" or "listener_filters" in x]
    return {"listeners": listeners, "clusters": clusters, "endpoint_tls_modes": modes}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bookinfo_security_matches_golden(variant):
    configs = secured(bookinfo(None, *VARIANTS[variant]))
    folder = GOLDEN / variant
    for name, config in configs.items():
        got = dump(security_view(config))
        path = folder / f"{name}.yaml"
        if os.environ.get("UPDATE_GOLDEN"):
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(got)
        assert got == path.read_text(), f"{variant}: {name} differs from {path}"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(configs)


def inbound_chains(config: ProxyConfig, port: int) -> list[Json]:
    vi = next(x for x in config.listeners if x["name"] == "virtualInbound")
    return [c for c in vi["filter_chains"] if c["filter_chain_match"].get("destination_port") == port]


def shape(chains: list[Json]) -> list[tuple[str, bool]]:
    return [(c["filter_chain_match"].get("transport_protocol", "-"), "transport_socket" in c) for c in chains]


def test_inbound_chains_per_mode():
    strict = secured(bookinfo(None, MESH_STRICT))["reviews-v1-0"]
    assert shape(inbound_chains(strict, 9080)) == [("tls", True)]
    permissive = secured(bookinfo(None, MESH_PERMISSIVE))["reviews-v1-0"]
    assert shape(inbound_chains(permissive, 9080)) == [("tls", True), ("raw_buffer", False)]
    assert inbound_chains(permissive, 9080)[0]["filter_chain_match"]["application_protocols"] == tls.ALPN_MTLS_HTTP
    mixed = secured(bookinfo(None, MESH_STRICT, RATINGS_PLAIN))
    assert shape(inbound_chains(mixed["ratings-v1-0"], 9080)) == [("raw_buffer", False)]
    assert shape(inbound_chains(mixed["reviews-v1-0"], 9080)) == [("tls", True)]   # control: only ratings
    ctx = inbound_chains(strict, 9080)[0]["transport_socket"]["typed_config"]
    assert ctx["require_client_certificate"] is True
    common = ctx["common_tls_context"]
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_2",
                                    "tls_maximum_protocol_version": "TLSv1_3"}
    assert common["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]
    # without the hook nothing changes: the plaintext chain of issue 10
    plain = listener.for_proxy(bookinfo(None, MESH_STRICT), bookinfo().proxy("reviews-v1-0"))
    assert "listener_filters" not in plain[0] and "transport_socket" not in plain[0]["filter_chains"][0]


def outbound(config: ProxyConfig, name: str) -> Json:
    return next(c for c in config.clusters if c["name"] == name)


def test_auto_mtls_on_in_mesh_clusters_with_the_destination_identities():
    pp = secured(bookinfo("reviews-80-20", MESH_STRICT))["productpage-v1-0"]
    c = outbound(pp, "outbound|9080|v2|reviews.default.svc.cluster.local")
    istio, disabled = c["transport_socket_matches"]
    assert (istio["name"], istio["match"], disabled["name"], disabled["match"]) == (
        "tlsMode-istio", {"tlsMode": "istio"}, "tlsMode-disabled", {})
    up = istio["transport_socket"]["typed_config"]
    assert up["sni"] == "outbound_.9080_.v2_.reviews.default.svc.cluster.local"
    assert up["common_tls_context"]["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    sans = up["common_tls_context"]["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}}]
    secrets = [s["name"] for s in up["common_tls_context"]["tls_certificate_sds_secret_configs"]]
    assert secrets == ["default"]
    assert up["common_tls_context"]["combined_validation_context"]["validation_context_sds_secret_config"][
        "sds_config"]["path_config_source"]["path"] == "sds/ROOTCA.yaml"
    assert "transport_socket_matches" not in outbound(pp, "BlackHoleCluster")   # control


EXTERNAL = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"""


def test_no_auto_mtls_for_mesh_external_or_a_disabled_namespace():
    pp = secured(bookinfo(None, MESH_STRICT, EXTERNAL))["productpage-v1-0"]
    ext = outbound(pp, "outbound|443||api.example.com")
    assert "transport_socket_matches" not in ext and "transport_socket" not in ext
    assert "transport_socket_matches" in outbound(pp, "outbound|9080||reviews.default.svc.cluster.local")
    off = secured(bookinfo(None, pa("default", "istio-system", "DISABLE")))["productpage-v1-0"]
    assert "transport_socket_matches" not in outbound(off, "outbound|9080||reviews.default.svc.cluster.local")


def test_a_disabled_port_marks_its_endpoints_plaintext():
    pp = secured(bookinfo(None, MESH_STRICT, RATINGS_PLAIN), xds_dir="xds")["reviews-v2-0"]
    modes = security_view(pp)["endpoint_tls_modes"]
    assert modes["outbound|9080||ratings.default.svc.cluster.local"] == ["disabled"]
    assert modes["outbound|9080||details.default.svc.cluster.local"] == ["istio"]   # control


def dr(tls_block: str, host: str = "reviews", name: str = "r") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {tls_block}
"""


def without_rules(*docs: str) -> Mesh:
    """Bookinfo without its own DestinationRules (they would win over the test's on a tie)."""
    return build(resources(BOOKINFO / "platform.yaml", BOOKINFO / "gateway.yaml", *docs))


def test_destination_rule_tls_modes():
    host = "outbound|9080||reviews.default.svc.cluster.local"
    off = outbound(secured(without_rules(MESH_STRICT, dr("{mode: DISABLE}")))["productpage-v1-0"], host)
    assert "transport_socket" not in off and "transport_socket_matches" not in off
    mutual = outbound(secured(without_rules(dr("{mode: ISTIO_MUTUAL, sni: my.sni}")))["productpage-v1-0"], host)
    assert mutual["transport_socket"]["typed_config"]["sni"] == "my.sni" and "transport_socket_matches" not in mutual
    simple = outbound(secured(without_rules(dr(
        "{mode: SIMPLE, caCertificates: /certs/ca.pem, subjectAltNames: [reviews.example.com]}")))[
        "productpage-v1-0"], host)["transport_socket"]["typed_config"]
    assert simple["sni"] == "reviews.default.svc.cluster.local"
    assert simple["common_tls_context"] == {"validation_context": {
        "trusted_ca": {"filename": "/certs/ca.pem"},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "reviews.example.com"}}]}}
    two_way = outbound(secured(without_rules(dr(
        "{mode: MUTUAL, clientCertificate: /c/cert.pem, privateKey: /c/key.pem, sni: r.example}")))[
        "productpage-v1-0"], host)["transport_socket"]["typed_config"]
    assert two_way["common_tls_context"]["tls_certificates"] == [
        {"certificate_chain": {"filename": "/c/cert.pem"}, "private_key": {"filename": "/c/key.pem"}}]


def test_mutual_without_a_key_is_one_user_error():
    with pytest.raises(UserError) as e:
        secured(without_rules(dr("{mode: MUTUAL, clientCertificate: /c/cert.pem}")))
    line = e.value.one_line()
    assert "spec.trafficPolicy.tls.privateKey" in line and ".yaml" in line and "fix:" in line


# ---- gateways ----------------------------------------------------------------------------------

def gateway_tls(cert_dir: str | Path, mode: str = "SIMPLE") -> str:
    ca = f", caCertificates: {cert_dir}/root.pem" if mode == "MUTUAL" else ""
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure-gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - hosts: [bookinfo.example.com]
    port: {{number: 443, name: https, protocol: HTTPS}}
    tls: {{mode: {mode}, serverCertificate: {cert_dir}/leaf.pem, privateKey: {cert_dir}/leaf.key{ca}}}
  - hosts: ["*"]
    port: {{number: 15443, name: tls, protocol: TLS}}
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [secure-gw]
  http:
  - route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
  tls:
  - match: [{{sniHosts: [bookinfo.example.com], port: 15443}}]
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
"""


def test_gateway_tls_servers():
    gw = secured(bookinfo(None, gateway_tls("/certs", "MUTUAL")))["istio-ingressgateway-0"]
    https = next(x for x in gw.listeners if x["name"] == "0.0.0.0_8443")
    chain = https["filter_chains"][0]
    assert chain["filter_chain_match"] == {"server_names": ["bookinfo.example.com"]}
    ctx = chain["transport_socket"]["typed_config"]
    assert ctx["require_client_certificate"] is True
    assert ctx["common_tls_context"]["validation_context"] == {"trusted_ca": {"filename": "/certs/root.pem"}}
    assert chain["filters"][0]["typed_config"]["rds"]["route_config_name"] == "https.443.https.secure-gw.default"
    rc = next(r for r in gw.routes if r["name"] == "https.443.https.secure-gw.default")
    assert [v["name"] for v in rc["virtual_hosts"]] == ["bookinfo.example.com:443"]
    passthrough = next(x for x in gw.listeners if x["name"] == "0.0.0.0_15443")
    (pchain,) = passthrough["filter_chains"]
    assert "transport_socket" not in pchain
    assert pchain["filters"][0]["typed_config"]["cluster"] == "outbound|9080||productpage.default.svc.cluster.local"
    simple = secured(bookinfo(None, gateway_tls("/certs")))["istio-ingressgateway-0"]
    ctx = next(x for x in simple.listeners if x["name"] == "0.0.0.0_8443")["filter_chains"][0]["transport_socket"]
    assert "require_client_certificate" not in ctx["typed_config"]   # control: SIMPLE asks for no client cert


def test_gateway_without_a_certificate_is_one_user_error():
    doc = gateway_tls("/certs").replace(", serverCertificate: /certs/leaf.pem", "")
    with pytest.raises(UserError) as e:
        secured(bookinfo(None, doc))
    assert "spec.servers[0].tls.serverCertificate" in e.value.one_line()


# ---- Envoy accepts them ------------------------------------------------------------------------

def make_certs(folder: Path, sa: str = "bookinfo-reviews", ca: Path | None = None) -> None:
    """A throwaway root (or `ca`'s) and a leaf for service account `sa` of namespace default (URI
    SAN spiffe://cluster.local/ns/default/sa/<sa>, DNS SAN bookinfo.example.com), and the two SDS
    files naming them; keys 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key, issuer: str, issuer_key, is_ca: bool, sans: list) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write_key(path: Path, key) -> None:
        path.touch(mode=0o600)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    if ca is None:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = cert("root", root_key, "root", root_key, True, [])
        write_key(folder / "root.key", root_key)
    else:
        root_key = serialization.load_pem_private_key((ca / "root.key").read_bytes(), None)
        root = x509.load_pem_x509_certificate((ca / "root.pem").read_bytes())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("leaf", leaf_key, "root", root_key, False, [
        x509.UniformResourceIdentifier(f"spiffe://cluster.local/ns/default/sa/{sa}"),
        x509.DNSName("bookinfo.example.com")])
    (folder / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key = folder / "leaf.key"
    write_key(key, leaf_key)
    sds = folder / "sds"
    sds.mkdir()
    secret = tls.xds.T + "envoy.extensions.transport_sockets.tls.v3.Secret"
    (sds / "default.yaml").write_text(dump({"resources": [{"@type": secret, "name": "default", "tls_certificate": {
        "certificate_chain": {"filename": str(folder / "leaf.pem")},
        "private_key": {"filename": str(key)}}}]}))
    (sds / "ROOTCA.yaml").write_text(dump({"resources": [{"@type": secret, "name": "ROOTCA", "validation_context": {
        "trusted_ca": {"filename": str(folder / "root.pem")}}}]}))


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    make_certs(folder)
    assert (folder / "leaf.key").stat().st_mode & 0o777 == 0o600
    return folder


def inline_sds(node: object, folder: Path) -> object:
    """The config with every SDS reference replaced by the secret its file holds. `envoy --mode
    validate` checks that an SDS file exists but not what it holds (a secret naming a missing CA
    passes), so this second form is what checks the secrets and the PEM files they name, in the
    contexts that use them."""
    def secret(ref: Json) -> Json:
        doc = yaml.safe_load((folder / ref["sds_config"]["path_config_source"]["path"]).read_text())
        return next(r for r in doc["resources"] if r["name"] == ref["name"])
    if isinstance(node, list):
        return [inline_sds(v, folder) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: inline_sds(v, folder) for k, v in node.items()}
    if "tls_certificate_sds_secret_configs" in out:
        out["tls_certificates"] = [secret(r)["tls_certificate"] for r in out.pop("tls_certificate_sds_secret_configs")]
    combined = out.pop("combined_validation_context", None)
    if combined is not None:
        out["validation_context"] = {**combined.get("default_validation_context", {}),
                                     **secret(combined["validation_context_sds_secret_config"])["validation_context"]}
    return out


def validate_proxy(mesh: Mesh, config: ProxyConfig, folder: Path) -> None:
    boot = bootstrap_mod.for_proxy(mesh, config.proxy, "xds", telemetry=False)
    static = static_bootstrap(boot, config)
    validate(tls.absolute_sds_paths(static, str(folder)))
    validate(inline_sds(static, folder))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_envoy_accepts_each_mode(variant, certs):
    mesh = bookinfo("reviews-80-20", *VARIANTS[variant])
    configs = secured(mesh)
    for name in ("productpage-v1-0", "ratings-v1-0"):
        validate_proxy(mesh, configs[name], certs)


@pytest.mark.parametrize("tls_block", [
    "{mode: ISTIO_MUTUAL}", "{mode: SIMPLE, caCertificates: CERTS/root.pem, subjectAltNames: [bookinfo.example.com]}",
    "{mode: MUTUAL, clientCertificate: CERTS/leaf.pem, privateKey: CERTS/leaf.key, caCertificates: CERTS/root.pem}",
    "{mode: SIMPLE, insecureSkipVerify: true}"])
def test_envoy_accepts_destination_rule_tls(tls_block, certs):
    mesh = without_rules(dr(tls_block.replace("CERTS", str(certs))))
    validate_proxy(mesh, secured(mesh)["productpage-v1-0"], certs)


@pytest.mark.parametrize("mode", ["SIMPLE", "MUTUAL"])
def test_envoy_accepts_gateway_tls(mode, certs):
    mesh = bookinfo(None, gateway_tls(certs, mode))
    validate_proxy(mesh, secured(mesh)["istio-ingressgateway-0"], certs)


def test_validation_reads_the_certificate_files(certs, tmp_path):
    """Negative control: the same gateway naming a certificate file that is not PEM is refused,
    so the checks above are checks of the files too."""
    (tmp_path / "leaf.pem").write_text("not a certificate\n")
    (tmp_path / "leaf.key").write_bytes((certs / "leaf.key").read_bytes())
    mesh = bookinfo(None, gateway_tls(tmp_path))
    with pytest.raises(EnvoyRejected):
        validate_proxy(mesh, secured(mesh)["istio-ingressgateway-0"], certs)


def test_validation_reads_the_sds_files(certs, tmp_path):
    """Negative control: an SDS root file that names a missing CA bundle is refused (in the
    inlined form: Envoy's validate mode alone would pass it)."""
    mesh = bookinfo(None, MESH_STRICT)
    broken = tmp_path / "sds"
    broken.mkdir()
    (broken / "default.yaml").write_text((certs / "sds" / "default.yaml").read_text())
    (broken / "ROOTCA.yaml").write_text((certs / "sds" / "ROOTCA.yaml").read_text().replace("root.pem", "nothing.pem"))
    with pytest.raises(EnvoyRejected):
        validate_proxy(mesh, secured(mesh)["ratings-v1-0"], tmp_path)


def test_tcp_ports_per_mode():
    chain = {"filters": [], "filter_chain_match": {"destination_port": 3306}, "name": "0.0.0.0_3306"}
    strict = tls.inbound_chains("STRICT", chain, "cluster.local", http=False)
    assert shape(strict) == [("tls", True)]
    assert strict[0]["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] == tls.ALPN_SERVER_TCP
    permissive = tls.inbound_chains("PERMISSIVE", chain, "cluster.local", http=False)
    # mTLS by Istio ALPN, plaintext, and other TLS passed through to the app untouched
    assert shape(permissive) == [("tls", True), ("raw_buffer", False), ("tls", False)]
    assert permissive[0]["filter_chain_match"]["application_protocols"] == tls.ALPN_MTLS_TCP
    assert "application_protocols" not in permissive[2]["filter_chain_match"]
    assert chain["filter_chain_match"] == {"destination_port": 3306} and "transport_socket" not in chain  # untouched


def test_endpoint_modes_on_inline_clusters_too():
    """translate() folds endpoints into STATIC clusters; the DISABLE marking works on either form."""
    from envoyext.mesh.translate import inline_endpoints
    mesh = bookinfo(None, MESH_STRICT, RATINGS_PLAIN)
    proxy = mesh.proxy("reviews-v2-0")
    clusters, endpoints = cluster.for_proxy(mesh, proxy, "xds", upstream_tls=tls.upstream_tls(mesh))
    folded = inline_endpoints(ProxyConfig(proxy=proxy, listeners=[], clusters=clusters, routes=[],
                                          endpoints=endpoints)).clusters
    marked = {c["name"]: c for c in tls.endpoint_tls_modes(mesh, folded)}

    def mode(name: str) -> str:
        lb = marked[name]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        return str(lb["metadata"]["filter_metadata"]["envoy.transport_socket_match"]["tlsMode"])
    assert mode("outbound|9080||ratings.default.svc.cluster.local") == "disabled"
    assert mode("outbound|9080||details.default.svc.cluster.local") == "istio"


ORIGINATE = """
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: demo, namespace: istio-system}
spec: {profile: demo}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}, {number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE}
"""


def test_tls_origination_at_the_egress_gateway():
    mesh = build(resources(BOOKINFO / "platform.yaml", ORIGINATE))
    egress = secured(mesh)["istio-egressgateway-0"]
    up = outbound(egress, "outbound|443||api.example.com")["transport_socket"]["typed_config"]
    assert up["@type"].endswith("UpstreamTlsContext") and up["sni"] == "api.example.com"
    plain = outbound(egress, "outbound|80||api.example.com")   # control: the port-level setting is 443's
    assert "transport_socket" not in plain and "transport_socket_matches" not in plain


# ---- one real Envoy: the handshakes the translation asks for ---------------------------------------
# `--mode validate` never opens an SDS file; this runs reviews-v1's translated config for real (its
# SDS files from the proxy directory, as the mesh will) and speaks to its inbound port.

def _app(address: str, port: int):
    """A stand-in app answering 200 on the app address, in a thread."""
    import http.server
    import threading

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:   # answers with the x-forwarded-client-cert it was given
            body = (self.headers.get("x-forwarded-client-cert") or "-").encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass
    server = http.server.ThreadingHTTPServer((address, port), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(address: str, port: int, certs: Path | None, alpn: list[str] | None = None,
         trust: Path | None = None, with_body: bool = False) -> str:
    """The status line answered to a GET, or "refused: …" when the connection is refused, reset or
    closed without an answer. `certs`: speak TLS with that CA's leaf as client certificate,
    trusting `trust`'s root for the server (default: the same CA's)."""
    import socket
    import ssl
    try:
        sock = socket.create_connection((address, port), timeout=10)
        if certs is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations((trust or certs) / "root.pem")
            ctx.load_cert_chain(certs / "leaf.pem", certs / "leaf.key")
            if alpn:
                ctx.set_alpn_protocols(alpn)
            sock = ctx.wrap_socket(sock)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        if not data:
            return "refused: closed"
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode()
        return f"{status} | {body.decode()}" if with_body else status
    except (OSError, ssl.SSLError) as e:
        return f"refused: {type(e).__name__}"


def _placed(*docs: str | Path) -> Mesh:
    """Bookinfo on loopback addresses nobody else holds now (other meshes may be running)."""
    from envoyext.mesh import build as build_mod
    from envoyext.mesh.runtime import free_plan
    loaded = resources(*docs)
    return build_mod.mesh(loaded, free_plan(200, len(build_mod.mesh(loaded).workloads)))


def _envoy(mesh: Mesh, name: str, listener_name: str, sds_home: Path, workdir: Path):
    """A started Envoy on proxy `name`'s translated config, its `sds/` read from `sds_home`."""
    from envoyext.envoy.identity import ProxyIdentity
    from envoyext.envoy.process import EnvoyProcess
    from envoyext.mesh.model import ADMIN_PORT
    proxy = mesh.proxy(name)
    assert proxy is not None
    boot = static_bootstrap(bootstrap_mod.for_proxy(mesh, proxy, "xds", telemetry=False), secured(mesh)[name])
    identity = ProxyIdentity(name=name, node_id=proxy.node_id, node_cluster=proxy.node_cluster,
                             listener=listener_name, admin_port=ADMIN_PORT)
    # check_config=False: validate() would resolve `sds/…` from this process's directory, not Envoy's.
    envoy = EnvoyProcess(boot, identity=identity, workdir=workdir, cwd=sds_home, check_config=False)
    envoy.start()
    return envoy


def _until_answered(ask):
    """Ask until the answer is not a refusal (static listeners warm until their SDS secrets are
    read), a bounded number of times; every answer, in order."""
    answers = [ask()]
    while answers[-1].startswith("refused") and len(answers) < 50:
        answers.append(ask())
    return answers


@pytest.mark.parametrize("variant", ["strict", "permissive"])
def test_real_handshakes_on_the_inbound_port(variant, certs, tmp_path):
    mesh = _placed(BOOKINFO / "platform.yaml", *VARIANTS[variant])
    proxy = mesh.proxy("reviews-v1-0")
    other = tmp_path / "other-ca"
    other.mkdir()
    make_certs(other)
    app = _app(proxy.workload.app_address, 9080)
    envoy = None
    try:
        envoy = _envoy(mesh, "reviews-v1-0", "virtualInbound", certs, tmp_path / "envoy")
        ip = proxy.workload.ip
        answers = _until_answered(lambda: _get(ip, 9080, certs, tls.ALPN_MESH))
        assert answers[-1] == "HTTP/1.1 200 OK", answers   # a mesh peer with a mesh certificate
        plaintext, foreign = _get(ip, 9080, None), _get(ip, 9080, other, tls.ALPN_MESH, trust=certs)
        seen = _get(ip, 9080, certs, tls.ALPN_MESH, with_body=True)
        plain_seen = _get(ip, 9080, None, with_body=True)
    finally:
        if envoy is not None:
            envoy.stop()
        app.shutdown()
        app.server_close()
    # the app learns the caller's identity (x-forwarded-client-cert, as Istio's inbound HCM sets it)
    assert "URI=spiffe://cluster.local/ns/default/sa/bookinfo-reviews" in seen and "By=spiffe://" in seen, seen
    # a client certificate from another CA (the client itself trusts the server: Envoy refuses)
    assert foreign.startswith("refused") and "CertVerification" not in foreign, foreign
    if variant == "strict":
        assert plaintext.startswith("refused"), plaintext
    else:
        assert plaintext == "HTTP/1.1 200 OK"   # control: PERMISSIVE lets the same plaintext client in
        assert plain_seen == "HTTP/1.1 200 OK | -"   # and no identity comes with it


def _get_via(address: str, port: int, host: str) -> str:
    """A plaintext GET with Host `host` through an outbound listener: the status line."""
    import socket
    try:
        with socket.create_connection((address, port), timeout=10) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = sock.recv(4096)
        return data.split(b"\r\n", 1)[0].decode() if data else "refused: closed"
    except OSError as e:
        return f"refused: {type(e).__name__}"


@pytest.mark.parametrize("server_sa", ["bookinfo-reviews", "bookinfo-ratings"])
def test_real_auto_mtls_from_productpage_to_reviews(server_sa, certs, tmp_path):
    """productpage's sidecar (auto-mTLS) → reviews-v1's sidecar (STRICT) → app: 200 when reviews
    presents reviews' SPIFFE identity; 503 when the same CA vouches for another identity (the SAN
    check of the client side holds)."""
    mesh = _placed(BOOKINFO / "platform.yaml", BOOKINFO / "destination-rules.yaml",
                   BOOKINFO / "routing" / "all-v1.yaml", MESH_STRICT)
    reviews, productpage = mesh.proxy("reviews-v1-0"), mesh.proxy("productpage-v1-0")
    server_home = tmp_path / "reviews"
    server_home.mkdir()
    make_certs(server_home, sa=server_sa, ca=certs)
    app = _app(reviews.workload.app_address, 9080)
    started = []
    try:
        started.append(_envoy(mesh, "reviews-v1-0", "virtualInbound", server_home, tmp_path / "e1"))
        started.append(_envoy(mesh, "productpage-v1-0", "0.0.0.0_9080", certs, tmp_path / "e2"))
        # the server side is up and mTLS-only before the client is judged
        assert _until_answered(lambda: _get(reviews.workload.ip, 9080, certs, tls.ALPN_MESH))[-1] == "HTTP/1.1 200 OK"
        answers = _until_answered(lambda: _get_via(productpage.workload.capture_address, 9080, "reviews:9080"))
        san_failures = sum(started[1].admin.stats(r"ssl\.fail_verify_san").values())
    finally:
        for envoy in started:
            envoy.stop()
        app.shutdown()
        app.server_close()
    if server_sa == "bookinfo-reviews":
        assert answers[-1] == "HTTP/1.1 200 OK" and san_failures == 0, (answers, san_failures)
    else:   # refused for the SAN, as Envoy's own counter says
        assert answers[-1] == "HTTP/1.1 503 Service Unavailable" and san_failures > 0, (answers, san_failures)


def test_gateway_pods_are_spoken_to_in_plaintext():
    """Istio's gateway pods carry no tlsMode label: a sidecar reaching the egress gateway's plain
    HTTP server must not start TLS (auto-mTLS picks the raw_buffer socket)."""
    sleep_yaml = Path(__file__).resolve().parent.parent / "testdata" / "egress" / "sleep.yaml"
    mesh = build(resources(BOOKINFO / "platform.yaml", ORIGINATE, sleep_yaml))
    sleep = secured(mesh)["sleep-0"]
    modes = security_view(sleep)["endpoint_tls_modes"]
    assert modes["outbound|80||istio-egressgateway.istio-system.svc.cluster.local"] == ["disabled"]
    assert modes["outbound|9080||reviews.default.svc.cluster.local"] == ["istio"]   # control: sidecars


def test_gateway_istio_mutual_uses_the_mesh_secrets(certs):
    doc = gateway_tls("/unused").replace(
        "tls: {mode: SIMPLE, serverCertificate: /unused/leaf.pem, privateKey: /unused/leaf.key}",
        "tls: {mode: ISTIO_MUTUAL}")
    mesh = bookinfo(None, doc)
    gw = secured(mesh)["istio-ingressgateway-0"]
    ctx = next(x for x in gw.listeners if x["name"] == "0.0.0.0_8443")["filter_chains"][0]["transport_socket"]
    common = ctx["typed_config"]["common_tls_context"]
    assert ctx["typed_config"]["require_client_certificate"] is True
    assert [s["name"] for s in common["tls_certificate_sds_secret_configs"]] == ["default"]
    assert "tls_certificates" not in common
    validate_proxy(mesh, gw, certs)


def test_credential_name_alone_is_one_user_error():
    with pytest.raises(UserError) as e:
        secured(without_rules(dr("{mode: SIMPLE, credentialName: my-secret}")))
    assert "spec.trafficPolicy.tls.credentialName" in e.value.one_line()
    doc = gateway_tls("/certs").replace("serverCertificate: /certs/leaf.pem, privateKey: /certs/leaf.key",
                                        "credentialName: bookinfo-cert")
    with pytest.raises(UserError) as e:
        secured(bookinfo(None, doc))
    assert "credentialName needs a Kubernetes secret store" in e.value.one_line()


def test_validate_refuses_an_sds_path_that_is_not_there(tmp_path):
    """Why render must validate with absolute_sds_paths (and the SDS files written first): the
    relative `sds/…` path is resolved from validate's working directory."""
    mesh = bookinfo(None, MESH_STRICT)
    config = secured(mesh)["ratings-v1-0"]
    static = static_bootstrap(bootstrap_mod.for_proxy(mesh, config.proxy, "xds", telemetry=False), config)
    with pytest.raises(EnvoyRejected) as e:
        validate(tls.absolute_sds_paths(static, str(tmp_path)))   # no sds/ files in tmp_path
    assert "sds/" in e.value.message


def test_envoy_accepts_auto_mtls_to_a_service_without_endpoints(certs):
    """No workload behind a service: no SAN to check, and the context is still one Envoy takes."""
    lonely = """
apiVersion: v1
kind: Service
metadata: {name: lonely}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 9080}]
"""
    mesh = bookinfo(None, MESH_STRICT, lonely)
    pp = secured(mesh)["productpage-v1-0"]
    up = outbound(pp, "outbound|9080||lonely.default.svc.cluster.local")["transport_socket_matches"][0]
    assert up["transport_socket"]["typed_config"]["common_tls_context"]["combined_validation_context"][
        "default_validation_context"] == {}
    validate_proxy(mesh, pp, certs)
