"""`envoyext publish --apply [--dry-run]`: server-side apply through the Kubernetes API.

What runs everywhere: the pure parts of envoyext.publish.kube (the API path of each kind, stripping
what the server manages, the diff, the kubeconfig search, what an API error means), the request
the client would send (captured at the client's transport, never sent), and the CLI's one-line
failures: no kubeconfig, an unknown context, an API server that refuses connections.

What needs a cluster: applying for real. It runs when a kubeconfig ($ENVOYEXT_KUBECONFIG, else
$KUBECONFIG or ~/.kube/config) reaches an API server that serves Istio's EnvoyFilter, and is
skipped otherwise; there is no stand-in server here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from envoyext.cli import main
from envoyext.errors import UserError
from envoyext.publish import kube

ROOT = Path(__file__).resolve().parents[1]
CORS_LUA = ROOT / "filters" / "cors" / "lua"
NO_CLUSTER = "needs a Kubernetes cluster with Istio's CRDs (none reachable here)"

ENVOY_FILTER = {
    "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
    "metadata": {"name": "cors", "namespace": "bookinfo", "labels": {"app": "reviews"}},
    "spec": {"workloadSelector": {"labels": {"app": "reviews"}}, "configPatches": [{"applyTo": "HTTP_FILTER"}]},
}
# As the API server returns it: the applied object plus what the server manages.
SERVER_SIDE = {
    **ENVOY_FILTER,
    "metadata": {**ENVOY_FILTER["metadata"], "uid": "4f1c2a9e-0b7d-4c55-9a43-2f0f3e0c9d11", "resourceVersion": "81213",
                 "generation": 3, "creationTimestamp": "2026-12-01T10:00:00Z",
                 "managedFields": [{"manager": "envoyext", "operation": "Apply", "fieldsType": "FieldsV1"}]},
    "status": {"validationMessages": []},
}
REF = kube.ref_of(ENVOY_FILTER)


# ---- pure parts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("api_version, kind, group, version, plural", [
    ("networking.istio.io/v1alpha3", "EnvoyFilter", "networking.istio.io", "v1alpha3", "envoyfilters"),
    ("extensions.istio.io/v1alpha1", "WasmPlugin", "extensions.istio.io", "v1alpha1", "wasmplugins"),
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy", "gateway.envoyproxy.io", "v1alpha1",
     "envoyextensionpolicies"),
])
def test_api_path_from_api_version_and_kind(api_version, kind, group, version, plural):
    ref = kube.ref_of({"apiVersion": api_version, "kind": kind, "metadata": {"name": "f", "namespace": "ns"}})
    assert (ref.group, ref.version, ref.plural, ref.namespace, ref.name) == (group, version, plural, "ns", "f")
    assert kube.plural(kind) == plural


def test_a_kind_envoyext_does_not_apply_is_one_line():
    with pytest.raises(UserError, match="does not apply a Deployment"):
        kube.plural("Deployment")


def test_strip_drops_what_the_server_manages_and_nothing_else():
    before = json.dumps(SERVER_SIDE, sort_keys=True)
    assert kube.strip(SERVER_SIDE) == ENVOY_FILTER
    assert json.dumps(SERVER_SIDE, sort_keys=True) == before     # a copy: the input is untouched
    assert kube.strip(None) is None


def test_diff_of_an_unchanged_object_is_empty():
    assert kube.diff(SERVER_SIDE, {**SERVER_SIDE, "metadata": {**SERVER_SIDE["metadata"], "resourceVersion": "9"}},
                     REF) == ""


def test_diff_against_an_absent_object_adds_every_line():
    text = kube.diff(None, SERVER_SIDE, REF)
    header, body = text.splitlines()[:3], text.splitlines()[3:]
    assert header[0] == "--- EnvoyFilter bookinfo/cors (absent)" and header[1].startswith("+++ ")
    assert body and all(line.startswith("+") for line in body)
    assert "+  name: cors" in body and not any("resourceVersion" in line or "status" in line for line in body)


def test_diff_shows_the_changed_field():
    changed = {**SERVER_SIDE, "spec": {**SERVER_SIDE["spec"], "priority": 7}}
    lines = kube.diff(SERVER_SIDE, changed, REF).splitlines()
    assert "+  priority: 7" in lines
    assert [line for line in lines[2:] if line[:1] in "+-"] == ["+  priority: 7"]


def test_kubeconfig_search_order(tmp_path):
    home, given, a, b = tmp_path / "home", tmp_path / "given", tmp_path / "a", tmp_path / "b"
    (home / ".kube").mkdir(parents=True)
    for f in (home / ".kube" / "config", given, b):
        f.write_text("{}")
    assert kube.kubeconfig_files(given, {"KUBECONFIG": str(b)}, home) == [given]
    assert kube.kubeconfig_files(None, {"KUBECONFIG": f"{a}{os.pathsep}{b}"}, home) == [b]   # a: absent
    assert kube.kubeconfig_files(None, {}, home) == [home / ".kube" / "config"]
    with pytest.raises(UserError, match="kubeconfig not found"):
        kube.kubeconfig_files(a, {}, home)
    with pytest.raises(UserError, match=r"\$KUBECONFIG=.*none of its files exists"):   # no fallback, as kubectl
        kube.kubeconfig_files(None, {"KUBECONFIG": str(a)}, home)


def test_no_kubeconfig_names_every_place_tried(tmp_path):
    with pytest.raises(UserError) as e:
        kube.kubeconfig_files(None, {}, tmp_path)
    line = e.value.one_line()
    for place in ("--kubeconfig", "$KUBECONFIG", "~/.kube/config", str(tmp_path / ".kube" / "config"), "fix:"):
        assert place in line


def _kubeconfig(path: Path, server: str = "https://127.0.0.1:6443", current: str | None = "ctx",
                contexts: tuple[str, ...] = ("ctx",)) -> Path:
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": n, "context": {"cluster": "c", "user": "u"}} for n in contexts]}
    if current is not None:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_context_choice(tmp_path):
    one = _kubeconfig(tmp_path / "one", current=None, contexts=("dev",))
    two = _kubeconfig(tmp_path / "two", current="prod", contexts=("prod", "stage"))
    assert kube.choose_context([one, two], None) == "prod"        # merged: the first current-context set
    assert kube.choose_context([one, two], "dev") == "dev"
    with pytest.raises(UserError, match=r"no context 'qa' in the kubeconfig \(it has: dev, prod, stage\)"):
        kube.choose_context([one, two], "qa")
    with pytest.raises(UserError, match="sets no current-context"):
        kube.choose_context([one], None)
    bad = tmp_path / "bad"
    bad.write_text("clusters: [\n")
    with pytest.raises(UserError, match="not YAML"):
        kube.choose_context([bad], None)


def _status(code: int, reason: str, message: str, details: dict | None = None) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "details": details or {}, "code": code})


@pytest.mark.parametrize("code, body, says, fix", [
    (404, _status(404, "NotFound", "the server could not find the requested resource"),
     "no EnvoyFilter kind on this cluster (networking.istio.io/v1alpha3 is not served) — is Istio installed?",
     "install Istio"),
    (404, _status(404, "NotFound", 'namespaces "bookinfo" not found', {"name": "bookinfo", "kind": "namespaces"}),
     "namespace 'bookinfo' does not exist", "kubectl create namespace bookinfo"),
    (409, _status(409, "Conflict", 'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" '
                                   "using networking.istio.io/v1alpha3:\n- .spec.priority"),
     'conflict with "kubectl-client-side-apply"', "--force-conflicts"),
    (403, _status(403, "Forbidden", 'envoyfilters.networking.istio.io "cors" is forbidden: User "dev" cannot patch '
                                    'resource "envoyfilters" in API group "networking.istio.io"'),
     "forbidden:", "RBAC rights to get and patch envoyfilters.networking.istio.io in namespace bookinfo"),
    (403, _status(403, "Forbidden", 'admission webhook "validation.istio.io" denied the request: bad patch'),
     "admission webhook", "admission policy"),
    (401, _status(401, "Unauthorized", "Unauthorized"), "refused the credentials", "log in again"),
    (500, "not json", "failed (HTTP 500)", "retry"),
])
def test_api_errors_are_one_line_with_a_fix(code, body, says, fix):
    line = kube.api_error(REF, code, "Reason", body, "https://k8s.example:6443").one_line()
    assert says in line and fix in line.partition("(fix: ")[2], line
    assert "\n" not in line


def test_unreachable_names_the_server():
    refused = ConnectionRefusedError("[Errno 111] Connection refused")
    line = kube.unreachable("https://127.0.0.1:1", refused, "ctx", "/k").one_line()
    assert line.startswith("/k: context ctx: cannot reach the API server at https://127.0.0.1:1: connection refused")


@pytest.mark.parametrize("flag", [["--dry-run"], ["--force-conflicts"], ["--kube-context", "x"],
                                  ["--kubeconfig", "k"]])
def test_apply_options_without_apply_are_refused(flag):
    code, output = _publish(str(CORS_LUA), *flag)
    assert code == 2 and output.count("\n") == 1 and f"{flag[0]}: goes with --apply" in output, output


def test_the_request_is_a_server_side_apply(tmp_path):
    """What goes on the wire, captured at the client's transport and never sent."""
    cluster = kube.connect(_kubeconfig(tmp_path / "kc"), environ={})
    sent: list[dict] = []

    def capture(method, url, **kw):
        sent.append({"method": method, "url": url, **kw})
        raise RuntimeError("not sent")
    cluster.client.rest_client.request = capture
    for dry_run, force in ((False, False), (True, True)):
        with pytest.raises(RuntimeError):
            cluster.apply(ENVOY_FILTER, dry_run=dry_run, force=force)
    cluster.close()
    plain, forced = sent
    path = "https://127.0.0.1:6443/apis/networking.istio.io/v1alpha3/namespaces/bookinfo/envoyfilters/cors"
    assert plain["method"] == "PATCH" and plain["url"] == f"{path}?fieldManager=envoyext"
    assert forced["url"] == f"{path}?dryRun=All&fieldManager=envoyext&force=true"
    assert plain["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert plain["body"] == ENVOY_FILTER


# ---- the CLI without a cluster ---------------------------------------------------------------------

def _publish(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["publish", *args])
    return r.exit_code, r.output


@pytest.fixture
def cors(tmp_path) -> Path:
    dest = tmp_path / "cors" / "lua"
    shutil.copytree(CORS_LUA.parent, dest.parent, ignore=shutil.ignore_patterns("build", "__pycache__"))
    return dest


@pytest.fixture
def no_default_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _one_line(code: int, output: str) -> str:
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "fix:" in lines[0] and "Traceback" not in output, output
    return lines[0]


def test_no_kubeconfig_is_one_line_and_writes_nothing(cors, tmp_path, no_default_kubeconfig):
    out = tmp_path / "published.yaml"
    line = _one_line(*_publish(str(cors), "--apply", "-o", str(out)))
    assert "no kubeconfig found" in line and "$KUBECONFIG" in line and "~/.kube/config" in line
    assert not out.exists()


def test_unknown_context_is_one_line(cors, tmp_path, no_default_kubeconfig):
    kc = _kubeconfig(tmp_path / "kc", contexts=("ctx", "other"))
    line = _one_line(*_publish(str(cors), "--apply", "--kubeconfig", str(kc), "--kube-context", "nope"))
    assert "no context 'nope'" in line and "ctx, other" in line and "--kube-context" in line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["apply", "dry-run"])
