"""AuthorizationPolicy → Envoy RBAC, and ext_authz for CUSTOM (reference §9; Istio's
pilot/pkg/security/authz/{builder,model,matcher} and pilot/pkg/model/{authorization,policyattachment}.go).

Which policies reach a proxy: those in the root namespace and in the proxy's own namespace (root
first, then load order, standing in for creation time), whose `selector.matchLabels` selects it.
`targetRefs` attach only to a Gateway API gateway (its `gateway.networking.k8s.io/gateway-name`
label), as in Istio; a sidecar ignores a policy with targetRefs (Service refs are for waypoints).

What a proxy gets, in Istio's HTTP filter order (reference §11): per CUSTOM provider an RBAC filter
whose *shadow* rules mark matching requests plus `envoy.filters.http.ext_authz` enabled only for them;
then the RBAC filters AUDIT (action LOG), DENY, ALLOW. Policy keys are `ns[<ns>]-policy[<name>]-rule[<i>]`.
An ALLOW policy without rules matches nothing (so it denies all); DENY/AUDIT without rules, nothing.
The `istio.io/dry-run: "true"` annotation moves a policy's rules into shadow rules.

A rule becomes one RBAC Policy: permissions = OR over `to[]` (each an AND of its fields), principals
= OR over `from[]`; each field is an OR over its values and its `not` form a not_rule/not_id; `when`
conditions join every from (source-side keys) or every to (destination-side keys). Everything Istio's
admission webhook would refuse (an unknown `when` key, a bad IP or port, a malformed path template)
is a UserError naming the policy's file and field. Istio's silent case is kept: on a TCP chain an
HTTP-only field drops the whole rule from an ALLOW policy and only that field from DENY/AUDIT.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from envoyext.envoy import xds
from envoyext.errors import UserError
from envoyext.mesh.model import CLUSTER_DOMAIN, ROOT_NAMESPACE, Json, Mesh, Proxy, Resource, selects

RBAC_HTTP = "envoy.filters.http.rbac"
RBAC_TCP = "envoy.filters.network.rbac"
EXT_AUTHZ_HTTP = "envoy.filters.http.ext_authz"
EXT_AUTHZ_TCP = "envoy.filters.network.ext_authz"
JWT_FILTER = "envoy.filters.http.jwt_authn"   # whose dynamic metadata `payload` holds the JWT claims
RBAC_HTTP_TYPE = xds.T + "envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_TCP_TYPE = xds.T + "envoy.extensions.filters.network.rbac.v3.RBAC"
EXT_AUTHZ_HTTP_TYPE = xds.T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_TCP_TYPE = xds.T + "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"
URI_TEMPLATE_TYPE = xds.T + "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"

ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
RBAC_ACTION = {"ALLOW": "ALLOW", "DENY": "DENY", "AUDIT": "LOG", "CUSTOM": "DENY"}
EXT_AUTHZ_PREFIX = "istio-ext-authz"
EXT_AUTHZ_STAT_PREFIX = "istio_ext_authz_"
DRY_RUN_PREFIX = {"ALLOW": "istio_dry_run_allow_", "DENY": "istio_dry_run_deny_"}
BAD_CUSTOM_SUFFIX = "-deny-due-to-bad-CUSTOM-action"
DRY_RUN_ANNOTATION = "istio.io/dry-run"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
SPIFFE = "spiffe://"
# The keys a `when` condition may name, exactly or as a prefix (with [...]).
WHEN_EXACT = ("source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
              "source.trustDomain", "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
              "destination.ip", "destination.port", "connection.sni")
WHEN_PREFIX = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
MATCH_NEVER: Json = {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}


class _Unsupported(Exception):
    """A field that cannot be enforced where it is generated (an HTTP attribute on a TCP chain)."""


# --- which policies ---------------------------------------------------------------------------------

def policies_for(mesh: Mesh, proxy: Proxy) -> dict[str, list[Resource]]:
    """The AuthorizationPolicies attached to `proxy`, by action (ALLOW, DENY, AUDIT, CUSTOM): the root
    namespace's first, then the proxy's namespace's, each in load order."""
    out: dict[str, list[Resource]] = {a: [] for a in ACTIONS}
    for ns in dict.fromkeys([ROOT_NAMESPACE, proxy.namespace]):
        for res in mesh.authorization_policies:
            if res.namespace == ns and _attaches(res, proxy):
                out[_action(res)].append(res)
    return out


def _attaches(res: Resource, proxy: Proxy) -> bool:
    spec = res.spec
    refs = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
    labels = (spec.get("selector") or {}).get("matchLabels")
    gateway = proxy.labels.get(GATEWAY_NAME_LABEL)
    if gateway is None or not refs:
        return not refs and selects(labels, proxy.labels)
    return res.namespace == proxy.namespace and any(
        r.get("kind") == "Gateway" and r.get("name") == gateway and r.get("namespace", res.namespace) == res.namespace
        for r in refs)


