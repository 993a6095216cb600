"""WasmPlugin placement: phase and priority, match mode and ports, selection, the filter entry istiod
builds, and where the module comes from; each rule with a negative control."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from envoyext.envoy import xds
from envoyext.errors import UserError
from envoyext.mesh.translate import ProxyConfig, extensions
from tests.mesh.translate.test_envoyfilter import (
    CORS,
    FAULT,
    ROUTER,
    STATS,
    _crd_schema,
    gateway_config,
    http_names,
    listener,
    make_mesh,
    resources,
    sidecar_config,
)

PREFIX = "extensions.istio.io/wasmplugin/"
MODULE = b"\0asm\x01\0\0\0"


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "plugin.wasm"
    path.write_bytes(MODULE)
    return path


def plugin(module: Path, name: str = "auth", ns: str = "default", extra: str = "") -> str:
    return f"""
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: {name}, namespace: {ns}}}
spec:
  url: file://{module}
{extra}"""


def run(text: str, config: ProxyConfig | None = None, fetch: extensions.Fetch | None = None) -> ProxyConfig:
    config = config or sidecar_config()
    before = copy.deepcopy(config)
    out = extensions.apply(make_mesh(wasm_plugins=resources(text)), config, fetch)
    assert config == before, "apply must not change its input"
    return out


def unchanged(text: str, config: ProxyConfig | None = None) -> None:
    config = config or sidecar_config()
    assert run(text, config) == config


def test_entry_is_what_istiod_builds(module: Path) -> None:
    extra = """  selector: {matchLabels: {app: reviews}}
  pluginName: my_root
  pluginConfig: {header: x-auth, limits: {rps: 5}}
  failStrategy: FAIL_OPEN
  vmConfig:
    env:
    - {name: MODE, value: strict}
    - {name: POD_NAME, valueFrom: HOST}