def test_a_refused_connection_names_the_server(cors, tmp_path, no_default_kubeconfig, dry_run):
    server = f"https://127.0.0.1:{_closed_port()}"
    out = tmp_path / "published.yaml"
    kc = _kubeconfig(tmp_path / "kc", server=server)
    line = _one_line(*_publish(str(cors), "--apply", *dry_run, "--kubeconfig", str(kc), "-o", str(out)))
    assert f"cannot reach the API server at {server}: connection refused" in line and "context ctx" in line
    assert not out.exists()


# ---- a real cluster ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A cluster that serves EnvoyFilter, through $ENVOYEXT_KUBECONFIG or the default kubeconfig."""
    given = os.environ.get("ENVOYEXT_KUBECONFIG")
    try:
        c = kube.connect(Path(given) if given else None)
        c.get(kube.Ref("EnvoyFilter", "networking.istio.io", "v1alpha3", "envoyfilters", "default",
                       "envoyext-probe"))   # reachable, and the kind is served
    except UserError as e:   # none reachable; else say what the one found lacks
        reachable = not any(s in e.message for s in ("no kubeconfig", "cannot reach", "not found"))
        pytest.skip(f"needs a Kubernetes cluster with Istio's CRDs ({e.one_line()})" if reachable else NO_CLUSTER)
    yield c
    c.close()


