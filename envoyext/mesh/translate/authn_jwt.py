"""RequestAuthentication → Envoy's `envoy.filters.http.jwt_authn` (reference §8; Istio's
`pilot/pkg/security/authn/policy_applier.go` `convertToEnvoyJwtConfig`, `pilot/pkg/model/authentication.go`
`getConfigsForWorkload`).

- Which policies reach a proxy: those in its namespace and in the root namespace whose
  `selector.matchLabels` is a subset of its labels (no selector: all of them). Their `jwtRules` are
  pooled and sorted by issuer (stable), and rule i becomes provider `origins-<i>`.
- Istio's semantics: a request without a token passes (`allow_missing`), a token that is present
  must verify with one of the providers (else jwt_authn answers 401). Requiring a token is an
  AuthorizationPolicy's job (requestPrincipals).
- Keys: inline `jwks` → `local_jwks.inline_string`. `jwksUri` → istiod's default fetches it while
  translating and inlines it; here a `resolve(uri, issuer)` callback the runtime gives does the
  fetching (the toolkit's JWKS server on loopback). A failed fetch inlines a JWKS whose key nobody
  holds, so every token is refused, as istiod's fallback does. `remote=True` is Istio's
  PILOT_JWT_ENABLE_REMOTE_JWKS=envoy: Envoy fetches from cluster `outbound|<port>||<host>`.

Pure: no I/O except through `resolve`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from envoyext.envoy import xds
from envoyext.errors import UserError
from envoyext.mesh.model import ROOT_NAMESPACE, Json, Mesh, Proxy, Resource, selects

FILTER_NAME = "envoy.filters.http.jwt_authn"
TYPE = xds.T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
PAYLOAD_KEY = "payload"                 # dynamic metadata envoy.filters.http.jwt_authn.payload (RBAC reads it)
DEFAULT_TIMEOUT = "5s"                  # JWTRule.timeout's default
REMOTE_CACHE = "300s"                   # istiod's cache_duration for remote_jwks
DEFAULT_SPACE_DELIMITED = ("permission", "scope")

# `resolve(jwks_uri, issuer)` → the JWKS document as text, or None when it cannot be had.
Resolver = Callable[[str, str], "str | None"]

# What istiod inlines when a jwksUri cannot be fetched: a valid JWKS with one RSA public key whose
# private half was thrown away when it was made, so no token verifies (fail closed, not open).
UNUSABLE_JWKS = json.dumps({"keys": [{
    "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "envoyext-unfetchable-jwks", "e": "AQAB",
    "n": "owB2HXzDZr0RzvJBld4cyJ28Z682v8vue1U1qoniP2y1yPlmu_JLBDXko5SdIFVTMdO2oyCqrnJzqVmc-Us4XUjpfg0ps8vH"
         "ad2zTwd_iCjWh6sIK3TrlGmN2HRXNvPbUoEOTOmMekGPn9cUO3KBGVsaBuo25PCVMsvf93vCI9g4pB_ZFI0iMST149eBVuD4"
         "dXjraKfgqF8PPNl_OPeDHlCMSdcABlzzde8riz8NJWhdMNn_Y8VLPu5Ug5iGC_PkZb1ZmtmCoc0SfuhzQ1RkXbx_d_vclo5J"
         "88eBYk94BCF7mPVcCiGuDJ65G9CxKGVGYWyoBVubQE9dbp9uDDX9qw"}]}, separators=(",", ":"))


def policies_for(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    """The RequestAuthentications that reach `proxy`: its namespace's first, then the root
    namespace's (each in load order), those whose selector its labels satisfy."""
    out = []
    namespaces = [proxy.namespace] + ([ROOT_NAMESPACE] if proxy.namespace != ROOT_NAMESPACE else [])
    for ns in namespaces:
        for res in mesh.request_authentications:
            if res.namespace != ns:
                continue
            if res.spec.get("targetRef") or res.spec.get("targetRefs"):
                raise _error(res, "targetRef(s) name Kubernetes Gateway API objects, which envoyext does not model",
                             "spec.targetRefs", "select the workload with spec.selector.matchLabels instead")
            labels = (res.spec.get("selector") or {}).get("matchLabels")
            if selects(labels, proxy.labels):
                out.append(res)
    return out