"""
    out = run(plugin(module, extra=extra))
    entry = xds.hcm_of(listener(out, "virtualInbound"))["http_filters"][0]
    assert entry["name"] == PREFIX + "default.auth"
    cfg = entry["typed_config"]["config"]
    assert entry["typed_config"]["@type"] == xds.WASM
    assert cfg["name"] == "default.auth" and cfg["root_id"] == "my_root"
    assert cfg["failure_policy"] == "FAIL_OPEN"
    assert cfg["configuration"]["@type"] == xds.STRING_VALUE
    assert json.loads(cfg["configuration"]["value"]) == {"header": "x-auth", "limits": {"rps": 5}}
    vm = cfg["vm_config"]
    assert vm["runtime"] == "envoy.wasm.runtime.v8" and vm["code"] == {"local": {"filename": str(module)}}
    assert vm["environment_variables"] == {"host_env_keys": ["POD_NAME"], "key_values": {"MODE": "strict"}}


def test_defaults_fail_closed_and_no_configuration(module: Path) -> None:
    cfg = xds.hcm_of(listener(run(plugin(module)), "virtualInbound"))["http_filters"][0]["typed_config"]["config"]
    assert cfg["failure_policy"] == "FAIL_CLOSED"
    assert "configuration" not in cfg and "root_id" not in cfg


def test_phases_and_priority(module: Path) -> None:
    docs = "---".join([
        plugin(module, "unspec", extra="  priority: 100\n"),
        plugin(module, "stats", extra="  phase: STATS\n"),
        plugin(module, "authz", extra="  phase: AUTHZ\n"),
        plugin(module, "authn-low", extra="  phase: AUTHN\n  priority: 1\n"),
        plugin(module, "authn-high", extra="  phase: AUTHN\n  priority: 10\n"),
    ])
    names = http_names(run(docs), "0.0.0.0_9080")
    assert names == [PREFIX + "default." + n for n in ("authn-high", "authn-low", "authz", "stats", "unspec")] + \
        [FAULT, CORS, STATS, ROUTER]
    # with Istio's security filters in the chain: AUTHN before jwt_authn, AUTHZ before RBAC, STATS after it
    cfg = sidecar_config()
    xds.hcm_of(listener(cfg, "0.0.0.0_9080"))["http_filters"][:0] = [
        {"name": "envoy.filters.http.jwt_authn", "typed_config": {"@type": "j"}},
        {"name": "envoy.filters.http.rbac", "typed_config": {"@type": "r"}}]
    names = [n.removeprefix(PREFIX + "default.") for n in http_names(run(docs, cfg), "0.0.0.0_9080")]
    assert names[:7] == ["authn-high", "authn-low", "envoy.filters.http.jwt_authn", "authz", "envoy.filters.http.rbac",
                         "stats", "unspec"]


@pytest.mark.parametrize("mode, inbound, outbound, gateway", [
    ("SERVER", True, False, False),
    ("CLIENT", False, True, True),           # Istio: a gateway's traffic counts as CLIENT
    ("CLIENT_AND_SERVER", True, True, True),
    ("UNDEFINED", True, True, True),
])
def test_match_mode(module: Path, mode: str, inbound: bool, outbound: bool, gateway: bool) -> None:
    text = plugin(module, ns="istio-system", extra=f"  match: [{{mode: {mode}}}]\n")   # root: reaches all
    out = run(text)
    name = PREFIX + "istio-system.auth"
    assert (name in http_names(out, "virtualInbound")) is inbound
    assert (name in http_names(out, "0.0.0.0_9080")) is outbound
    assert (name in http_names(run(text, gateway_config()), "0.0.0.0_8080")) is gateway


def test_match_ports(module: Path) -> None:
    text = plugin(module, extra="  match: [{mode: SERVER, ports: [{number: 9080}]}]\n")
    assert PREFIX + "default.auth" in http_names(run(text), "virtualInbound")
    unchanged(text.replace("number: 9080", "number: 9081"))
    gw = plugin(module, ns="istio-system", extra="  match: [{mode: CLIENT, ports: [{number: 8080}]}]\n")
    assert PREFIX + "istio-system.auth" in http_names(run(gw, gateway_config()), "0.0.0.0_8080")
    unchanged(gw.replace("number: 8080", "number: 80"), gateway_config())


def test_selection(module: Path) -> None:
    unchanged(plugin(module, extra="  selector: {matchLabels: {app: ratings}}\n"))
    unchanged(plugin(module, ns="other"))
    unchanged(plugin(module, extra="  targetRefs: [{kind: Service, name: productpage}]\n"))
    assert run(plugin(module, extra="  targetRefs: [{kind: Service, name: reviews}]\n")) != sidecar_config()
    # the prometheus listener has no HCM to touch and is left as it is
    assert listener(run(plugin(module)), "prometheus") == listener(sidecar_config(), "prometheus")


def test_sha256_is_checked(module: Path) -> None:
    good = hashlib.sha256(MODULE).hexdigest()
    assert run(plugin(module, extra=f"  sha256: {good}\n")) != sidecar_config()
    with pytest.raises(UserError, match="sha256 mismatch") as e:
        run(plugin(module, extra=f"  sha256: '{'0' * 64}'\n"))
    assert e.value.field == "spec.sha256" and "WasmPlugin default/auth" in str(e.value)


def test_remote_urls_need_a_fetcher(module: Path) -> None:
    text = plugin(module).replace(f"file://{module}", "oci://ghcr.io/example/auth:1.0")
    with pytest.raises(UserError, match="no fetcher") as e:
        run(text)
    assert e.value.field == "spec.url"
    asked: list[tuple[str, str | None]] = []

    def fetch(url: str, sha: str | None) -> Path:
        asked.append((url, sha))
        return module

    out = run(text, fetch=fetch)
    assert asked == [("oci://ghcr.io/example/auth:1.0", None)]
    code = xds.hcm_of(listener(out, "virtualInbound"))["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]
    assert code == {"local": {"filename": str(module)}}
    # An image's sha256 is its manifest digest (Istio's rule): handed to the fetcher, which checks it
    # (tests/publish/test_oci.py), not compared with the module's bytes here.
    run(text + f"  sha256: '{'1' * 64}'\n", fetch=fetch)
    assert asked[-1] == ("oci://ghcr.io/example/auth:1.0", "1" * 64)
    http = text.replace("oci://ghcr.io/example/auth:1.0", "https://example.com/auth.wasm")
    with pytest.raises(UserError, match="sha256 mismatch"):   # a download's bytes are checked too
        run(http + f"  sha256: '{'1' * 64}'\n", fetch=fetch)


def test_network_plugins_are_refused(module: Path) -> None:
    with pytest.raises(UserError, match="HTTP plugins only"):
        run(plugin(module, extra="  type: NETWORK\n"))


def test_examples_validate_against_the_crd(module: Path) -> None:
    import jsonschema
    schema = _crd_schema("WasmPlugin")
    text = plugin(module, extra="  selector: {matchLabels: {app: reviews}}\n  phase: AUTHN\n  priority: 10\n"
                                "  pluginConfig: {a: 1}\n  failStrategy: FAIL_OPEN\n"
                                "  match: [{mode: SERVER, ports: [{number: 9080}]}]\n")
    for r in resources(text):
        doc = {"apiVersion": r.api_version, "kind": r.kind, "metadata": r.metadata, "spec": r.spec}
        jsonschema.validate(doc, schema)