def test_apply_reads_back_and_an_unchanged_dry_run_prints_no_diff(cluster, cors, tmp_path):
    name = f"envoyext-apply-{uuid.uuid4().hex[:8]}"
    config = cors / "filter.yaml"
    config.write_text(config.read_text().replace("name: cors", f"name: {name}", 1))
    given = os.environ.get("ENVOYEXT_KUBECONFIG")
    args = [str(cors), "--apply", *(["--kubeconfig", given] if given else [])]
    out = tmp_path / "published.yaml"
    runner = CliRunner()

    r = runner.invoke(main, ["publish", *args, "--dry-run"])     # absent: every line added, nothing applied
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].endswith("(absent)") and f"+  name: {name}" in r.stdout.splitlines()
    ref = kube.Ref("EnvoyFilter", "networking.istio.io", "v1alpha3", "envoyfilters", "default", name)
    assert cluster.get(ref) is None
    try:
        r = runner.invoke(main, ["publish", *args, "-o", str(out)])
        assert r.exit_code == 0, r.output
        applied = yaml.safe_load(out.read_text())
        assert kube.ref_of(applied) == ref
        assert kube.strip(cluster.get(ref)) == applied

        r = runner.invoke(main, ["publish", *args, "--dry-run"])
        assert (r.exit_code, r.stdout) == (0, ""), r.output
        assert "unchanged" in r.stderr

        r = runner.invoke(main, ["publish", *args, "--dry-run", "--priority", "7"])
        assert r.exit_code == 0 and "+  priority: 7" in r.stdout.splitlines(), r.output
        assert kube.strip(cluster.get(ref)) == applied            # a dry run changes nothing
    finally:
        if cluster.get(ref) is not None:
            cluster.delete(ref)
