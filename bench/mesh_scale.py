"""Translator scale: generated meshes of N services (each a Deployment per version, a Service, a
VirtualService splitting 90/10 between two subsets, a DestinationRule with the two subsets, an
AuthorizationPolicy allowing GET from the next service's identity), timed
from Resources to every proxy's config, with the size of one sidecar's config, and Envoy's own time
to load that sidecar's config (the physical limit: Envoy parsing what we produced).

    python bench/mesh_scale.py [N ...]      (default: 10 100 1000 5000)
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoyext.mesh.model import AddressPlan, Resource  # noqa: E402


def generated(n: int) -> list[Resource]:
    out: list[Resource] = []

    def add(kind: str, api: str, name: str, spec: dict, labels: dict | None = None) -> None:
        meta = {"name": name, "namespace": "default", **({"labels": labels} if labels else {})}
        out.append(Resource(kind, api, name, "default", meta, spec, "<generated>", len(out)))

    for i in range(n):
        svc = f"svc{i}"
        add("Service", "v1", svc, {"selector": {"app": svc}, "ports": [{"name": "http", "port": 8000}]})
        for v in ("v1", "v2"):
            labels = {"app": svc, "version": v}
            add("Deployment", "apps/v1", f"{svc}-{v}", {
                "replicas": 1, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "app", "image": "x",
                                                      "ports": [{"containerPort": 8000}]}]}}},
                labels)
        add("VirtualService", "networking.istio.io/v1", svc, {"hosts": [svc], "http": [{"route": [
            {"destination": {"host": svc, "subset": "v1"}, "weight": 90},
            {"destination": {"host": svc, "subset": "v2"}, "weight": 10}]}]})
        add("DestinationRule", "networking.istio.io/v1", svc, {"host": svc, "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]})
        add("AuthorizationPolicy", "security.istio.io/v1", svc, {
            "selector": {"matchLabels": {"app": svc}}, "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/default/sa/svc{(i + 1) % n}"]}}],
                       "to": [{"operation": {"methods": ["GET"]}}]}]})
    return out


def measure(n: int) -> dict:
    from envoyext.mesh import build
    from envoyext.mesh.translate import translate
    translate(build.mesh(generated(1), AddressPlan()))   # imports and one-time set-up, not counted
    resources = generated(n)

    def once():
        t0 = time.perf_counter()
        mesh = build.mesh(resources, AddressPlan())
        one = next(p for p in mesh.proxies if p.kind == "sidecar")
        t1 = time.perf_counter()
        configs = translate(mesh, only=[one.name])
        return mesh, configs[one.name], t1 - t0, time.perf_counter() - t1

    mesh, c, model_s, translate_s = once()          # timed without tracemalloc (it slows Python 2-3x)
    tracemalloc.start()
    once()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = len(json.dumps({"listeners": c.listeners, "clusters": c.clusters, "routes": c.routes,
                           "endpoints": c.endpoints}))
    envoy_s = envoy_load_time(mesh, c)
    return {"services": n, "proxies": len(mesh.proxies), "model_s": round(model_s, 3),
            "translate_one_sidecar_s": round(translate_s, 3),
            "one_sidecar_config_bytes": size, "peak_mem_mb": round(peak / 2**20, 1),
            "envoy_validate_one_sidecar_s": envoy_s}


def envoy_load_time(mesh, config) -> float:
    """Envoy's `--mode validate` on one sidecar's config folded into a static bootstrap."""
    import tempfile

    from envoyext.envoy import process
    from envoyext.mesh import sds
    from envoyext.mesh.render import XDS_DIR, static_bootstrap
    from envoyext.mesh.translate import bootstrap, tls
    with tempfile.TemporaryDirectory(prefix="envoyext-scale-") as home:
        sds.validation_home(mesh, Path(home))   # the SDS files the config names (a throwaway CA's)
        doc = tls.absolute_sds_paths(static_bootstrap(bootstrap.for_proxy(mesh, config.proxy, XDS_DIR), config), home)
        t0 = time.perf_counter()
        process.validate(doc)
        return round(time.perf_counter() - t0, 3)


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [10, 100, 1000, 5000]
    for n in sizes:
        print(json.dumps(measure(n)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])


def profile(n: int, top: int = 12) -> dict:
    """cProfile of one sidecar's translation in a mesh of `n` services: the functions with the most
    cumulative time (the translator's own code first: envoyext/ frames)."""
    import cProfile
    import pstats

    from envoyext.mesh import build
    from envoyext.mesh.translate import translate
    translate(build.mesh(generated(1), AddressPlan()))
    mesh = build.mesh(generated(n), AddressPlan())
    one = next(p for p in mesh.proxies if p.kind == "sidecar")
    prof = cProfile.Profile()
    prof.enable()
    translate(mesh, only=[one.name])
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.items():
        if "envoyext" not in file:
            continue
        short = file[file.rindex("envoyext"):]
        rows.append({"function": f"{short}:{line} {func}", "calls": nc, "cumulative_s": round(ct, 3),
                     "own_s": round(tt, 3)})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return {"services": n, "top": rows[:top]}
