"""Envoy Gateway: a built filter as an EnvoyExtensionPolicy (gateway.envoyproxy.io/v1alpha1).

Facts from Envoy Gateway's API (envoyproxy/gateway api/v1alpha1: EnvoyExtensionPolicySpec, Lua, Wasm,
WasmCodeSource, HTTPWasmCodeSource, ImageWasmCodeSource, PolicyTargetReferences, at d32f282):
- targetRefs: group gateway.networking.k8s.io, kind Gateway | ListenerSet | HTTPRoute | GRPCRoute | UDPRoute |
  TCPRoute | TLSRoute, name (and optional sectionName), in the policy's namespace.
- lua[]: type Inline with `inline` (the script), or ValueRef (a ConfigMap). One script, no Envoy Lua options.
- wasm[]: name, rootID, code {type HTTP (http.url, http.sha256) | Image (image.url, image.sha256: the image
  digest), pullPolicy IfNotPresent | Always}, config (any JSON, given to the module as a JSON string),
  failOpen. No vm_id, no reload-on-failure.
Validated against envoyext's own JSON Schema of that subset (schemas/envoyextensionpolicy.json).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

from envoyext.artifact import Artifact, FailurePolicy, lua_code
from envoyext.errors import UserError
from envoyext.publish import istio

Json = dict[str, Any]
SCHEMA = Path(__file__).parent / "schemas" / "envoyextensionpolicy.json"
KINDS = ("Gateway", "ListenerSet", "HTTPRoute", "GRPCRoute", "UDPRoute", "TCPRoute", "TLSRoute")


def extension_policy(artifact: Artifact, config: Any, namespace: str, target_refs: tuple[istio.TargetRef, ...],
                     url: str | None = None, pull_policy: str | None = None) -> Json:
    """The EnvoyExtensionPolicy attaching the filter to `target_refs` (Lua inline; Wasm by `url`)."""
    if not target_refs:
        raise UserError("an EnvoyExtensionPolicy needs the Gateway (or route) it attaches to", field="--target-ref",
                        fix="add --target-ref NAME (a Gateway) or --target-ref HTTPRoute/NAME")
    for ref in target_refs:
        if ref.kind not in KINDS:
            raise UserError(f"Envoy Gateway attaches policies to {', '.join(KINDS)}, not {ref.kind}",
                            field="--target-ref", fix="write e.g. --target-ref Gateway/eg or HTTPRoute/backend")
    spec: Json = {"targetRefs": [r.json({}) for r in target_refs]}
    if artifact.kind == "lua":
        spec["lua"] = [{"type": "Inline", "inline": _lua_script(artifact, config)}]
    else:
        spec["wasm"] = [_wasm(artifact, config, url, pull_policy)]
    return {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy",
            "metadata": {"name": istio.resource_name(artifact), "namespace": namespace}, "spec": spec}


def _lua_script(artifact: Artifact, config: Any) -> str:
    options = dict(artifact.lua_options or {})
    if options.get("source_codes") or not artifact.has_default_script:
        raise UserError("Envoy Gateway runs one Lua script per entry; this filter has named scripts (lua.source_codes)",
                        file="filter.yaml", field="lua.source_codes", fix="publish it --as envoyfilter")
    extra = sorted(k for k in options if k not in ("source_codes", "default_source_code"))
    if extra:
        raise UserError(f"an EnvoyExtensionPolicy has no place for Envoy's Lua option {extra[0]}", file="filter.yaml",
                        field=f"lua.{extra[0]}", fix="remove it, or publish --as envoyfilter")
    return lua_code(artifact.path.read_text(), config, artifact.lua_libraries)


def _wasm(artifact: Artifact, config: Any, url: str | None, pull_policy: str | None) -> Json:
    if not url:
        raise UserError("Envoy Gateway fetches a Wasm module by URL", field="--url",
                        fix="give --url https://HOST/PATH.wasm (where the module is served) or --url oci://IMAGE")
    if artifact.failure_policy == FailurePolicy.RELOAD:
        raise UserError("Envoy Gateway has no reload-on-failure for Wasm (failOpen true or false only)",
                        file="filter.yaml", field="failure_policy", fix="use fail_closed or fail_open")
    if isinstance(config, str):
        raise UserError("Envoy Gateway hands a Wasm module its config as JSON: a string config would arrive quoted",
                        file="filter.yaml", field="config", fix="give the config as a JSON object")
    code: Json
    if url.startswith("oci://"):
        image: Json = {"url": url}
        _, _, digest = url.partition("@sha256:")
        if digest:
            image["sha256"] = digest   # an image's sha256 is its digest, not the module's
        code = {"type": "Image", "image": image}
    else:
        istio.module_url(url)
        code = {"type": "HTTP", "http": {"url": url, "sha256": istio.sha256_of(artifact)}}
    if pull_policy:
        code["pullPolicy"] = pull_policy
    wasm: Json = {"name": artifact.name}
    if artifact.root_id:
        wasm["rootID"] = artifact.root_id
    wasm["code"] = code
    if config is not None:
        wasm["config"] = config
    wasm["failOpen"] = artifact.failure_policy == FailurePolicy.FAIL_OPEN
    return wasm


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def check(doc: Json) -> None:
    """`doc` against the schema of what envoyext emits; a UserError naming the field otherwise."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: len(e.absolute_path))
    if errors:
        err = errors[-1]
        while err.context:
            err = max(err.context, key=lambda e: len(e.absolute_path))
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise UserError("the EnvoyExtensionPolicy envoyext would publish is refused by its schema: "
                        f"{err.message[:160]}", field=where, fix="report this as an envoyext bug, with the filter.yaml")
