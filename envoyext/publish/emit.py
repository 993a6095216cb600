"""`envoyext publish`: a project's built filter as the resource a cluster applies, validated
against Istio's CRD schema of its kind and version before anything is written.

Validation goes through envoyext.mesh.resources, the same loader (structural schema and the CEL
rules a cluster enforces) that reads a user's files, so what is published is what `envoyext mesh`
would accept. The output is written whole or not at all (a temporary file renamed into place).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import yaml

from envoyext import tempfiles
from envoyext.artifact import Artifact
from envoyext.errors import UserError
from envoyext.publish import istio

Form = Literal["envoyfilter", "wasmplugin"]


def resource(artifact: Artifact, config: Any, where: istio.Placement, form: Form | None = None,
             url: str | None = None) -> istio.Json:
    """The resource for `artifact`: WasmPlugin for Wasm and EnvoyFilter for Lua unless `form` says;
    `url`: where the WasmPlugin loads the module from (default: the local file)."""
    if form == "wasmplugin" and artifact.kind != "wasm":
        raise UserError("a WasmPlugin carries a Wasm module; this filter is Lua", field="--as",
                        fix="publish a Lua filter --as envoyfilter")
    if form == "envoyfilter":
        return istio.envoy_filter(artifact, config, where)
    if form == "wasmplugin" or (url and artifact.kind == "wasm"):
        return istio.wasm_plugin(artifact, config, where, url=url)
    return istio.for_artifact(artifact, config, where)


def dump(doc: istio.Json) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def validated(doc: istio.Json) -> str:
    """The resource as YAML, once Istio's CRD schema accepts it (else the loader's one-line error,
    naming the field)."""
    from envoyext.mesh import resources
    text = dump(doc)
    folder = tempfiles.mkdtemp("publish")   # the loader reads files (its errors carry line numbers)
    try:
        path = folder / f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(text)
        resources.load([path])
    except UserError as e:
        raise UserError(f"the {doc['kind']} envoyext would publish is refused by Istio's schema: {e.message}",
                        field=e.field, fix="report this as an envoyext bug, with the filter.yaml") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return text


def write(text: str, out: Path) -> None:
    """`text` to `out`, whole or not at all."""
    if out.exists() and out.is_dir():
        raise UserError("is a directory", file=out, fix="give a file name, e.g. -o filter.yaml")
    if not out.parent.exists():
        raise UserError("its directory does not exist", file=out, fix="create the directory first")
    tempfiles.write_atomically(out, text)