def _error(res: Resource, message: str, field: str, fix: str) -> UserError:
    return UserError(f"AuthorizationPolicy {res.namespace}/{res.name}: {message}", file=res.file, field=field, fix=fix)


def _action(res: Resource) -> str:
    action = str(res.spec.get("action") or "ALLOW")
    if action not in ACTIONS:
        raise _error(res, f"unknown action {action!r}", "spec.action", "use ALLOW, DENY, AUDIT or CUSTOM")
    provider = (res.spec.get("provider") or {}).get("name")
    if action == "CUSTOM" and not provider:
        raise _error(res, "CUSTOM needs a provider", "spec.provider.name",
                     "name one of the mesh config's extensionProviders")
    if action != "CUSTOM" and res.spec.get("provider") is not None:
        raise _error(res, f"provider is only for action CUSTOM (this is {action})", "spec.provider",
                     "remove provider, or set action: CUSTOM")
    return action


def _dry_run(res: Resource) -> bool:
    value = str((res.metadata.get("annotations") or {}).get(DRY_RUN_ANNOTATION, "false")).lower()
    if value not in ("true", "false", "1", "0", "t", "f"):
        raise _error(res, f"annotation {DRY_RUN_ANNOTATION} is {value!r}",
                     f"metadata.annotations[{DRY_RUN_ANNOTATION}]", "use \"true\" or \"false\"")
    return value in ("true", "1", "t")


# --- matchers (pilot/pkg/security/authz/matcher) ------------------------------------------------------

