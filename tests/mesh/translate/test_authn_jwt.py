"""RequestAuthentication → jwt_authn (reference §8): the filter for every JWTRule field against a
golden file, what reaches which proxy (negative controls), placement between CUSTOM and RBAC, the
jwksUri fetched and inlined (fail closed when it cannot be), one UserError line per bad input, and
Envoy accepting the result. Regenerate with UPDATE_GOLDEN=1 (then review the diff)."""

import json
import os
from pathlib import Path

import pytest
import yaml

from envoyext.envoy.process import validate
from envoyext.errors import UserError
from envoyext.mesh.translate import authn_jwt, translate
from tests.mesh.translate.meshes import bookinfo
from tests.mesh.translate.test_translate_golden import static_config

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "jwt"
JWKS = (Path(__file__).resolve().parents[1] / "testdata" / "jwt" / "jwks.json").read_text().strip()
REVIEWS, RATINGS, GATEWAY = "reviews-v1-0", "ratings-v1-0", "istio-ingressgateway-0"


def ra(name: str, rules: list[dict], selector: dict | None = None, namespace: str = "default") -> str:
    spec: dict = {"jwtRules": rules}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})


EVERY_FIELD = ra("every-field", [
    {"issuer": "https://z.test", "jwksUri": "http://jwks.test/keys", "audiences": ["a", "b"],
     "fromHeaders": [{"name": "x-token", "prefix": "Token "}], "fromParams": ["token"],
     "forwardOriginalToken": True, "outputPayloadToHeader": "x-jwt-payload",
     "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}], "spaceDelimitedClaims": ["roles"]},
    {"issuer": "testing@secure.istio.io", "jwks": JWKS}], {"app": "reviews"})


def fetched(uri: str, issuer: str) -> str | None:
    return JWKS if uri == "http://jwks.test/keys" else None


def test_every_field_matches_golden():
    mesh = bookinfo(None, EVERY_FIELD)
    got = yaml.safe_dump(authn_jwt.filters(mesh, mesh.proxy(REVIEWS), resolve=fetched), sort_keys=False, width=120)
    path = GOLDEN / "every-field.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def test_selector_namespace_and_root_namespace():
    mesh = bookinfo(None, EVERY_FIELD, ra("mesh-wide", [{"issuer": "https://root.test", "jwks": JWKS}],
                                         namespace="istio-system"))
    issuers = {name: [p["issuer"] for p in (authn_jwt.http_filter(mesh, mesh.proxy(name), resolve=fetched) or
                                            {"typed_config": {"providers": {}}})["typed_config"]["providers"].values()]
               for name in (REVIEWS, RATINGS)}
    # sorted by issuer as istiod sorts them; ratings gets only the root namespace's policy (control)
    assert issuers == {REVIEWS: ["https://root.test", "https://z.test", "testing@secure.istio.io"],
                       RATINGS: ["https://root.test"]}
    assert authn_jwt.filters(bookinfo(None), bookinfo(None).proxy(REVIEWS)) == []


def test_placed_between_custom_and_rbac_on_inbound_and_gateway_only():
    authz = yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                            "metadata": {"name": "p"}, "spec": {"action": "DENY", "rules": [{"to": [{"operation": {
                                "methods": ["DELETE"]}}]}]}})
    configs = translate(bookinfo(None, EVERY_FIELD, ra("gw", [{"issuer": "https://gw.test", "jwks": JWKS}],
                                                       {"istio": "ingressgateway"}, "istio-system"), authz),
                        telemetry=False, jwks=fetched)

    def names(proxy: str, listener: str | None = None) -> list[list[str]]:
        return [[h["name"] for h in f["typed_config"]["http_filters"]]
                for lis in configs[proxy].listeners if listener is None or lis["name"] == listener
                for c in lis["filter_chains"] for f in c["filters"] if "http_filters" in f.get("typed_config", {})]
    inbound = names(REVIEWS, "virtualInbound")
    assert inbound and all(n[:2] == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"] for n in inbound)
    assert all(n[0] == "envoy.filters.http.jwt_authn" for n in names(GATEWAY))
    outbound = [n for lis in configs[REVIEWS].listeners if lis["name"] != "virtualInbound"
                for n in names(REVIEWS, lis["name"])]
    assert outbound and not any("envoy.filters.http.jwt_authn" in n for n in outbound)   # control
    assert not any("envoy.filters.http.jwt_authn" in n for n in names(RATINGS))          # not selected


def test_an_unreachable_jwks_uri_fails_closed():
    mesh = bookinfo(None, EVERY_FIELD)
    f = authn_jwt.http_filter(mesh, mesh.proxy(REVIEWS), resolve=lambda uri, issuer: None)
    assert f is not None
    keys = f["typed_config"]["providers"]["origins-0"]["local_jwks"]["inline_string"]
    assert keys == authn_jwt.UNUSABLE_JWKS
    assert json.loads(keys)["keys"][0]["kid"] not in JWKS   # no key anyone holds


@pytest.mark.parametrize("rule, message", [
    ({"jwks": JWKS}, r"spec.jwtRules\[0\].issuer: .*issuer must be set"),
    ({"issuer": "i"}, r"spec.jwtRules\[0\]: .*neither jwks nor jwksUri"),
    ({"issuer": "i", "jwks": "{}"}, r"spec.jwtRules\[0\].jwks: .*not a JSON Web Key Set"),
    ({"issuer": "i", "jwksUri": "ftp://x/keys"}, r"spec.jwtRules\[0\].jwksUri: .*not an http\(s\) URL"),
    ({"issuer": "i", "jwks": JWKS, "outputClaimToHeaders": [{"header": "bad header", "claim": "sub"}]},
     r"outputClaimToHeaders\[0\].header: .*does not match"),   # Istio's CRD schema refuses it first
])
def test_bad_rules_are_one_user_error(rule, message):
    with pytest.raises(UserError, match=message) as e:
        mesh = bookinfo(None, ra("bad", [rule], {"app": "reviews"}))
        authn_jwt.filters(mesh, mesh.proxy(REVIEWS), resolve=fetched)
    assert "\n" not in str(e.value) and "fix:" in str(e.value)


def test_envoy_accepts_the_filter():
    configs = translate(bookinfo(None, EVERY_FIELD), telemetry=False, jwks=fetched)
    validate(static_config(configs[REVIEWS]))


AUTHN_LUA = yaml.safe_dump({
    "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter", "metadata": {"name": "authn-lua"},
    "spec": {"workloadSelector": {"labels": {"app": "reviews"}}, "configPatches": [{
        "applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {
            "name": "envoy.filters.network.http_connection_manager"}}}},
        "patch": {"operation": "ADD", "filterClass": "AUTHN", "value": {
            "name": "my.authn", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": "function envoy_on_request(h) end"}}}}}]}})


@pytest.mark.parametrize("phase, expected", [
    ("AUTHN", ["my.authn", "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"]),
    ("AUTHZ", ["envoy.filters.http.jwt_authn", "my.authn", "envoy.filters.http.rbac"]),
])
def test_an_authn_phase_extension_beside_jwt_authn(phase, expected):
    """jwt_authn's `rules` is a list, not RBAC's map: placing an AUTHN/AUTHZ-phase extension on a
    workload with a RequestAuthentication once raised a traceback here."""
    deny = yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                           "metadata": {"name": "p"}, "spec": {"action": "DENY", "rules": [{"to": [{"operation": {
                               "methods": ["DELETE"]}}]}]}})
    configs = translate(bookinfo(None, EVERY_FIELD, AUTHN_LUA.replace("AUTHN", phase), deny),
                        telemetry=False, jwks=fetched)
    inbound = [[h["name"] for h in f["typed_config"]["http_filters"]]
               for lis in configs[REVIEWS].listeners if lis["name"] == "virtualInbound"
               for c in lis["filter_chains"] for f in c["filters"] if "http_filters" in f.get("typed_config", {})]
    assert inbound and all(n[:3] == expected for n in inbound)
