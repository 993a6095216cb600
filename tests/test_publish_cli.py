"""`envoyext publish`: every library filter (filters/*/{lua,c}) published as a cluster would get
it, and the written file accepted by envoyext.mesh.resources, which checks it against Istio's CRD
schema of its kind and version, as for a user's files; the other targets (Envoy Gateway, plain Envoy,
Wasm fetched by URL, per-route configs) from the command line. Controls: a resource the schema or
Istio's analyzers refuse is one line with exit code 2 and nothing is written; bad options likewise."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from envoyext.cli import main
from envoyext.mesh import resources

ROOT = Path(__file__).resolve().parents[1]
FILTERS = sorted(p.parent for p in (ROOT / "filters").glob("*/*/filter.yaml"))


def publish(*args: str) -> tuple[int, str]:
    """Exit code and what was printed (stdout and stderr, as a terminal shows them)."""
    r = CliRunner().invoke(main, ["publish", *args])
    return r.exit_code, r.output


def published(*args: str) -> tuple[str, str]:
    """A publish that must succeed: (stdout, stderr)."""
    r = CliRunner().invoke(main, ["publish", *args])
    assert r.exit_code == 0, r.output
    return r.stdout, r.stderr


@pytest.fixture
def project(tmp_path):
    def copy(src: Path) -> Path:
        dest = tmp_path / src.parent.name / src.name
        if not dest.parent.exists():   # a filter's lua and c projects share one copy
            shutil.copytree(src.parent, dest.parent, ignore=shutil.ignore_patterns("build", "__pycache__"))
        return dest
    return copy


@pytest.mark.parametrize("filter_dir", FILTERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_every_library_filter_publishes_a_valid_resource(filter_dir, project, tmp_path):
    out = tmp_path / "published.yaml"
    code, output = publish(str(project(filter_dir)), "-o", str(out), "--selector", "app=reviews",
                           "--namespace", "bookinfo")
    assert code == 0, output
    [res] = resources.load([out])
    want = "WasmPlugin" if filter_dir.name == "c" else "EnvoyFilter"
    assert (res.kind, res.namespace) == (want, "bookinfo")
    selector = res.spec.get("selector", {}).get("matchLabels") or res.spec["workloadSelector"]["labels"]
    assert selector == {"app": "reviews"}


def test_wasm_as_envoyfilter_and_phase(project, tmp_path):
    cors = str(project(ROOT / "filters" / "cors" / "c"))
    out, err = published(cors, "--as", "envoyfilter")
    doc = yaml.safe_load(out)
    assert doc["kind"] == "EnvoyFilter" and doc["spec"]["priority"] == 10    # non-zero: Istio's IST0151
    code = doc["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]
    assert "local" in code and "vm_config.code.local" in err and "--url" in err   # said, on stderr
    out, _ = published(cors, "--phase", "AUTHZ", "--priority", "10")
    doc = yaml.safe_load(out)
    assert (doc["spec"]["phase"], doc["spec"]["priority"]) == ("AUTHZ", 10)


def test_wasm_envoyfilter_fetches_the_module_by_url(project):
    cors = project(ROOT / "filters" / "cors" / "c")
    out, err = published(str(cors), "--as", "envoyfilter", "--url", "https://filters.example.com/v1/cors.wasm",
                         "--context", "GATEWAY", "--target-ref", "Gateway/bookinfo-gateway")
    assert err == ""
    doc = yaml.safe_load(out)
    spec = doc["spec"]
    assert spec["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "bookinfo-gateway"}]
    insert, cluster = spec["configPatches"]
    remote = insert["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]["remote"]
    wasm = (cors / "build" / "cors.wasm").read_bytes()
    assert remote["sha256"] == hashlib.sha256(wasm).hexdigest()
    assert remote["http_uri"]["uri"] == "https://filters.example.com/v1/cors.wasm"
    assert (cluster["applyTo"], cluster["patch"]["operation"]) == ("CLUSTER", "ADD")
    value = cluster["patch"]["value"]
    assert value["name"] == remote["http_uri"]["cluster"] == "envoyext_wasm_filters.example.com_443"
    assert value["transport_socket"]["typed_config"]["sni"] == "filters.example.com"


def test_wasmplugin_target_refs_ports_and_pull_policy(project):
    cors = str(project(ROOT / "filters" / "cors" / "c"))
    out, err = published(cors, "--target-ref", "Service/reviews", "--port", "9080", "--port", "9443",
                         "--image-pull-policy", "Always", "--url", "oci://registry.example.com/cors:v1")
    spec = yaml.safe_load(out)["spec"]
    assert spec["targetRefs"] == [{"group": "", "kind": "Service", "name": "reviews"}] and "selector" not in spec
    assert spec["match"] == [{"mode": "SERVER", "ports": [{"number": 9080}, {"number": 9443}]}]
    assert (spec["url"], spec["imagePullPolicy"]) == ("oci://registry.example.com/cors:v1", "Always")
    assert "sidecars ignore it" in err and "file" not in err   # Istio: targetRefs reach gateways, waypoints
    out, err = published(cors)
    assert yaml.safe_load(out)["spec"]["url"].startswith("file://") and "file" in err


def test_envoy_gateway_policy_for_lua_and_wasm(project):
    out, _ = published(str(project(ROOT / "filters" / "cors" / "lua")), "--as", "envoy-gateway",
                       "--target-ref", "eg", "--namespace", "edge")
    doc = yaml.safe_load(out)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["namespace"]) == \
        ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy", "edge")
    assert doc["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}]
    [lua] = doc["spec"]["lua"]
    assert lua["type"] == "Inline" and lua["inline"].startswith("envoyext_config = ")
    cors = project(ROOT / "filters" / "cors" / "c")
    out, _ = published(str(cors), "--as", "envoy-gateway", "--target-ref", "HTTPRoute/backend",
                       "--url", "https://filters.example.com/cors.wasm", "--image-pull-policy", "IfNotPresent")
    [wasm] = yaml.safe_load(out)["spec"]["wasm"]
    assert wasm["code"] == {"type": "HTTP", "pullPolicy": "IfNotPresent", "http": {
        "url": "https://filters.example.com/cors.wasm",
        "sha256": hashlib.sha256((cors / "build" / "cors.wasm").read_bytes()).hexdigest()}}
    assert (wasm["rootID"], wasm["failOpen"], wasm["config"]["max_age"]) == ("cors", False, 86400)
    digest = "a" * 64
    out, _ = published(str(cors), "--as", "envoy-gateway", "--target-ref", "eg",
                       "--url", f"oci://registry.example.com/cors@sha256:{digest}")
    [wasm] = yaml.safe_load(out)["spec"]["wasm"]
    assert wasm["code"] == {"type": "Image", "image": {"url": f"oci://registry.example.com/cors@sha256:{digest}",
                                                       "sha256": digest}}


def test_plain_envoy_entry_is_what_envoy_validates(project):
    out, _ = published(str(project(ROOT / "filters" / "cors" / "lua")), "--as", "envoy")
    assert out.startswith("# envoyext publish --as envoy")
    doc = yaml.safe_load(out)
    assert list(doc) == ["http_filters"] and doc["http_filters"][0]["name"] == "cors"
    out, _ = published(str(project(ROOT / "filters" / "cors" / "c")), "--as", "envoy",
                       "--url", "https://filters.example.com/cors.wasm")
    doc = yaml.safe_load(out)
    assert [c["name"] for c in doc["clusters"]] == ["envoyext_wasm_filters.example.com_443"]


ROUTES = """\
routes:
  - name: health
    match: {prefix: /healthz}
    per_filter_config: {disabled: true}
  - name: rest
    match: {prefix: /}
