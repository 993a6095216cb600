"""AuthorizationPolicy → RBAC / ext_authz (reference §9): each golden case is a policy file
`tests/mesh/golden/authz/<case>-in.yaml` added to Bookinfo, and the security filters one proxy gets
(`authz.http_filters`) in `<case>-out.yaml`. Regenerate with UPDATE_GOLDEN=1 (then review the diff).

Then: what reaches a proxy and what does not (negative controls), the hook in the listeners, one
UserError line per bad input, and Envoy accepting the generated filters."""

import os
from pathlib import Path

import pytest
import yaml

from envoyext.errors import UserError
from envoyext.mesh.translate import authz, translate
from tests.mesh.translate.meshes import bookinfo

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "authz"
REVIEWS = "reviews-v1-0"
GATEWAY = "istio-ingressgateway-0"
CASES = {p.name[:-len("-in.yaml")]: p for p in sorted(GOLDEN.glob("*-in.yaml"))}
PROXY = {"gateway": GATEWAY}  # every other case is about reviews-v1-0


def dump(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def filters_of(*docs: str | Path, proxy: str = REVIEWS) -> list[dict]:
    mesh = bookinfo(None, *[d.read_text() if isinstance(d, Path) else d for d in docs])
    return authz.http_filters(mesh, mesh.proxy(proxy))


@pytest.mark.parametrize("case", sorted(CASES))
def test_policy_translates_to_golden_rbac(case):
    got = dump(filters_of(CASES[case], proxy=PROXY.get(case, REVIEWS)))
    out = GOLDEN / f"{case}-out.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        out.write_text(got)
    assert got == out.read_text(), f"{case}: differs from {out}"


def test_every_golden_output_has_its_input():
    assert sorted(p.name[:-len("-out.yaml")] for p in GOLDEN.glob("*-out.yaml")) == sorted(CASES)


# --- semantics the goldens encode, asserted by name ---------------------------------------------------

def rules_of(f: dict) -> dict:
    return f["typed_config"].get("rules", {})


def test_productpage_get_only():
    [f] = filters_of(CASES["allow-productpage-get-reviews"])
    assert f["name"] == "envoy.filters.http.rbac" and rules_of(f)["action"] == "ALLOW"
    policy = rules_of(f)["policies"]["ns[default]-policy[reviews-viewer]-rule[0]"]
    assert policy["principals"] == [{"and_ids": {"ids": [{"or_ids": {"ids": [{"authenticated": {"principal_name": {
        "exact": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"}}}]}}]}}]
    assert policy["permissions"] == [{"and_rules": {"rules": [{"or_rules": {"rules": [
        {"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}}]}}]


def test_actions_ordered_audit_deny_allow():
    got = filters_of(CASES["order-audit-deny-allow"])
    assert [rules_of(f)["action"] for f in got] == ["LOG", "DENY", "ALLOW"]
    # negative control: one action alone is one filter
    assert len(filters_of(CASES["allow-productpage-get-reviews"])) == 1


def test_allow_without_rules_matches_nothing_deny_without_rules_nothing():
    deny, allow = filters_of(CASES["empty-rules"])
    never = authz.MATCH_NEVER
    assert rules_of(allow)["policies"] == {"ns[default]-policy[allow-nothing]-rule[0]": never}
    assert rules_of(deny)["policies"] == {"ns[default]-policy[deny-nothing]-rule[0]": never}


def test_selection_root_namespace_first_and_only_what_selects():
    [f] = filters_of(CASES["selection"])
    assert list(rules_of(f)["policies"]) == ["ns[istio-system]-policy[mesh-wide]-rule[0]",
                                              "ns[default]-policy[local]-rule[0]"]
    # negative controls: ratings gets its own policy and the mesh-wide one, not reviews' ones
    [r] = filters_of(CASES["selection"], proxy="ratings-v1-0")
    assert list(rules_of(r)["policies"]) == ["ns[istio-system]-policy[mesh-wide]-rule[0]",
                                              "ns[default]-policy[ratings-only]-rule[0]"]
    assert filters_of() == []


def test_target_refs_reach_a_gateway_api_gateway_only():
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: istio-system}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: my-gateway}]
  action: DENY
  rules: [{to: [{operation: {paths: [/x]}}]}]
"""
    mesh = bookinfo(None, policy)
    gw = mesh.proxy(GATEWAY)
    assert authz.http_filters(mesh, gw) == []   # a classic gateway: not targeted
    labelled = type(gw)(gw.kind, type(gw.workload)(**{**gw.workload.__dict__, "labels": {
        **gw.labels, authz.GATEWAY_NAME_LABEL: "my-gateway"}}))
    assert [rules_of(f)["action"] for f in authz.http_filters(mesh, labelled)] == ["DENY"]


def test_custom_shadow_rules_gate_ext_authz():
    custom_rbac, ext, allow = filters_of(CASES["custom-ext-authz"])
    cfg = custom_rbac["typed_config"]
    assert "rules" not in cfg and cfg["shadow_rules_stat_prefix"] == "istio_ext_authz_"
    key = "istio-ext-authz-my-ext-authz-ns[default]-policy[ext-authz-admin]-rule[0]"
    assert list(cfg["shadow_rules"]["policies"]) == [key]
    assert ext["name"] == "envoy.filters.http.ext_authz"
    gate = ext["typed_config"]["filter_enabled_metadata"]
    assert gate["value"] == {"string_match": {"prefix": "istio-ext-authz-my-ext-authz"}}
    cluster = ext["typed_config"]["http_service"]["server_uri"]["cluster"]
    assert cluster == "outbound|8000||ext-authz.default.svc.cluster.local"
    assert rules_of(allow)["action"] == "ALLOW"
    # negative control: an unknown provider denies what the policy matches, no ext_authz
    [bad] = filters_of(CASES["custom-unknown-provider"])
    assert bad["typed_config"]["rules"]["action"] == "DENY"
    assert all(k.endswith("-deny-due-to-bad-CUSTOM-action") for k in bad["typed_config"]["rules"]["policies"])


def test_tcp_chain_drops_http_only_allow_rules_and_keeps_the_rest():
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mixed, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [default]}}]
"""
    mesh = bookinfo(None, policy)
    [f] = authz.tcp_filters(mesh, mesh.proxy(REVIEWS))
    assert f["name"] == "envoy.filters.network.rbac" and f["typed_config"]["stat_prefix"] == "tcp."
    assert list(f["typed_config"]["rules"]["policies"]) == ["ns[default]-policy[mixed]-rule[1]"]
    # negative control: on HTTP both rules are there
    [h] = authz.http_filters(mesh, mesh.proxy(REVIEWS))
    assert len(h["typed_config"]["rules"]["policies"]) == 2


def test_after_custom_points_past_the_custom_block():
    assert authz.after_custom(filters_of(CASES["custom-ext-authz"])) == 2
    assert authz.after_custom(filters_of(CASES["custom-unknown-provider"])) == 1
    # negative controls: no CUSTOM policy, nothing to skip
    assert authz.after_custom(filters_of(CASES["order-audit-deny-allow"])) == 0
    assert authz.after_custom([]) == 0


# --- the listener hook ----------------------------------------------------------------------------------

def hcm_filters(listener: dict) -> list[list[str]]:
    return [[h["name"] for h in f["typed_config"]["http_filters"]]
            for c in listener["filter_chains"] for f in c["filters"] if "http_filters" in f.get("typed_config", {})]


def test_listeners_carry_the_filters_first_on_inbound_and_gateway_only():
    text = CASES["custom-ext-authz"].read_text() + "---\n" + CASES["gateway"].read_text()
    configs = translate(bookinfo(None, text), telemetry=False)
    inbound = next(lis for lis in configs[REVIEWS].listeners if lis["name"] == "virtualInbound")
    # PERMISSIVE (no PeerAuthentication): the port's mTLS chain and its plaintext chain, alike
    assert hcm_filters(inbound) == 2 * [["envoy.filters.http.rbac", "envoy.filters.http.ext_authz",
                                         "envoy.filters.http.rbac", "envoy.filters.http.fault",
                                         "envoy.filters.http.cors", "envoy.filters.http.router"]]
    gw = [n for lis in configs[GATEWAY].listeners for n in hcm_filters(lis)]
    assert gw and all(n[:2] == ["envoy.filters.http.rbac", "envoy.filters.http.rbac"] for n in gw)
    # negative controls: reviews' outbound side and a workload no policy selects have no security filters
    outbound = [n for lis in configs[REVIEWS].listeners if lis["name"] != "virtualInbound" for n in hcm_filters(lis)]
    assert outbound and not any("envoy.filters.http.rbac" in n for n in outbound)
    details = [n for lis in configs["details-v1-0"].listeners for n in hcm_filters(lis)]
    assert details and not any("envoy.filters.http.rbac" in n for n in details)


# --- bad input: one line naming the file and the field ------------------------------------------------

def bad(spec: str, name: str = "bad") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
{spec}"""


@pytest.mark.parametrize("spec, field, words", [
    ("  rules: [{when: [{key: request.colour, values: [red]}]}]", "spec.rules[0].when[0].key", "unknown when key"),
    ("  rules: [{when: [{key: request.headers, values: [x]}]}]", "spec.rules[0].when[0].key", "malformed"),
    ("  rules: [{when: [{key: \"destination.labels[app]\", values: [x]}]}]", "spec.rules[0].when[0].key", "v1alpha1"),
    ("  rules: [{when: [{key: source.ip, values: [300.1.1.1]}]}]", "spec.rules[0].when[0].values[0]", "not an IP"),
    ("  rules: [{when: [{key: destination.port, values: [http]}]}]", "spec.rules[0].when[0].values[0]", "port"),
    ("  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]",
     "spec.rules[0].from[0].source.ipBlocks[0]", "not an IP"),
    ("  rules: [{from: [{source: {notRemoteIpBlocks: [nope]}}]}]",
     "spec.rules[0].from[0].source.notRemoteIpBlocks[0]", "not an IP"),
    ("  rules: [{to: [{operation: {ports: ['99999']}}]}]", "spec.rules[0].to[0].operation.ports[0]", "port"),
    ("  rules: [{to: [{operation: {paths: ['/a/{**}/b/{*}']}}]}]", "spec.rules[0].to[0].operation.paths[0]", "last"),
    ("  rules: [{to: [{operation: {notPaths: ['/a/{id}']}}]}]", "spec.rules[0].to[0].operation.notPaths[0]", "braces"),
    ("  action: DENY\n  provider: {name: x}", "spec.provider", "only for action CUSTOM"),
])
def test_bad_input_is_one_user_error_line(spec, field, words):
    with pytest.raises(UserError) as e:
        filters_of(bad(spec))
    line = e.value.one_line()
    assert "\n" not in line and field in line and words in line and "AuthorizationPolicy default/bad" in line
    assert e.value.file and e.value.file.endswith(".yaml") and e.value.fix


def test_good_input_next_to_the_bad_cases_is_accepted():
    # negative control for the cases above: the same shapes, valid, translate
    got = filters_of(bad("""  rules:
  - when: [{key: 'request.headers[x-colour]', values: [red]}, {key: source.ip, values: [10.0.0.1]},
           {key: destination.port, values: ['9080']}]
    from: [{source: {ipBlocks: [10.0.0.0/8], notRemoteIpBlocks: [10.0.0.1]}}]
    to: [{operation: {ports: ['9080'], paths: ['/a/{*}/b/{**}'], notPaths: ['/a/{*}']}}]"""))
    assert len(got) == 1


# --- Envoy accepts what we generate ------------------------------------------------------------------------

def test_envoy_validates_a_config_with_every_filter_kind():
    from envoyext.envoy.process import validate
    from tests.mesh.translate.test_translate_golden import static_config
    texts = [CASES[c].read_text() for c in ("order-audit-deny-allow", "sources", "operations", "conditions",
                                             "custom-ext-authz", "dry-run", "gateway")]
    configs = translate(bookinfo(None, "\n---\n".join(texts)), telemetry=False)
    for name in (REVIEWS, GATEWAY):
        names = [n for lis in configs[name].listeners for n in hcm_filters(lis) for n in n]
        assert "envoy.filters.http.rbac" in names
        validate(static_config(configs[name]))
    # negative control: Envoy does check these filters (an unknown matcher field is refused)
    from envoyext.errors import EnvoyRejected
    broken = static_config(configs[REVIEWS])
    inbound = next(lis for lis in broken["static_resources"]["listeners"] if lis["name"] == "virtualInbound")
    hcm = next(f["typed_config"] for c in inbound["filter_chains"] for f in c["filters"]
               if "http_filters" in f["typed_config"])
    rbac = next(h for h in hcm["http_filters"]
                if h["name"] == "envoy.filters.http.rbac" and "rules" in h["typed_config"])
    next(iter(rbac["typed_config"]["rules"]["policies"].values()))["permissions"] = [{"no_such_rule": True}]
    with pytest.raises(EnvoyRejected):
        validate(broken)


# --- a live Envoy enforces them as Istio means them ----------------------------------------------------

LIVE = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-users, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - to: [{operation: {methods: [GET], paths: ["/reviews/{*}/rating", "/static/{**}", "/admin/*"]}}]
    when: [{key: "request.headers[x-user]", values: [jason, "*-bot"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-secret, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin/secret*"]}}]}]
"""


@pytest.mark.parametrize("method, path, user, status", [
    ("GET", "/reviews/1/rating", "jason", 200),
    ("GET", "/static/css/a/b.css", "crawler-bot", 200),
    ("GET", "/admin/public", "jason", 200),
    # negative controls, one condition broken each:
    ("GET", "/reviews/1/2/rating", "jason", 403),     # {*} is one segment
    ("POST", "/reviews/1/rating", "jason", 403),      # method
    ("GET", "/reviews/1/rating", None, 403),          # the when header is missing
    ("GET", "/reviews/1/rating", "mallory", 403),     # ... or has another value
    ("GET", "/admin/secret-keys", "jason", 403),      # allowed, but DENY comes first
])
def test_live_envoy_enforces_the_rbac(live_envoy, method, path, user, status):
    import urllib.error
    import urllib.request
    request = urllib.request.Request(live_envoy + path, method=method, headers={"x-user": user} if user else {})
    try:
        with urllib.request.urlopen(request) as r:
            got, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        got, body = e.code, e.read().decode()
    assert got == status
    assert (body == "RBAC: access denied") == (status == 403)


@pytest.fixture(scope="module")
def live_envoy():
    from envoyext.envoy import xds
    from envoyext.envoy.process import EnvoyProcess
    mesh = bookinfo(None, LIVE)
    routes = xds.route_config("r", [xds.virtual_host("all", ["*"], [
        xds.route("ok", {"prefix": "/"}, direct_response=xds.direct_response(200, "ok"))])])
    hcm = xds.http_connection_manager("ingress_http", routes,
                                      [*authz.http_filters(mesh, mesh.proxy(REVIEWS)), xds.router_filter()])
    config = xds.bootstrap(node=xds.node("envoyext", "envoyext"), admin=("127.0.0.1", 0),
                           listeners=[xds.http_listener("envoyext", ("127.0.0.1", 0), hcm)], clusters=[])
    with EnvoyProcess(config) as envoy:
        yield envoy.url


def test_extension_phases_go_after_the_custom_block():
    """A WasmPlugin in phase AUTHN or AUTHZ goes after ext_authz (reference §11), not before the
    CUSTOM block's shadow RBAC filter, which is not the RBAC block AUTHZ anchors on."""
    from envoyext.mesh.translate.envoyfilter import phase_index
    chain = [{"name": authz.RBAC_HTTP, "typed_config": {"shadow_rules": {}}}, {"name": authz.EXT_AUTHZ_HTTP},
             {"name": authz.RBAC_HTTP, "typed_config": {"rules": {"action": "ALLOW"}}},
             {"name": "envoy.filters.http.fault"}, {"name": "envoy.filters.http.router"}]
    assert phase_index(chain, "AUTHZ") == 2
    assert phase_index(chain, "AUTHN") == 2
    assert phase_index(chain, "STATS") == 3
    assert phase_index(chain[2:], "AUTHZ") == 0  # control: without CUSTOM, right before RBAC