def rules_for(mesh: Mesh, proxy: Proxy) -> list[tuple[Resource, int, Json]]:
    """(policy, index in its jwtRules, rule) for every rule reaching the proxy, sorted by issuer
    as istiod sorts them (stable, so equal issuers keep policy order)."""
    rules = [(res, i, rule) for res in policies_for(mesh, proxy)
             for i, rule in enumerate(res.spec.get("jwtRules") or [])]
    return sorted(rules, key=lambda r: str(r[2].get("issuer") or ""))


def filters(mesh: Mesh, proxy: Proxy, *, resolve: Resolver | None = None, remote: bool = False) -> list[Json]:
    """The listener hook (listener.for_proxy(authn=...)): [the jwt_authn filter] or []."""
    f = http_filter(mesh, proxy, resolve=resolve, remote=remote)
    return [] if f is None else [f]


def http_filter(mesh: Mesh, proxy: Proxy, *, resolve: Resolver | None = None, remote: bool = False) -> Json | None:
    """The `envoy.filters.http.jwt_authn` entry for a sidecar's inbound chains or a gateway's
    listeners, or None when no RequestAuthentication with rules reaches the proxy (Istio adds no
    filter then). Place it after the AUTHN-phase extensions and before RBAC."""
    rules = rules_for(mesh, proxy)
    if not rules:
        return None
    config = jwt_authentication(rules, resolve=resolve, remote=remote, gateway=proxy.kind == "router")
    return xds.http_filter(FILTER_NAME, config)


