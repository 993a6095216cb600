"""`envoyext mesh render`: every proxy's config written out, and each checked by Envoy itself.

What is written is what `mesh up` serves: per proxy a directory with `bootstrap.yaml` and the
`xds/` files Envoy watches. Envoy's `--mode validate` reads only the bootstrap (it subscribes to
nothing), so each proxy's xDS resources are also folded into one static bootstrap (routes inline in
their connection managers, EDS endpoints inline in their clusters) and that is what Envoy checks.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from envoyext import tempfiles
from envoyext.errors import EnvoyRejected, UserError
from envoyext.mesh.model import Json, Mesh
from envoyext.mesh.translate import ProxyConfig

HCM = "envoy.filters.network.http_connection_manager"
# Each proxy's xDS files, relative to its directory, which is Envoy's working directory: the
# configs name no absolute path, so a rendered tree can be moved, diffed and golden-tested.
XDS_DIR = "xds"


def static_bootstrap(bootstrap: Json, config: ProxyConfig) -> Json:
    """`bootstrap` with `config`'s dynamic resources folded in as static ones (for validation)."""
    out = copy.deepcopy(bootstrap)
    out.pop("dynamic_resources", None)
    routes = {r["name"]: r for r in config.routes}
    endpoints = {e["cluster_name"]: e for e in config.endpoints}
    static = out.setdefault("static_resources", {})
    listeners = copy.deepcopy(config.listeners)
    for listener in listeners:
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                hcm = f.get("typed_config", {})
                if f.get("name") == HCM and "rds" in hcm:
                    name = hcm.pop("rds")["route_config_name"]
                    hcm["route_config"] = routes.get(name, {"name": name})
    clusters = copy.deepcopy(config.clusters)
    for c in clusters:
        if c.get("type") == "EDS":
            c["type"] = "STATIC"
            c.pop("eds_cluster_config", None)
            c["load_assignment"] = endpoints.get(c["name"], {"cluster_name": c["name"]})
    static["listeners"] = [*static.get("listeners", []), *listeners]
    static["clusters"] = [*static.get("clusters", []), *clusters]
    return out


def render(mesh: Mesh, out: Path, *, check: bool = True,
           on_proxy: Callable[[str], None] | None = None) -> list[Path]:
    """Write every proxy's bootstrap and xDS files under `out/<proxy>/`; with `check`, each proxy's
    config is first validated by Envoy. Nothing is left half-written: the tree is built beside
    `out` and moved into place whole."""
    from envoyext.envoy import process
    from envoyext.mesh import delivery, fetch, sds, tokens
    from envoyext.mesh.translate import bootstrap as bootstrap_mod
    from envoyext.mesh.translate import tls, translate

    configs = translate(mesh, jwks=tokens.fetch_jwks, fetch=fetch.fetch)
    staging = tempfiles.temp_dir_beside(out)
    written = []
    # The configs name each proxy's certificates by SDS file (sds/default.yaml, sds/ROOTCA.yaml);
    # the rendered tree holds no keys ('envoyext mesh up' issues them), so validation uses a
    # throwaway CA's files.
    home = sds.validation_home(mesh, staging / ".validate") if check else None
    try:
        for name, config in configs.items():
            if on_proxy:
                on_proxy(name)
            proxy_dir = out / name
            bootstrap = bootstrap_mod.for_proxy(mesh, config.proxy, XDS_DIR)
            if check:
                try:
                    process.validate(tls.absolute_sds_paths(static_bootstrap(bootstrap, config), str(home)))
                except EnvoyRejected as e:
                    raise EnvoyRejected(f"Envoy rejects the config of proxy {name}: {e.message}", fix=e.fix) from None
            target = staging / name
            (target / XDS_DIR).mkdir(parents=True)
            (target / "bootstrap.yaml").write_text(dump(bootstrap))
            delivery.write(config, target / XDS_DIR, version="1")
            written.append(proxy_dir)
        if home is not None:
            shutil.rmtree(home)
        if out.exists():
            if not out.is_dir():
                raise UserError("exists and is not a directory", file=out, fix="choose another -o")
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return written


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)
