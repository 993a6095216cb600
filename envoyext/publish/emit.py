"""`envoyext publish`: a project's built filter as what a cluster applies -- Istio's EnvoyFilter or
WasmPlugin, Envoy Gateway's EnvoyExtensionPolicy, or a plain Envoy filter entry -- validated as its
consumer would before anything is written.

Istio's kinds go through envoyext.mesh.resources, the same loader (structural schema and the CEL
rules a cluster enforces) that reads a user's files, so what is published is what `envoyext mesh`
would accept; an EnvoyFilter must also pass Istio's analyzers and the webhook's structural checks
(publish/analyze.py). An EnvoyExtensionPolicy is checked against envoyext's schema of the fields it
emits, a plain Envoy entry by `envoy --mode validate`. The output is written whole or not at all
(a temporary file renamed into place).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from envoyext import tempfiles
from envoyext.artifact import Artifact
from envoyext.envoy import filter_entry
from envoyext.errors import EnvoyRejected, UserError
from envoyext.publish import analyze, gateway, istio, plain

Form = Literal["envoyfilter", "wasmplugin", "envoy-gateway", "envoy"]
URL_SCHEMES = ("oci://", "https://", "http://", "file://")   # what a WasmPlugin's url may start with


def resource(artifact: Artifact, config: Any, where: istio.Placement, form: Form | None = None,
             url: str | None = None, routes: Sequence[istio.RouteConfig] = ()) -> istio.Json:
    """What publishing `artifact` emits: WasmPlugin for Wasm and EnvoyFilter for Lua unless `form` says;
    `url` where a cluster fetches the Wasm module; `routes` per-route configs (EnvoyFilter only)."""
    form = form or ("wasmplugin" if artifact.kind == "wasm" else "envoyfilter")
    if form == "wasmplugin" and artifact.kind != "wasm":
        raise UserError("a WasmPlugin carries a Wasm module; this filter is Lua", field="--as",
                        fix="publish a Lua filter --as envoyfilter")
    if url and artifact.kind != "wasm":
        raise UserError("a Lua filter is published inline; there is no module to fetch", field="--url",
                        fix="drop --url")
    if routes and form != "envoyfilter":
        raise UserError(f"per-route configs are carried by an EnvoyFilter, not by --as {form}", field="--routes-from",
                        fix="add --as envoyfilter, or drop --routes-from")
    if url and form in ("envoyfilter", "envoy") and not url.startswith(("https://", "http://")):
        raise UserError(f"Envoy fetches a module over http(s) itself; {url.split(':')[0]} is for a WasmPlugin",
                        field="--url", fix="give an https:// URL, or publish --as wasmplugin")
    if form in ("envoy-gateway", "envoy") and where.selector:
        raise UserError(f"--as {form} selects no workloads by labels", field="--selector",
                        fix="drop --selector" + (" (attach with --target-ref)" if form == "envoy-gateway" else ""))
    if form == "envoy" and where.target_refs:
        raise UserError("a plain Envoy entry attaches to nothing", field="--target-ref", fix="drop --target-ref")
    if url and form == "wasmplugin" and not url.startswith(URL_SCHEMES):
        raise UserError(f"{url!r} is not a WasmPlugin url", field="--url",
                        fix="give an oci://, https:// or http:// URL of the module")
    if form == "envoyfilter":
        return istio.envoy_filter(artifact, config, where, url, routes)
    if form == "wasmplugin":
        return istio.wasm_plugin(artifact, config, where, url)
    if form == "envoy-gateway":
        return gateway.extension_policy(artifact, config, where.namespace, where.target_refs, url,
                                        where.image_pull_policy)
    return plain.snippet(artifact, config, url)


def routes_from(scenario_file: Path, artifact: Artifact) -> list[istio.RouteConfig]:
    """The per-route configs of a scenario's routes (`routes[].per_filter_config`), by route name."""
    from envoyext import scenario
    sc = scenario.load(scenario_file)
    out = [istio.RouteConfig(r.name, r.per_filter_config, f"routes[{i}].per_filter_config")
           for i, r in enumerate(sc.routes) if r.per_filter_config is not None]
    if not out:
        raise UserError("no route has a per_filter_config", file=scenario_file, field="routes",
                        fix="name a scenario whose routes carry per_filter_config, or drop --routes-from")
    for r in out:   # a bad one is refused here, naming the scenario's field
        try:
            filter_entry.per_route(artifact, r.config, r.field)
        except UserError as e:
            raise UserError(e.message, file=scenario_file, field=e.field, fix=e.fix) from None
    return out