def jwt_authentication(rules: list[tuple[Resource, int, Json]], *, resolve: Resolver | None = None,
                       remote: bool = False, gateway: bool = False) -> Json:
    """The JwtAuthentication typed_config for rules already selected and sorted."""
    providers: Json = {}
    names = []
    for i, (res, index, rule) in enumerate(rules):
        name = f"origins-{i}"
        providers[name] = provider(res, index, rule, resolve=resolve, remote=remote, gateway=gateway)
        names.append(name)
    # Each provider: "its token, or none at all". With several providers istiod also ORs each one
    # alone, so a token in a location several providers share passes when one of them verifies it.
    per_provider = [{"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}}
                    for n in names]
    if len(per_provider) == 1:
        requires = per_provider[0]
    else:
        requires = {"requires_any": {"requirements": [
            *({"provider_name": n} for n in names), {"requires_all": {"requirements": per_provider}}]}}
    return {"@type": TYPE, "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}], "bypass_cors_preflight": True}


def provider(res: Resource, index: int, rule: Json, *, resolve: Resolver | None, remote: bool,
             gateway: bool) -> Json:
    """One JwtRule as an Envoy JwtProvider (field by field, reference §8)."""
    where = f"spec.jwtRules[{index}]"
    issuer = str(rule.get("issuer") or "")
    if not issuer:
        raise _error(res, "a JWT rule without issuer", f"{where}.issuer",
                     "set issuer to the token's iss claim, e.g. issuer: testing@secure.istio.io")
    sources = [k for k in ("jwks", "jwksUri", "jwks_uri") if rule.get(k)]
    if len(sources) > 1:
        raise _error(res, f"both {sources[0]} and {sources[1]} are set", f"{where}.{sources[1]}",
                     "keep one: inline jwks, or jwksUri")
    out: Json = {"issuer": issuer}
    if rule.get("audiences"):
        out["audiences"] = [str(a) for a in rule["audiences"]]
    timeout = str(rule.get("timeout") or DEFAULT_TIMEOUT)
    uri = str(rule.get("jwksUri") or rule.get("jwks_uri") or "")
    if rule.get("jwks"):
        out["local_jwks"] = {"inline_string": _checked_jwks(res, f"{where}.jwks", str(rule["jwks"]))}
    elif uri and remote:
        out["remote_jwks"] = {"http_uri": {"uri": uri, "cluster": jwks_cluster_name(res, f"{where}.jwksUri", uri),
                                           "timeout": timeout}, "cache_duration": REMOTE_CACHE}
    elif uri:
        _check_uri(res, f"{where}.jwksUri", uri)
        fetched = resolve(uri, issuer) if resolve is not None else None
        out["local_jwks"] = {"inline_string": fetched if fetched and _is_jwks(fetched) else UNUSABLE_JWKS}
    else:
        # Istio's resolver then looks the issuer's OpenID discovery document up; there is no network here.
        raise _error(res, f"JWT rule for {issuer!r} has neither jwks nor jwksUri", where,
                     "add jwksUri (the toolkit's JWKS server serves its issuers) or jwks (inline JSON)")
    if rule.get("forwardOriginalToken"):
        out["forward"] = True
    headers = [_from_header(res, f"{where}.fromHeaders[{j}]", h) for j, h in enumerate(rule.get("fromHeaders") or [])]
    if headers:
        out["from_headers"] = headers
    if rule.get("fromParams"):
        out["from_params"] = [str(p) for p in rule["fromParams"]]
    if rule.get("fromCookies"):
        out["from_cookies"] = [str(c) for c in rule["fromCookies"]]
    if rule.get("outputPayloadToHeader"):
        out["forward_payload_header"] = _header_name(res, f"{where}.outputPayloadToHeader",
                                                     str(rule["outputPayloadToHeader"]))
    claims = []
    for j, c in enumerate(rule.get("outputClaimToHeaders") or []):
        field = f"{where}.outputClaimToHeaders[{j}]"
        if not c.get("claim"):
            raise _error(res, "no claim named", f"{field}.claim", "name the claim to copy, e.g. claim: sub")
        claims.append({"header_name": _header_name(res, f"{field}.header", str(c.get("header") or "")),
                       "claim_name": str(c["claim"])})
    if claims:
        out["claim_to_headers"] = claims
    out["payload_in_metadata"] = PAYLOAD_KEY
    extra = [str(c) for c in rule.get("spaceDelimitedClaims") or []]
    out["normalize_payload_in_metadata"] = {"space_delimited_claims": sorted({*extra, *DEFAULT_SPACE_DELIMITED})}
    if gateway:
        out["clear_route_cache"] = True   # a gateway may route on the claims (istiod: not for sidecars)
    return out


def jwks_cluster_name(res: Resource, field: str, uri: str) -> str:
    """The cluster istiod names for a remote jwksUri: `outbound|<port>||<host>` (80/443 by scheme)."""
    parts = _check_uri(res, field, uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"outbound|{port}||{parts.hostname}"


def remote_jwks_clusters(config: Json, address: Callable[[str], tuple[str, int]]) -> list[Json]:
    """STATIC clusters for every remote_jwks cluster a JwtAuthentication names, at `address(uri)`
    (where the runtime serves that JWKS). Only remote mode needs these; https URIs are not served."""
    out: dict[str, Json] = {}
    for p in config.get("providers", {}).values():
        http_uri = (p.get("remote_jwks") or {}).get("http_uri")
        if http_uri and http_uri["cluster"] not in out:
            out[http_uri["cluster"]] = xds.static_cluster(http_uri["cluster"], [address(http_uri["uri"])])
    return list(out.values())


# ----------------------------------------------------------------------------- checks

def _error(res: Resource, message: str, field: str, fix: str) -> UserError:
    return UserError(f"RequestAuthentication {res.namespace}/{res.name}: {message}", file=res.file, field=field,
                     fix=fix)


def _is_jwks(text: str) -> bool:
    try:
        doc: Any = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("keys"), list) and bool(doc["keys"])


def _checked_jwks(res: Resource, field: str, text: str) -> str:
    if not _is_jwks(text):
        raise _error(res, "jwks is not a JSON Web Key Set", field,
                     'give a JSON object with a non-empty "keys" list ({"keys": [{"kty": "RSA", ...}]})')
    return text


def _check_uri(res: Resource, field: str, uri: str) -> Any:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _error(res, f"jwksUri {uri!r} is not an http(s) URL", field,
                     "give an http:// or https:// URL of the issuer's JWKS")
    return parts


def _header_name(res: Resource, field: str, name: str) -> str:
    if not name or any(ch.isspace() or ch == ":" for ch in name):
        raise _error(res, f"{name!r} is not an HTTP header name", field, "give a header name such as x-jwt-payload")
    return name


def _from_header(res: Resource, field: str, h: Json) -> Json:
    out: Json = {"name": _header_name(res, f"{field}.name", str(h.get("name") or ""))}
    if h.get("prefix"):
        out["value_prefix"] = str(h["prefix"])
    return out