cases: [{name: x}]
"""


def test_per_route_configs_become_http_route_patches(project, tmp_path):
    cors = project(ROOT / "filters" / "cors" / "lua")
    scenario = tmp_path / "routes.yaml"
    scenario.write_text(ROUTES)
    out, _ = published(str(cors), "--routes-from", str(scenario), "--context", "GATEWAY")
    patches = yaml.safe_load(out)["spec"]["configPatches"]
    assert [p["applyTo"] for p in patches] == ["HTTP_FILTER", "HTTP_ROUTE"]
    route = patches[1]
    assert route["match"] == {"context": "GATEWAY", "routeConfiguration": {"vhost": {"route": {"name": "health"}}}}
    assert route["patch"] == {"operation": "MERGE", "value": {"typed_per_filter_config": {"cors": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "disabled": True}}}}


@pytest.mark.parametrize("args, where", [
    (["--namespace", "Not_A_Namespace"], "namespace"),   # the schema check: refused, not written
    (["--selector", "app"], "--selector"),
    (["--as", "wasmplugin"], "--as"),                    # a Lua filter
    (["--priority", "0"], "IST0151"),                    # Istio's analyzer: a relative operation, no priority
    (["--target-ref", "Service/"], "--target-ref"),
    (["--target-ref", "eg", "--selector", "app=x"], "--target-ref"),
    (["--target-ref", "HTTPRoute/x"], "--target-ref"),   # not an Istio target
    (["--as", "envoy-gateway"], "--target-ref"),         # required there
    (["--as", "envoy-gateway", "--target-ref", "Service/x"], "--target-ref"),
    (["--url", "https://example.com/x.wasm"], "--url"),  # a Lua filter has no module
    (["--as", "envoy", "--routes-from", "ROUTES"], "--routes-from"),   # per-route configs: EnvoyFilter only
    (["--as", "envoy-gateway", "--selector", "app=x"], "--selector"),
    (["--as", "envoy", "--target-ref", "eg"], "--target-ref"),
    (["--routes-from", "scenarios/policy.yaml"], "routes"),   # no route with a per_filter_config
])
def test_bad_input_is_one_line_and_writes_nothing(project, tmp_path, args, where):
    out = tmp_path / "published.yaml"
    cors = project(ROOT / "filters" / "cors" / "lua")
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    args = [str(cors.parent / a) if a.startswith("scenarios/") else str(routes) if a == "ROUTES" else a
            for a in args]
    code, output = publish(str(cors), "-o", str(out), *args)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and where in lines[0] and "fix:" in lines[0], output
    assert not out.exists()


@pytest.mark.parametrize("args, where", [
    (["--as", "envoy-gateway", "--target-ref", "eg"], "--url"),            # EG fetches the module by URL
    (["--as", "envoyfilter", "--url", "oci://registry.example.com/x:1"], "--url"),   # Envoy fetches http(s)
    (["--as", "envoyfilter", "--url", "https://example.com"], "--url"),    # no module path
    (["--url", "ftp://example.com/x.wasm"], "--url"),
])
def test_bad_wasm_input_is_one_line_and_writes_nothing(project, tmp_path, args, where):
    out = tmp_path / "published.yaml"
    code, output = publish(str(project(ROOT / "filters" / "cors" / "c")), "-o", str(out), *args)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and where in lines[0] and "fix:" in lines[0], output
    assert not out.exists()
