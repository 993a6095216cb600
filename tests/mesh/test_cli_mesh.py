"""`envoyext mesh ...` as a user meets it, each command in its own process: render, describe,
graph, up (and Ctrl-C), apply without a mesh, test. Bad input is one line and exit 2; each check
has a negative control that must fail it."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import envoy_pids, run_cli
from tests.mesh.test_live_changes import BASE_FILES, BOOKINFO, ROUTING, mesh_up

SVG = "{http://www.w3.org/2000/svg}"


def files(*paths: Path) -> list[str | Path]:
    return [a for p in paths for a in ("-f", p)]


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# --- render ----------------------------------------------------------------------------------
def test_render_writes_a_tree_each_proxy_validated(tmp_path):
    out = tmp_path / "nested" / "out"  # its parent does not exist yet
    r = run_cli("mesh", "render", *files(*BASE_FILES), "-o", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7 proxies rendered" in r.stdout and "validated by Envoy" in r.stdout
    proxies = sorted(p.name for p in out.iterdir())
    assert proxies == sorted(["details-v1-0", "productpage-v1-0", "ratings-v1-0", "reviews-v1-0", "reviews-v2-0",
                              "reviews-v3-0", "istio-ingressgateway-0"])
    for p in proxies:
        assert (out / p / "bootstrap.yaml").is_file() and (out / p / "xds" / "lds.yaml").is_file()
    cds = (out / "reviews-v1-0" / "xds" / "cds.yaml").read_text()
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in cds


def test_render_a_bad_resource_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROUTING / "reviews-80-20.yaml").read_text().replace("weight: 20", "weight: twenty"))
    out = tmp_path / "out"
    line = one_line_error(run_cli("mesh", "render", *files(*BASE_FILES, bad), "-o", out), "bad.yaml", "weight")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], line
    # Negative control: the same command on the good file succeeds (so the failure was the typo).
    good = run_cli("mesh", "render", "--no-check", *files(*BASE_FILES, ROUTING / "reviews-80-20.yaml"), "-o", out)
    assert good.returncode == 0 and out.is_dir(), good.stderr


# --- describe, graph -------------------------------------------------------------------------
def test_describe_names_istios_clusters_whole():
    r = run_cli("mesh", "describe", "reviews-v1", *files(*BASE_FILES, ROUTING / "reviews-80-20.yaml"))
    assert r.returncode == 0, r.stderr
    for table in ("listeners", "routes", "clusters", "endpoints"):
        assert table in r.stdout
    for name in ("outbound|9080|v1|reviews.default.svc.cluster.local",
                 "outbound|9080|v2|reviews.default.svc.cluster.local", "inbound|9080||", "virtualInbound"):
        assert name in r.stdout, name
    # Negative control: without the destination rules there are no subsets, so no v2 cluster.
    bare = run_cli("mesh", "describe", "reviews-v1", *files(BOOKINFO / "platform.yaml"))
    assert bare.returncode == 0 and "outbound|9080|v2|reviews" not in bare.stdout
    one_line_error(run_cli("mesh", "describe", "nosuch", *files(*BASE_FILES)), "nosuch")


def _texts(svg: Path) -> list[str]:
    root = ET.parse(svg).getroot()  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_graph_is_an_svg_with_workloads_and_weights(tmp_path):
    out = tmp_path / "f.svg"
    r = run_cli("mesh", "graph", *files(*BASE_FILES, ROUTING / "reviews-80-20.yaml"), "-o", out)
    assert r.returncode == 0, r.stderr
    texts = _texts(out)
    assert any("reviews-v1" in t for t in texts) and any("reviews-v2" in t for t in texts), texts
    assert any("80%" in t for t in texts) and any("20%" in t for t in texts), texts
    # Negative control: all traffic to v1 draws no 80/20 split.
    r = run_cli("mesh", "graph", *files(*BASE_FILES, ROUTING / "all-v1.yaml"), "-o", out)
    assert r.returncode == 0 and not any("20%" in t for t in _texts(out))


# --- up, apply -------------------------------------------------------------------------------
def _apps_of(workdir: Path) -> list[str]:
    """The stand-in apps of the mesh that ran in `workdir` (by their listen addresses)."""
    base = json.loads((workdir / "state.json").read_text())["base"]
    r = subprocess.run(["pgrep", "-f", rf"envoyext\.mesh\.workload .*--listen 127\.{base + 1}\."],
                       capture_output=True, text=True)
    return r.stdout.split()


def test_up_prints_urls_answers_and_ctrl_c_stops_everything(tmp_path):
    before = envoy_pids()
    up = mesh_up(tmp_path / "mesh", [*BASE_FILES, ROUTING / "all-v1.yaml"])
    try:
        assert len(up.admins) == 7 and "istio-ingressgateway-0" in up.admins
        with urllib.request.urlopen(f"http://{up.gateway}/productpage", timeout=10) as resp:
            assert resp.status == 200 and resp.headers["x-envoyext-pod"] == "productpage-v1-0"
        for url in up.admins.values():
            with urllib.request.urlopen(url + "ready", timeout=10) as resp:
                assert resp.read().strip() == b"LIVE"
        envoys = envoy_pids() - before
        apps = _apps_of(up.workdir)
        assert len(envoys) == 7 and len(apps) == 6, (envoys, apps)  # the gateway has no app
    finally:
        up.proc.send_signal(signal.SIGINT)
        out, _err = up.proc.communicate(timeout=60)
    assert up.proc.returncode == 0 and "stopped" in out
    assert envoy_pids() - before == set() and _apps_of(up.workdir) == []


def test_apply_with_no_running_mesh_is_one_line(tmp_path):
    one_line_error(run_cli("mesh", "apply", "--workdir", tmp_path, *files(ROUTING / "all-v1.yaml")),
                   "no mesh is running here", "mesh up")
    # A mesh that ran here and stopped: its state is left, its process is gone.
    (tmp_path / "state.json").write_text(json.dumps({"pid": 2 ** 22 + 1, "files": [], "applied": [], "base": 64}))
    one_line_error(run_cli("mesh", "apply", "--workdir", tmp_path, *files(ROUTING / "all-v1.yaml")), "stopped")


# --- test ------------------------------------------------------------------------------------
def _scenario(tmp_path: Path, status: int) -> Path:
    resources = ", ".join(str(p) for p in [*BASE_FILES, ROUTING / "all-v1.yaml"])
    path = tmp_path / f"sc-{status}.yaml"
    path.write_text(f"""name: cli-mesh
mesh: {{resources: [{resources}]}}
cases:
  - name: the gateway routes /productpage to productpage
    from: ingress
    request: {{path: /productpage}}
    repeat: 3
    expect: {{status: {status}, answered_by: {{productpage-v1: 1.0}}}}
""")
    return path


def test_mesh_test_exit_codes(tmp_path):
    r = run_cli("mesh", "test", "--scenario", _scenario(tmp_path, 200), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [x["passed"] for x in json.loads(r.stdout)] == [True]
    failing = run_cli("mesh", "test", "--scenario", _scenario(tmp_path, 404))
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "404" in failing.stdout
    not_mesh = tmp_path / "plain.yaml"
    not_mesh.write_text("name: plain\ncases: [{name: a, request: {path: /}, expect: {status: 200}}]\n")
    assert run_cli("mesh", "test", "--scenario", not_mesh).returncode == 2