def string_match(value: str, prefix: str = "") -> Json:
    """Istio's wildcard string: `*` any non-empty (regex .+), `*x` suffix, `x*` prefix, else exact;
    `prefix` is prepended (a suffix with a prefix needs a regex)."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        if not prefix:
            return {"suffix": value[1:]}
        return {"safe_regex": {"regex": prefix + ".*" + _quote(value[1:])}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def _header(name: str, value: str, ignore_case: bool = False) -> Json:
    if value == "*":
        return {"name": name, "present_match": True}
    m = string_match(value)
    return {"name": name, "string_match": {**m, "ignore_case": True} if ignore_case else m}


def _value_or(values: Iterable[str]) -> Json:
    matchers = [{"string_match": string_match(v)} for v in values]
    return matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}


def _claim(claim: str, m: Json) -> Json:
    return {"filter": JWT_FILTER, "path": [{"key": "payload"}, {"key": claim}], "value": {"string_match": m}}


def _claims_list(claims: list[str], value: Json) -> Json:
    """A claim that may be a string or a list of strings (Istio's extended JWT matcher)."""
    return {"filter": JWT_FILTER, "path": [{"key": k} for k in ["payload", *claims]],
            "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}}}


def _cidr(value: str) -> Json:
    net = ipaddress.ip_network(value, strict=False) if "/" in value else ipaddress.ip_network(value)
    address = value.split("/", 1)[0] if "/" in value else value
    return {"address_prefix": str(ipaddress.ip_address(address)), "prefix_len": net.prefixlen}


def _path(value: str) -> Json:
    if "{*}" in value or "{**}" in value:
        template = value.replace("{**}", "**").replace("{*}", "*")
        return {"uri_template": {"name": "uri-template",
                                 "typed_config": {"@type": URI_TEMPLATE_TYPE, "path_template": template}}}
    return {"url_path": {"path": string_match(value)}}


# --- one rule → one RBAC Policy (pilot/pkg/security/authz/model) -------------------------------------

# A generator turns one value into a permission or principal; an extended one turns the whole list.
Gen = Callable[[str, str, bool], Json]
ExtGen = Callable[[str, list[str], bool], Json]


@dataclass
class _Field:
    key: str
    values: list[str]
    not_values: list[str]
    gen: Gen | None = None
    ext: ExtGen | None = None


def _http_only(key: str, for_tcp: bool) -> None:
    if for_tcp:
        raise _Unsupported(f"{key} is HTTP only")


def _p_dest_ip(_k: str, v: str, _t: bool) -> Json:
    return {"destination_ip": _cidr(v)}


def _p_dest_port(_k: str, v: str, _t: bool) -> Json:
    return {"destination_port": int(v)}


def _p_sni(_k: str, v: str, _t: bool) -> Json:
    return {"requested_server_name": string_match(v)}


def _p_host(k: str, v: str, t: bool) -> Json:
    _http_only(k, t)
    return {"header": _header(":authority", v, ignore_case=True)}


def _p_method(k: str, v: str, t: bool) -> Json:
    _http_only(k, t)
    return {"header": _header(":method", v)}


def _p_path(k: str, v: str, t: bool) -> Json:
    _http_only(k, t)
    return _path(v)


def _p_envoy_filter(k: str, values: list[str], _t: bool) -> Json:
    filt, _, key = k[len("experimental."):].rstrip("]").partition("[")
    matchers = [{"list_match": {"one_of": {"string_match": string_match(v[1:-1])}}}
                if v.startswith("[") and v.endswith("]") else {"string_match": string_match(v)} for v in values]
    value = matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}
    return {"metadata": {"filter": filt, "path": [{"key": key}], "value": value}}


def _i_src_ip(_k: str, v: str, _t: bool) -> Json:
    return {"direct_remote_ip": _cidr(v)}


def _i_remote_ip(_k: str, v: str, _t: bool) -> Json:
    return {"remote_ip": _cidr(v)}


def _authenticated(m: Json) -> Json:
    return {"authenticated": {"principal_name": m}}


def _quote(text: str) -> str:
    """Go's regexp.QuoteMeta (Python's re.escape also escapes `-`, which would change Istio's regexes)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def _i_namespace(_k: str, v: str, _t: bool) -> Json:
    return _authenticated({"safe_regex": {"regex": f".*/ns/{'.*'.join(_quote(p) for p in v.split('*'))}/.*"}})


def _i_principal(_k: str, v: str, _t: bool) -> Json:
    return _authenticated(string_match(v, SPIFFE))


def _i_trust_domain(_k: str, v: str, _t: bool) -> Json:
    if v == "*":
        return _authenticated({"prefix": SPIFFE})
    if "*" not in v:
        return _authenticated({"prefix": f"{SPIFFE}{v}/"})
    head, _, tail = v.partition("*")
    return _authenticated({"safe_regex": {"regex": f"spiffe://{_quote(head)}[^/]*{_quote(tail)}/.*"}})


def _i_service_account(policy_ns: str) -> Gen:
    def gen(_k: str, v: str, _t: bool) -> Json:
        ns, sep, sa = v.partition("/")
        if not sep:
            ns, sa = policy_ns, v
        return _authenticated({"safe_regex": {"regex": f"spiffe://.+/ns/{_quote(ns)}/(.+/|)sa/{_quote(sa)}(/.+)?"}})
    return gen


def _i_header(k: str, v: str, t: bool) -> Json:
    _http_only(k, t)
    return {"header": _header(k[len("request.headers["):-1], v)}


def _i_request_principal(k: str, values: list[str], t: bool) -> Json:
    """`iss/sub` split at the last `/` (an issuer is often a URL), each side matched in the JWT payload."""
    _http_only(k, t)
    anything: Json = {"safe_regex": {"regex": ".+"}}
    out = []
    for v in values:
        m_iss: Json
        m_sub: Json
        iss, found, sub = v.rpartition("/")
        if not found:
            iss, sub = v, ""
        if v == "*":
            m_iss, m_sub = anything, anything
        elif v.startswith("*"):
            if found:
                m_iss, m_sub = (anything if iss == "*" else {"suffix": iss[1:]}), {"exact": sub}
            else:
                m_iss, m_sub = anything, {"suffix": v[1:]}
        elif v.endswith("*"):
            if found:
                m_iss, m_sub = {"exact": iss}, (anything if sub == "*" else {"prefix": sub[:-1]})
            else:
                m_iss, m_sub = {"prefix": v[:-1]}, anything
        else:
            m_iss, m_sub = {"exact": iss}, {"exact": sub}
        out.append({"and_ids": {"ids": [{"metadata": _claim("iss", m_iss)}, {"metadata": _claim("sub", m_sub)}]}})
    return out[0] if len(out) == 1 else {"or_ids": {"ids": out}}


def _i_claim_list(claim: str) -> ExtGen:
    def gen(k: str, values: list[str], t: bool) -> Json:
        _http_only(k, t)
        return {"metadata": _claims_list([claim], _value_or(values))}
    return gen


def _i_claims(k: str, values: list[str], t: bool) -> Json:
    _http_only(k, t)
    return {"metadata": _claims_list(_bracketed(k[len("request.auth.claims"):]), _value_or(values))}


def _bracketed(s: str) -> list[str]:
    """`[a][b]` → [a, b]; anything else must be one `[name]` (Istio extractNameInNestedBrackets)."""
    parts = re.fullmatch(r"(\[[^\[\]]+\])+", s)
    if parts:
        return re.findall(r"\[([^\[\]]+)\]", s)
    if s.startswith("[") and s.endswith("]") and len(s) > 2:
        return [s[1:-1]]
    raise ValueError(s)


def _when_field(key: str, values: list[str], not_values: list[str], policy_ns: str) -> tuple[str, _Field]:
    """Which side ("permission" | "principal") a `when` key joins, and its generator (model.New)."""
    def f(gen: Gen | None = None, ext: ExtGen | None = None) -> _Field:
        return _Field(key, values, not_values, gen, ext)
    table: dict[str, tuple[str, _Field]] = {
        "destination.ip": ("permission", f(_p_dest_ip)), "destination.port": ("permission", f(_p_dest_port)),
        "connection.sni": ("permission", f(_p_sni)), "source.ip": ("principal", f(_i_src_ip)),
        "remote.ip": ("principal", f(_i_remote_ip)), "source.namespace": ("principal", f(_i_namespace)),
        "source.trustDomain": ("principal", f(_i_trust_domain)),
        "source.serviceAccount": ("principal", f(_i_service_account(policy_ns))),
        "source.principal": ("principal", f(_i_principal)),
        "request.auth.principal": ("principal", f(ext=_i_request_principal)),
        "request.auth.audiences": ("principal", f(ext=_i_claim_list("aud"))),
        "request.auth.presenter": ("principal", f(ext=_i_claim_list("azp"))),
    }
    if key in table:
        return table[key]
    if key.startswith("experimental.envoy.filters."):
        return "permission", f(ext=_p_envoy_filter)
    if key.startswith("request.headers"):
        return "principal", f(_i_header)
    return "principal", f(ext=_i_claims)  # request.auth.claims (checked by _check_when)


class _Rule:
    """One rule of a policy as Istio's model.Model: a field list per `from` and per `to`."""

    def __init__(self, res: Resource, index: int, rule: Json, bundle: list[str]):
        self.permissions: list[list[_Field]] = []
        self.principals: list[list[_Field]] = []
        base_perm: list[_Field] = []
        base_prin: list[_Field] = []
        for j, when in enumerate(rule.get("when") or []):
            key = str(when.get("key", ""))
            _check_when(res, f"spec.rules[{index}].when[{j}]", key, when)
            values, not_values = _strs(when.get("values")), _strs(when.get("notValues"))
            if key == "source.principal":  # trust-domain aliases apply here too (Istio MigrateTrustDomain)
                values, not_values = _replace_trust_domain(bundle, values), _replace_trust_domain(bundle, not_values)
            elif key == "source.trustDomain":
                values, not_values = _expand(bundle, values), _expand(bundle, not_values)
            side, field = _when_field(key, values, not_values, res.namespace)
            (base_perm if side == "permission" else base_prin).append(field)
        for j, src in enumerate(rule.get("from") or []):
            s = src.get("source") or {}
            where = f"spec.rules[{index}].from[{j}].source"
            _check_ips(res, where, s, ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"))
            fields = [_Field("source.principal", *_migrate(bundle, s, "principals"), _i_principal),
                      _Field("request.auth.principal", _strs(s.get("requestPrincipals")),
                             _strs(s.get("notRequestPrincipals")), ext=_i_request_principal),
                      _Field("source.serviceAccount", _strs(s.get("serviceAccounts")),
                             _strs(s.get("notServiceAccounts")), _i_service_account(res.namespace)),
                      _Field("source.trustDomain", _expand(bundle, _strs(s.get("trustDomains"))),
                             _expand(bundle, _strs(s.get("notTrustDomains"))), _i_trust_domain),
                      _Field("source.namespace", _strs(s.get("namespaces")), _strs(s.get("notNamespaces")),
                             _i_namespace),
                      _Field("remote.ip", _strs(s.get("remoteIpBlocks")), _strs(s.get("notRemoteIpBlocks")),
                             _i_remote_ip),
                      _Field("source.ip", _strs(s.get("ipBlocks")), _strs(s.get("notIpBlocks")), _i_src_ip)]
            self.principals.append([x for x in fields if x.values or x.not_values] + base_prin)
        if not rule.get("from"):
            self.principals.append(list(base_prin))
        for j, to in enumerate(rule.get("to") or []):
            o = to.get("operation") or {}
            where = f"spec.rules[{index}].to[{j}].operation"
            _check_ports(res, where, o, ("ports", "notPorts"))
            _check_paths(res, where, o)
            fields = [_Field(":authority", _strs(o.get("hosts")), _strs(o.get("notHosts")), _p_host),
                      _Field(":method", _strs(o.get("methods")), _strs(o.get("notMethods")), _p_method),
                      _Field("path-matcher", _strs(o.get("paths")), _strs(o.get("notPaths")), _p_path),
                      _Field("destination.port", _strs(o.get("ports")), _strs(o.get("notPorts")), _p_dest_port)]
            self.permissions.append([x for x in fields if x.values or x.not_values] + base_perm)
        if not rule.get("to"):
            self.permissions.append(list(base_perm))

    def generate(self, for_tcp: bool, action: str) -> Json:
        """The RBAC Policy; raises _Unsupported when an ALLOW rule cannot be enforced here."""
        perms = [{"and_rules": {"rules": _generate(fields, for_tcp, action, "permission") or [{"any": True}]}}
                 for fields in self.permissions]
        prins = [{"and_ids": {"ids": _generate(fields, for_tcp, action, "principal") or [{"any": True}]}}
                 for fields in self.principals]
        return {"permissions": perms, "principals": prins}


def _generate(fields: list[_Field], for_tcp: bool, action: str, side: str) -> list[Json]:
    """Each field: an OR over its values, and a NOT of an OR over its not-values. An unsupported value
    fails the rule for ALLOW (smaller allow) and is skipped for DENY/AUDIT (wider deny), as Istio does."""
    out: list[Json] = []
    or_key, not_key, set_key = (("or_rules", "not_rule", "rules") if side == "permission"
                                else ("or_ids", "not_id", "ids"))

    def attempt(make: Callable[..., Json], *args: Any) -> Json | None:
        try:
            return make(*args)
        except _Unsupported:
            if action == "ALLOW":
                raise
            return None

    for fld in fields:
        for values, negate in ((fld.values, False), (fld.not_values, True)):
            if not values:
                continue
            if fld.ext is not None:
                one = attempt(fld.ext, fld.key, values, for_tcp)
            else:
                assert fld.gen is not None
                made = [m for v in values if (m := attempt(fld.gen, fld.key, v, for_tcp)) is not None]
                one = {or_key: {set_key: made}} if made else None
            if one is not None:
                out.append({not_key: one} if negate else one)
    return out


def _strs(values: Any) -> list[str]:
    return [str(v) for v in values or []]


def _migrate(bundle: list[str], source: Json, field: str) -> tuple[list[str], list[str]]:
    not_field = "not" + field[0].upper() + field[1:]
    return (_replace_trust_domain(bundle, _strs(source.get(field))),
            _replace_trust_domain(bundle, _strs(source.get(not_field))))


def _replace_trust_domain(bundle: list[str], principals: list[str]) -> list[str]:
    """Istio's ReplaceTrustDomainAliases: a `td/ns/N/sa/S` principal whose trust domain is the mesh's,
    an alias, or cluster.local is written once per trust domain of the mesh."""
    out: list[str] = []
    for p in principals:
        parts = p.split("/")
        if len(parts) != 5 or parts[0] == "*" or not (_td_match(parts[0], bundle) or parts[0] == CLUSTER_DOMAIN):
            out.append(p)
            continue
        for td in bundle:
            same = td == parts[0] or (parts[0].startswith("*") and td.endswith(parts[0][1:]))
            new = p if same else "/".join([td, *parts[1:]])
            if new not in out:
                out.append(new)
    return out


def _td_match(td: str, bundle: list[str]) -> bool:
    """Istio's trustdomain stringMatch: either side may carry the `*` (prefix or suffix)."""
    def covers(a: str, pattern: str) -> bool:
        return (pattern.endswith("*") and a.startswith(pattern[:-1])) or (
            pattern.startswith("*") and a.endswith(pattern[1:]))
    return any(b == "*" or b == td or covers(td, b) or covers(b, td) for b in bundle)


def _expand(bundle: list[str], values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        for x in (bundle if v in bundle else [v]):
            if x not in out:
                out.append(x)
    return out


# --- input checks (what Istio's validation webhook refuses) ------------------------------------------

def _check_when(res: Resource, where: str, key: str, when: Json) -> None:
    if key in ("destination.namespace", "destination.user", "destination.name") or key.startswith("destination.labels"):
        raise _error(res, f"when key {key!r} is not supported (a v1alpha1 attribute)", f"{where}.key",
                     "select the workload with spec.selector and the namespace with metadata.namespace")
    prefixed = next((p for p in WHEN_PREFIX if key.startswith(p)), None)
    if key not in WHEN_EXACT and prefixed is None:
        raise _error(res, f"unknown when key {key!r}", f"{where}.key",
                     "use one of " + ", ".join(WHEN_EXACT) + ", request.headers[<name>], request.auth.claims[<claim>]")
    if prefixed is not None:
        rest = key[len(prefixed):]
        ok = (re.fullmatch(r"\[[^\[\]]+\]", rest) if prefixed == "request.headers" else
              re.fullmatch(r"(\[[^\[\]]+\])+", rest) if prefixed == "request.auth.claims" else
              re.fullmatch(r"[^\[\]]+\[[^\[\]]+\]", rest))
        if not ok:
            shape = f"{prefixed}<a.b>[<key>]" if prefixed.endswith(".") else f"{prefixed}[<name>]"
            raise _error(res, f"when key {key!r} is malformed", f"{where}.key", f"write it as {shape}")
    values, not_values = _strs(when.get("values")), _strs(when.get("notValues"))
    if not values and not not_values:
        raise _error(res, f"when {key!r} has neither values nor notValues", where, "give values or notValues")
    if any(v == "" for v in values + not_values):
        raise _error(res, f"when {key!r} has an empty value", where, "remove the empty value")
    if key in ("source.ip", "remote.ip", "destination.ip"):
        _check_ips(res, where, when, ("values", "notValues"))
    if key == "destination.port":
        _check_ports(res, where, when, ("values", "notValues"))


def _check_ips(res: Resource, where: str, obj: Json, fields: tuple[str, ...]) -> None:
    for fld in fields:
        for i, v in enumerate(_strs(obj.get(fld))):
            try:
                _cidr(v)
            except ValueError:
                raise _error(res, f"{v!r} is not an IP address or CIDR range", f"{where}.{fld}[{i}]",
                             "write an address like 10.1.2.3 or a range like 10.1.0.0/16") from None


def _check_ports(res: Resource, where: str, obj: Json, fields: tuple[str, ...]) -> None:
    for fld in fields:
        for i, v in enumerate(_strs(obj.get(fld))):
            if not v.isdigit() or not 0 <= int(v) <= 65535:
                raise _error(res, f"port {v!r} is not a number in [0, 65535]", f"{where}.{fld}[{i}]",
                             "write a port number such as \"8080\"")


def _check_paths(res: Resource, where: str, op: Json) -> None:
    """Istio's CheckValidPathTemplate: `{*}` a segment, `{**}` only last, no other braces."""
    literal = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")
    for fld in ("paths", "notPaths"):
        for i, path in enumerate(_strs(op.get(fld))):
            template = "{*}" in path or "{**}" in path
            seen_any = False
            for glob in path.strip("/").split("/"):
                if glob in ("{*}", "{**}"):
                    if seen_any:
                        raise _error(res, f"path {path!r}: {{**}} must be the last operator", f"{where}.{fld}[{i}]",
                                     "end the template with {**}, or use {*} before it")
                    seen_any = glob == "{**}"
                    continue
                if "{" in glob or "}" in glob:
                    raise _error(res, f"path {path!r} has braces beyond {{*}} and {{**}}", f"{where}.{fld}[{i}]",
                                 "use {*} for one segment or {**} for the rest")
                if template and not literal.match(glob):
                    raise _error(res, f"path {path!r}: segment {glob!r} is not a valid literal", f"{where}.{fld}[{i}]",
                                 "use RFC 3986 path characters in a template's fixed segments")


# --- policies → RBAC configs (pilot/pkg/security/authz/builder) ---------------------------------------

def policy_name(res: Resource, index: int, provider: str = "") -> str:
    prefix = f"{EXT_AUTHZ_PREFIX}-{provider}-" if provider else ""
    return f"{prefix}ns[{res.namespace}]-policy[{res.name}]-rule[{index}]"


def _bundle(mesh: Mesh) -> list[str]:
    return [mesh.config.trust_domain, *getattr(mesh.config, "trust_domain_aliases", ())]


def _policies(mesh: Mesh, res: Resource, action: str, for_tcp: bool, provider: str = "") -> dict[str, Json]:
    """Policy key → RBAC Policy for each rule of `res` (a rule Istio skips on this chain is absent)."""
    rules = res.spec.get("rules")
    if not rules:
        return {policy_name(res, 0, provider): MATCH_NEVER}
    out: dict[str, Json] = {}
    for i, rule in enumerate(rules):
        if rule is None:
            continue
        model = _Rule(res, i, rule, _bundle(mesh))
        try:
            out[policy_name(res, i, provider)] = model.generate(for_tcp, "ALLOW" if action == "ALLOW" else "OTHER")
        except _Unsupported:
            continue
    return out


def _rbac_config(mesh: Mesh, policies: list[Resource], action: str, for_tcp: bool) -> tuple[Json | None, Json | None]:
    """(enforced rules, dry-run rules) for one action, each None when no policy went there."""
    enforce: Json | None = None
    shadow: Json | None = None
    for res in policies:
        target: Json = {"action": RBAC_ACTION[action], "policies": {}}
        if _dry_run(res):
            shadow = shadow or target
            shadow["policies"].update(_policies(mesh, res, action, for_tcp))
        else:
            enforce = enforce or target
            enforce["policies"].update(_policies(mesh, res, action, for_tcp))
    return enforce, shadow


def _rbac_filter(enforce: Json | None, shadow: Json | None, action: str, for_tcp: bool) -> Json:
    config: Json = {"@type": RBAC_TCP_TYPE if for_tcp else RBAC_HTTP_TYPE}
    if enforce is not None:
        config["rules"] = enforce
    if for_tcp:
        config["stat_prefix"] = "tcp."
    if shadow is not None:
        config["shadow_rules"] = shadow
    # Istio reads the prefix off the shadow rules' action, which defaults to ALLOW when there are none.
    prefix = DRY_RUN_PREFIX.get(RBAC_ACTION[action] if shadow is not None else "ALLOW", "")
    if prefix:
        config["shadow_rules_stat_prefix"] = prefix
    return {"name": RBAC_TCP if for_tcp else RBAC_HTTP, "typed_config": config}


def rbac_filters(mesh: Mesh, proxy: Proxy, *, tcp: bool = False) -> list[Json]:
    """The RBAC filters for AUDIT, DENY and ALLOW policies reaching `proxy`, in that order (HTTP
    filters, or network filters for a TCP chain with `tcp=True`)."""
    by_action = policies_for(mesh, proxy)
    out = []
    for action in ("AUDIT", "DENY", "ALLOW"):
        if by_action[action]:
            enforce, shadow = _rbac_config(mesh, by_action[action], action, tcp)
            out.append(_rbac_filter(enforce, shadow, action, tcp))
    return out


# --- CUSTOM: ext_authz with the mesh config's extension providers ------------------------------------

def _providers(mesh: Mesh) -> dict[str, Json]:
    return {str(p.get("name", "")): p for p in getattr(mesh.config, "extension_providers", ()) or ()}


def _metadata_gate(filter_name: str, provider: str) -> Json:
    """ext_authz runs only when the CUSTOM shadow rules of `provider` matched (their policy id)."""
    return {"filter": filter_name, "path": [{"key": EXT_AUTHZ_STAT_PREFIX + "shadow_effective_policy_id"}],
            "value": {"string_match": {"prefix": f"{EXT_AUTHZ_PREFIX}-{provider}"}}}


def _list_matcher(headers: list[str]) -> Json:
    patterns = []
    for h in headers:
        if h.startswith("*"):
            patterns.append({"ignore_case": True, "suffix": h[1:]})
        elif h.endswith("*"):
            patterns.append({"ignore_case": True, "prefix": h[:-1]})
        else:
            patterns.append({"ignore_case": True, "exact": h})
    return {"patterns": patterns}


def _lookup_cluster(mesh: Mesh, service: str, port: int) -> tuple[str, str]:
    """(hostname, outbound cluster) for a provider's `service` (`host` or `ns/host`) and port."""
    ns, _, host = service.rpartition("/")
    svc = next((s for s in mesh.services if s.hostname == host and (not ns or s.namespace == ns)), None)
    if svc is None:
        raise ValueError(f"service {service!r} is not in the mesh")
    return svc.hostname, f"outbound|{port}||{svc.hostname}"


def ext_authz(mesh: Mesh, provider: Json) -> tuple[Json | None, Json | None]:
    """(HTTP, TCP) ext_authz configs for an extension provider; the TCP one only for gRPC. Raises
    ValueError when the provider cannot be used (Istio then denies what its policies match)."""
    http_p, grpc_p = provider.get("envoyExtAuthzHttp"), provider.get("envoyExtAuthzGrpc")
    p = http_p or grpc_p
    if not isinstance(p, dict):
        raise ValueError("not an ext_authz provider (envoyExtAuthzHttp or envoyExtAuthzGrpc)")
    port = int(p.get("port") or 0)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in [1, 65535], found {port}")
    host, cluster = _lookup_cluster(mesh, str(p.get("service", "")), port)
    timeout = str(p.get("timeout") or "600s")
    common: Json = {}
    if p.get("statusOnError"):
        common["status_on_error"] = {"code": int(p["statusOnError"])}
    if p.get("failOpen"):
        common["failure_mode_allow"] = True
    common["transport_api_version"] = "V3"
    body = p.get("includeRequestBodyInCheck")
    if grpc_p:
        grpc = {"envoy_grpc": {"cluster_name": cluster, "authority": host}, "timeout": timeout}
        http: Json = {"@type": EXT_AUTHZ_HTTP_TYPE, **common, "grpc_service": grpc}
        tcp: Json | None = {"@type": EXT_AUTHZ_TCP_TYPE, "stat_prefix": "tcp.",
                            **({"failure_mode_allow": True} if p.get("failOpen") else {}),
                            "transport_api_version": "V3", "grpc_service": grpc}
    else:
        service: Json = {"server_uri": {"uri": f"http://{host}", "cluster": cluster, "timeout": timeout}}
        if p.get("pathPrefix"):
            if not str(p["pathPrefix"]).startswith("/"):
                raise ValueError(f"pathPrefix must begin with '/', found {p['pathPrefix']!r}")
            service = {"path_prefix": p["pathPrefix"], **service}
        extra = p.get("includeAdditionalHeadersInCheck") or {}
        if extra:
            service["authorization_request"] = {
                "headers_to_add": [{"key": k, "value": str(extra[k])} for k in sorted(extra)]}
        response = {k: _list_matcher(list(p[f])) for k, f in (
            ("allowed_upstream_headers", "headersToUpstreamOnAllow"),
            ("allowed_client_headers", "headersToDownstreamOnDeny"),
            ("allowed_client_headers_on_success", "headersToDownstreamOnAllow")) if p.get(f)}
        if response:
            service["authorization_response"] = response
        http = {"@type": EXT_AUTHZ_HTTP_TYPE, **common, "http_service": service}
        allowed = p.get("includeRequestHeadersInCheck") or p.get("includeHeadersInCheck")
        if allowed:
            http["allowed_headers"] = _list_matcher(list(allowed))
        tcp = None
    if body:
        http["with_request_body"] = {"max_request_bytes": int(body.get("maxRequestBytes") or 0),
                                     "allow_partial_message": bool(body.get("allowPartialMessage")),
                                     "pack_as_bytes": bool(body.get("packAsBytes"))}
    return http, tcp


def custom_filters(mesh: Mesh, proxy: Proxy, *, tcp: bool = False) -> list[Json]:
    """Per CUSTOM provider (sorted): an RBAC filter whose shadow rules mark the requests the policies
    match, then ext_authz gated on that mark. A provider that is missing or unusable gets an RBAC DENY
    of what its policies match instead (fail closed, as Istio); more than one provider on a workload
    too (Istio needs PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS for that)."""
    policies = policies_for(mesh, proxy)["CUSTOM"]
    if not policies:
        return []
    rules: dict[str, Json] = {}
    shadow: dict[str, Json] = {}
    for res in policies:
        name = str(res.spec["provider"]["name"])
        rules.setdefault(name, {"action": "DENY", "policies": {}})
        shadow.setdefault(name, {"action": "DENY", "policies": {}})
        (shadow if _dry_run(res) else rules)[name]["policies"].update(_policies(mesh, res, "CUSTOM", tcp, name))
    rbac_name, rbac_type = (RBAC_TCP, RBAC_TCP_TYPE) if tcp else (RBAC_HTTP, RBAC_HTTP_TYPE)
    stat = {"stat_prefix": "tcp."} if tcp else {}

    def deny(name: str) -> Json:
        bad = {"action": "DENY", "policies": {k + BAD_CUSTOM_SUFFIX: v for k, v in rules[name]["policies"].items()}}
        return {"name": rbac_name, "typed_config": {"@type": rbac_type, "rules": bad, **stat}}

    providers = _providers(mesh)
    names = sorted(rules)
    if len(names) > 1:
        return [deny(n) for n in names]
    out = []
    for name in names:
        try:
            if name not in providers:
                raise ValueError(f"no extension provider {name!r}")
            http, tcp_config = ext_authz(mesh, providers[name])
        except (ValueError, TypeError):
            out.append(deny(name))
            continue
        config = tcp_config if tcp else http
        if config is None:
            continue  # an HTTP provider does nothing on a TCP chain
        rbac: Json = {"@type": rbac_type, **stat, "shadow_rules": rules[name],
                      "shadow_rules_stat_prefix": EXT_AUTHZ_STAT_PREFIX}
        if shadow[name]["policies"]:
            rbac["rules"] = shadow[name]
        config = {**config, "filter_enabled_metadata": _metadata_gate(rbac_name, name)}
        out += [{"name": rbac_name, "typed_config": rbac},
                {"name": EXT_AUTHZ_TCP if tcp else EXT_AUTHZ_HTTP, "typed_config": config}]
    return out


# --- the hook for listener.py -------------------------------------------------------------------------

def http_filters(mesh: Mesh, proxy: Proxy, authn: list[Json] | None = None) -> list[Json]:
    """The security head of a sidecar-inbound or gateway HCM chain, in Istio's order (reference §11):
    CUSTOM (RBAC shadow + ext_authz), then `authn` (the jwt_authn filter, from RequestAuthentication,
    when the caller has one), then RBAC AUDIT, DENY, ALLOW. Extension phases are placed around these
    by the extensions/EnvoyFilter post-passes."""
    return [*custom_filters(mesh, proxy), *(authn or []), *rbac_filters(mesh, proxy)]


def after_custom(filters: list[Json]) -> int:
    """The index just past the CUSTOM block (its RBAC shadow filter + ext_authz) of an HCM's
    http_filters, 0 when there is none. Extension phases AUTHN and AUTHZ belong after it (reference
    §11: CUSTOM is #2, AUTHN #3); a search for their anchors (jwt_authn, the first RBAC filter)
    should start here, or it finds CUSTOM's RBAC filter and places them before ext_authz."""
    last = max((i for i, f in enumerate(filters) if f.get("name") == EXT_AUTHZ_HTTP), default=-1)
    if last >= 0:
        return last + 1
    # A CUSTOM provider that failed leaves only its deny filter, recognisable by its policy names.
    for i, f in enumerate(filters):
        if f.get("name") != RBAC_HTTP:   # only RBAC's `rules` is a map (jwt_authn's is a list)
            continue
        policies = ((f.get("typed_config") or {}).get("rules") or {}).get("policies") or {}
        if policies and all(k.endswith(BAD_CUSTOM_SUFFIX) for k in policies):
            last = i
    return last + 1


def tcp_filters(mesh: Mesh, proxy: Proxy) -> list[Json]:
    """Network filters to put before tcp_proxy on a sidecar's inbound TCP chains: CUSTOM (gRPC
    providers only), then RBAC AUDIT, DENY, ALLOW with `stat_prefix: tcp.`."""
    return [*custom_filters(mesh, proxy, tcp=True), *rbac_filters(mesh, proxy, tcp=True)]
