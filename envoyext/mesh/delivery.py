"""Deliver one proxy's xDS resources as the files its Envoy watches (file-based xDS).

Layout under the proxy's xDS directory (see the mesh contract): `lds.yaml`, `cds.yaml`,
`rds/<route config name>.yaml`, `eds/<cluster name>.yaml`, each a DiscoveryResponse. Envoy reloads
a file when a file is *moved onto* its path (inotify IN_MOVED_TO), so every file is written to a
temporary name in the same directory and renamed over the old one: Envoy never reads half a file.

Order matters because Envoy applies each file on its own: endpoints and routes first, then
clusters, then listeners, so a listener never names a route config, and a cluster never an EDS
file, that is not there yet; files of resources that disappeared are removed only once the new
listeners and clusters (which no longer name them) are in place.

A file whose resources did not change is left alone, old version and all: Envoy (1.40) applies a
reloaded file whose resources are all unmodified without taking its version (config_dump keeps the
old one), so the versions in the files are exactly what Envoy reports once it has caught up
(`expected_versions` vs `reported_versions`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from envoyext import tempfiles
from envoyext.envoy import xds
from envoyext.mesh.model import Json
from envoyext.mesh.translate import ProxyConfig

T = xds.T
LISTENER = T + "envoy.config.listener.v3.Listener"
CLUSTER = T + "envoy.config.cluster.v3.Cluster"
ROUTE_CONFIGURATION = T + "envoy.config.route.v3.RouteConfiguration"
CLUSTER_LOAD_ASSIGNMENT = T + "envoy.config.endpoint.v3.ClusterLoadAssignment"

LDS_FILE = "lds.yaml"
CDS_FILE = "cds.yaml"
RDS_DIR = "rds"
EDS_DIR = "eds"

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def rds_path(name: str, xds_dir: str | Path = "xds") -> Path:
    """Where the route configuration `name` is delivered (what an HCM's rds config_source names)."""
    return Path(xds_dir) / RDS_DIR / f"{_file_name(name)}.yaml"


def eds_path(cluster: str, xds_dir: str | Path = "xds") -> Path:
    """Where the endpoints of EDS cluster `cluster` are delivered (its eds_config's path)."""
    return Path(xds_dir) / EDS_DIR / f"{_file_name(cluster)}.yaml"


def _file_name(name: str) -> str:
    # Istio's names ("outbound|9080|v1|reviews.default.svc.cluster.local", "http.8080") are valid
    # file names as they are; only a separator or a leading dot (hidden, or our temp files) is not.
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise ValueError(f"resource name {name!r} cannot be a file name")
    return name


def discovery_response(version: str, type_url: str, resources: list[Json]) -> Json:
    return {"version_info": version, "resources": [{"@type": type_url, **r} for r in resources]}


def write(config: ProxyConfig, xds_dir: Path, version: str) -> None:
    """Write (or update) every xDS file of one proxy under `xds_dir`, atomically and in order."""
    xds_dir = Path(xds_dir)
    for sub in (RDS_DIR, EDS_DIR):
        (xds_dir / sub).mkdir(parents=True, exist_ok=True)
    eds = {r["cluster_name"]: r for r in config.endpoints}
    rds = {r["name"]: r for r in config.routes}
    for name, resource in eds.items():
        _write_if_changed(eds_path(name, xds_dir), version, CLUSTER_LOAD_ASSIGNMENT, [resource])
    for name, resource in rds.items():
        _write_if_changed(rds_path(name, xds_dir), version, ROUTE_CONFIGURATION, [resource])
    # Sorted by name: a different order alone is no change to Envoy, so it must be none here.
    _write_if_changed(xds_dir / CDS_FILE, version, CLUSTER, sorted(config.clusters, key=lambda r: r["name"]))
    _write_if_changed(xds_dir / LDS_FILE, version, LISTENER, sorted(config.listeners, key=lambda r: r["name"]))
    _remove_others(xds_dir / EDS_DIR, {eds_path(n, xds_dir).name for n in eds})
    _remove_others(xds_dir / RDS_DIR, {rds_path(n, xds_dir).name for n in rds})


def snapshot(xds_dir: Path) -> dict[str, bytes]:
    """Every delivered file's bytes, by path relative to `xds_dir` (to put back with `restore`)."""
    xds_dir = Path(xds_dir)
    return {str(f.relative_to(xds_dir)): f.read_bytes()
            for f in [*xds_dir.glob("*.yaml"), *xds_dir.glob(f"{RDS_DIR}/*.yaml"), *xds_dir.glob(f"{EDS_DIR}/*.yaml")]}


def restore(xds_dir: Path, files: dict[str, bytes]) -> None:
    """Put a snapshot back, in the same order as `write` (after an update Envoy refused: the files
    again say what Envoy runs, versions included, so the next update is compared with that)."""
    xds_dir = Path(xds_dir)
    rank = {EDS_DIR: 0, RDS_DIR: 1, CDS_FILE: 2, LDS_FILE: 3}
    for rel in sorted(files, key=lambda r: rank.get(r.split("/")[0], 4)):
        path = xds_dir / rel
        if not path.exists() or path.read_bytes() != files[rel]:
            path.parent.mkdir(parents=True, exist_ok=True)
            tempfiles.write_atomically(path, files[rel])
    for sub in (EDS_DIR, RDS_DIR):
        for f in (xds_dir / sub).glob("*.yaml"):
            if f"{sub}/{f.name}" not in files:
                f.unlink()


def read(path: Path) -> Json | None:
    """A delivered DiscoveryResponse, or None if there is none (or it is unreadable)."""
    try:
        doc = yaml.load(Path(path).read_text(), Loader=_Loader)
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def expected_versions(xds_dir: Path) -> dict[str, str]:
    """The versions Envoy reports once it has read every file: {"lds": v, "cds": v, "rds:<name>": v}."""
    out = {}
    for key, path in (("lds", LDS_FILE), ("cds", CDS_FILE)):
        doc = read(Path(xds_dir) / path)
        # An empty resource list (a gateway no Gateway selects has no listeners) leaves Envoy
        # reporting no version at all: there is nothing to wait for.
        if doc is not None and doc.get("resources"):
            out[key] = str(doc.get("version_info", ""))
    for f in sorted((Path(xds_dir) / RDS_DIR).glob("*.yaml")):
        doc = read(f)
        if doc and doc.get("resources"):
            out["rds:" + doc["resources"][0].get("name", f.stem)] = str(doc.get("version_info", ""))
    return out


def reported_versions(config_dump: Json) -> dict[str, str]:
    """The same keys from an admin /config_dump. Only route configs some listener uses appear."""
    out = {}
    for c in config_dump.get("configs", []):
        kind = c.get("@type", "").rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            out["lds"] = c.get("version_info", "")
        elif kind == "ClustersConfigDump":
            out["cds"] = c.get("version_info", "")
        elif kind == "RoutesConfigDump":
            for r in c.get("dynamic_route_configs", []):
                out["rds:" + r["route_config"]["name"]] = r.get("version_info", "")
    return out


def caught_up(expected: dict[str, str], reported: dict[str, str]) -> list[str]:
    """What Envoy still reports differently from the files ([] once it has taken them all in).
    A route config absent from the dump is no listener's (or only a draining one's) and is not
    waited for; a warming listener (its route config still loading) is the caller's to check."""
    return [f"{k}: has {reported.get(k)!r}, file says {v!r}" for k, v in expected.items()
            if (k in reported or not k.startswith("rds:")) and reported.get(k) != v]


def _write_if_changed(path: Path, version: str, type_url: str, resources: list[Json]) -> None:
    old = read(path)
    new = discovery_response(version, type_url, resources)
    if old is not None and _canonical(old.get("resources")) == _canonical(new["resources"]):
        return
    _write(path, new)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _write(path: Path, doc: Json) -> None:
    tempfiles.write_atomically(path, yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False))


def _remove_others(directory: Path, keep: set[str]) -> None:
    for f in directory.glob("*.yaml"):
        if f.name not in keep:
            f.unlink(missing_ok=True)