def notes(artifact: Artifact, doc: istio.Json, url: str | None, where: istio.Placement | None = None) -> list[str]:
    """What the user should know about an emitted resource that is valid but not usable everywhere:
    a Wasm module published as this machine's file, a vm_id Envoy Gateway has no field for, Istio
    targetRefs that a sidecar ignores."""
    out = []
    kind = doc.get("kind")
    if artifact.kind == "wasm" and artifact.vm_id and kind == "EnvoyExtensionPolicy":
        out.append(f"note: Envoy Gateway chooses the Wasm vm_id itself; filter.yaml's vm_id {artifact.vm_id!r} is "
                   "left out (plugins that share data through it will not share a VM)")
    if artifact.kind == "wasm" and not url and kind != "EnvoyExtensionPolicy":
        at = "its url is file://" if kind == "WasmPlugin" else "vm_config.code.local"
        who = "an Envoy on another machine" if kind is None else "a cluster's proxies"
        out.append(f"note: the Wasm module is this machine's file {artifact.path} ({at}); {who} "
                   "cannot read it: give --url where the module is served")
    refs = where.target_refs if where is not None and kind in ("EnvoyFilter", "WasmPlugin") else ()
    if refs and (where is not None and where.context != "GATEWAY" or any(r.kind == "Service" for r in refs)):
        out.append("note: Istio attaches a resource with targetRefs only to Gateway API gateways (Gateway) and "
                   "waypoints (Service, GatewayClass); sidecars ignore it: select sidecars with --selector")
    return out


def dump(doc: istio.Json) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def validated(doc: istio.Json) -> str:
    """The resource as YAML, once what would check it in a cluster accepts it, else a one-line
    UserError naming the field: Istio's kinds against Istio's CRD schema (the loader's error) and
    Istio's EnvoyFilter analyzers and admission checks; an EnvoyExtensionPolicy against its schema;
    a plain Envoy snippet by `envoy --mode validate`."""
    kind = doc.get("kind")
    if kind is None:
        return _validated_plain(doc)
    if kind == "EnvoyExtensionPolicy":
        gateway.check(doc)
        return dump(doc)
    text = dump(doc)
    from envoyext.mesh import resources
    folder = tempfiles.mkdtemp("publish")   # the loader reads files (its errors carry line numbers)
    try:
        path = folder / f"{kind.lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(text)
        resources.load([path])
    except UserError as e:
        raise UserError(f"the {kind} envoyext would publish is refused by Istio's schema: {e.message}",
                        field=e.field, fix="report this as an envoyext bug, with the filter.yaml") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for f in analyze.admission(doc) + analyze.analyze(doc):
        raise UserError(f"the {kind} envoyext would publish is flagged by Istio ({f.code}): {f.message}",
                        field=f.field, fix=f.fix())
    return text


def _validated_plain(doc: istio.Json) -> str:
    from envoyext.envoy import process
    try:
        process.validate(plain.bootstrap(doc))
    except EnvoyRejected as e:
        # A proto constraint's reason comes after the (multi-line) message Envoy prints.
        found = re.search(r"Proto constraint validation failed \((.*)\)", getattr(e, "envoy_log", "") or "")
        reason = found.group(1).rpartition("caused by ")[2] if found else e.message
        raise UserError(f"the filter entry envoyext would publish is refused by 'envoy --mode validate': {reason}",
                        field="http_filters[0]", fix="correct the filter's configuration in filter.yaml") from None
    return plain.header(doc) + dump(doc)


def write(text: str, out: Path) -> None:
    """`text` to `out`, whole or not at all."""
    if out.exists() and out.is_dir():
        raise UserError("is a directory", file=out, fix="give a file name, e.g. -o filter.yaml")
    if not out.parent.exists():
        raise UserError("its directory does not exist", file=out, fix="create the directory first")
    tempfiles.write_atomically(out, text)
