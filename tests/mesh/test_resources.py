"""resources.load: YAML to schema-checked Resources, refused as the Kubernetes API server would.

Every negative case checks the whole one-line error (file:line, field path, message, fix) and has a
positive control: the same document with the one field corrected loads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from envoyext.errors import UserError
from envoyext.mesh import crd, resources

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c}]
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error(path: Path) -> str:
    with pytest.raises(UserError) as e:
        resources.load([path])
    line = str(e.value)
    assert "\n" not in line and "(fix: " in line, line
    return line


# --- loading ---------------------------------------------------------------------------------------

def test_loads_the_suite_bookinfo(bookinfo):
    rs = resources.load([bookinfo.platform, bookinfo.gateway])
    kinds = [r.kind for r in rs]
    assert kinds.count("Deployment") == 6 and kinds.count("Service") == 4 and kinds.count("ServiceAccount") == 4
    reviews = next(r for r in rs if r.key == "Deployment/default/reviews-v2")
    assert reviews.api_version == "apps/v1" and reviews.file == str(bookinfo.platform)
    assert reviews.spec["template"]["metadata"]["labels"]["version"] == "v2"
    gw = next(r for r in rs if r.kind == "Gateway")
    assert gw.index == 0 and gw.namespace == "default" and gw.spec["selector"] == {"istio": "ingressgateway"}


def test_directories_recursive_sorted_yaml_and_yml_only(tmp_path):
    write(tmp_path, VS.replace("reviews", "b"), "d/b.yaml")
    write(tmp_path, VS.replace("reviews", "a"), "d/sub/a.yml")
    write(tmp_path, VS.replace("reviews", "c"), "d/a.yaml")
    write(tmp_path, "not: yaml we read\n", "d/notes.txt")
    rs = resources.load([tmp_path / "d"])
    assert [r.name for r in rs] == ["c", "b", "a"]   # a.yaml, b.yaml, sub/a.yml


def test_multi_document_files_skip_empty_documents_and_count_them(tmp_path):
    path = write(tmp_path, "# comment only\n---\n" + VS + "---\n---\n# nothing\n---\n"
                 + VS.replace("name: reviews", "name: second") + "---\n")
    rs = resources.load([path])
    assert [(r.name, r.index) for r in rs] == [("reviews", 0), ("second", 3)]   # a comment alone is no document


def test_namespace_defaults_and_cluster_scope(tmp_path):
    path = write(tmp_path, VS + "---\n" + VS.replace("name: reviews", "name: x\n  namespace: shop")
                 + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n")
    assert [(r.kind, r.namespace) for r in resources.load([path])] == [
        ("VirtualService", "default"), ("VirtualService", "shop"), ("Namespace", "")]


def test_every_served_version_of_every_istio_kind(tmp_path):
    """Every Istio kind of the shipped CRDs loads at each apiVersion the CRD serves."""
    specs = {"DestinationRule": "{host: a}", "ServiceEntry": "{hosts: [a.com]}",
             "WasmPlugin": "{url: oci://x/y}", "TrafficExtension": "{lua: {inlineCode: x}}",
             "WorkloadEntry": "{address: 1.2.3.4}", "WorkloadGroup": "{template: {}}"}
    kinds = crd.kinds()
    assert {"Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "Sidecar", "EnvoyFilter",
            "WasmPlugin", "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy"} <= set(kinds)
    n = 0
    for kind, apis in kinds.items():
        for api in apis:
            path = write(tmp_path, f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n"
                                   f"spec: {specs.get(kind, '{}')}\n")
            (r,) = resources.load([path])
            assert (r.kind, r.api_version) == (kind, api)
            n += 1
    assert n >= 30
    assert kinds["VirtualService"] == ("networking.istio.io/v1", "networking.istio.io/v1alpha3",
                                       "networking.istio.io/v1beta1")


def test_the_crd_bundle_is_parsed_once(tmp_path):
    path = write(tmp_path, VS)
    resources.load([path])
    resources.load([path])
    assert crd._crds.cache_info().misses == 1
    assert crd.validator.cache_info().hits >= 1


def test_official_shapes_load(tmp_path):
    """Fields real manifests carry that envoyext ignores (images, env, volumes, annotations)."""
    path = write(tmp_path, """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, labels: {app: web}}
        spec:
          replicas: 1
          selector: {matchLabels: {app: web}}
          template:
            metadata:
              annotations: {prometheus.io/scrape: "true"}
              labels: {app: web}
            spec:
              serviceAccountName: web
              containers:
              - name: c
                image: docker.io/x:1
                imagePullPolicy: IfNotPresent
                env: [{name: A, value: b}]
                ports: [{containerPort: 9080}]
                volumeMounts: [{name: tmp, mountPath: /tmp}]
              volumes: [{name: tmp, emptyDir: {}}]
        """)
    (r,) = resources.load([path])
    assert r.spec["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 9080}]


# --- refused, with the one line that says where and how to fix --------------------------------------

CASES = [
    # (id, document, the corrected document's replacement (old, new), expected pieces in order)
    ("unknown-field-in-virtual-service", VS.replace("  - route:", "  - rout:"), ("rout:", "route:"),
     [":8: spec.http[0].rout: unknown field (document 0, VirtualService reviews)", "allowed: corsPolicy"]),
    ("wrong-type", VS.replace("hosts: [reviews]", "hosts: reviews"), ("hosts: reviews", "hosts: [reviews]"),
     [":6: spec.hosts: 'reviews' is not of type 'array'", "fix: give a value of type array"]),
    ("enum", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\n"
             "spec:\n  host: r\n  trafficPolicy: {loadBalancer: {simple: FAST}}\n", ("FAST", "RANDOM"),
     [":6: spec.trafficPolicy.loadBalancer.simple: 'FAST' is not one of", "fix: use one of: UNSPECIFIED"]),
    ("cel-duration", VS.replace("  - route:", "  - timeout: 0.5ms\n    route:"), ("0.5ms", "1.5s"),
     [":8: spec.http[0].timeout: must be a valid duration greater than 1ms", "fix: change the value"]),
    ("cel-port", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n"
                 "  hosts: [a.com]\n  resolution: DNS\n  ports: [{number: 0, name: http}]\n",
     ("number: 0", "number: 80"),
     [":7: spec.ports[0].number: port must be between 1-65535 (document 0, ServiceEntry se)"]),
    ("oneof", VS.replace("  - route:", "  - match: [{uri: {exact: /a, prefix: /b}}]\n    route:"),
     ("exact: /a, ", ""), [":8: spec.http[0].match[0].uri: set more than one of: exact, prefix",
                           "fix: keep only one of exact, prefix, regex"]),
    ("service-entry-rule", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n"
                           "spec:\n  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n"
                           "  endpoints: [{address: 1.2.3.4}]\n", ("hosts:", "resolution: STATIC\n  hosts:"),
     [":4: spec: NONE mode cannot set endpoints (document 0, ServiceEntry se)"]),
    ("unknown-kind", VS.replace("kind: VirtualService", "kind: VirtualServic"), ("VirtualServic", "VirtualService"),
     [":2: kind: unknown kind 'VirtualServic' (document 0)", "fix: use one of: Deployment, IstioOperator"]),
    ("apiversion-not-served", VS.replace("networking.istio.io/v1", "networking.istio.io/v2"),
     ("/v2", "/v1beta1"), [":1: apiVersion: apiVersion networking.istio.io/v2 is not served for VirtualService",
                           "fix: use one of: networking.istio.io/v1, networking.istio.io/v1alpha3"]),
    ("kubernetes-apiversion", DEPLOYMENT.replace("apps/v1", "v1"), ("apiVersion: v1", "apiVersion: apps/v1"),
     [":1: apiVersion: apiVersion v1 is not served for Deployment", "fix: use apiVersion: apps/v1"]),
    ("missing-name", VS.replace("  name: reviews\n", "  labels: {a: b}\n"), ("labels: {a: b}", "name: x"),
     [":3: metadata.name: missing metadata.name (document 0, VirtualService)", "fix: give the object a name"]),
    ("bad-name", VS.replace("name: reviews", "name: Reviews_V1"), ("Reviews_V1", "reviews-v1"),
     [":4: metadata.name: invalid name 'Reviews_V1'", "fix: rename it, e.g. reviews-v1"]),
    ("unknown-metadata-field", VS.replace("  name: reviews\n", "  name: reviews\n  labls: {a: b}\n"),
     ("labls", "labels"), [":5: metadata.labls: unknown field", "allowed: annotations"]),
    ("deployment-without-containers", DEPLOYMENT.replace("[{name: c}]", "[]"), ("[]", "[{name: c}]"),
     [":9: spec.template.spec.containers: [] should be non-empty", "fix: give at least 1"]),
    ("deployment-selector-mismatch", DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: api}"),
     ("{app: api}", "{app: web}"), [":5: spec.selector.matchLabels.app: selector app=api does not match",
                                    "fix: make spec.template.metadata.labels include it"]),
    ("service-port-unknown-field", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n"
                                   "  ports:\n  - port: 80\n    targtPort: 8080\n", ("targtPort", "targetPort"),
     [":7: spec.ports[0].targtPort: unknown field (document 0, Service s)", "allowed: appProtocol"]),
    ("not-a-mapping", "- a\n- b\n", ("- a\n- b", VS), [":1: (top level): a document must be a mapping"]),
    ("missing-kind", VS.replace("kind: VirtualService\n", ""), ("metadata:", "kind: VirtualService\nmetadata:"),
     [":1: kind: missing or not a string", "fix: add kind"]),
]


@pytest.mark.parametrize("doc,correction,pieces", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_one_line(tmp_path, doc, correction, pieces):
    path = write(tmp_path, doc)
    line = error(path)
    assert line.startswith(str(path) + ":"), line
    pos = 0
    for piece in pieces:
        found = line.find(piece, pos)
        assert found >= 0, f"{piece!r} not (in order) in: {line}"
        pos = found
    # Positive control: correct that one field and the document loads.
    fixed = write(tmp_path, doc.replace(*correction), "fixed.yaml")
    assert resources.load([fixed])


def test_duplicate_names_both_places(tmp_path):
    a = write(tmp_path, VS, "a.yaml")
    b = write(tmp_path, "# another\n" + VS, "b.yaml")
    line = error(tmp_path)
    assert line.startswith(f"{b}:5: metadata.name: duplicate VirtualService default/reviews (document 0; "
                           f"also document 0 of {a})"), line
    assert "fix: rename one of them, or load the variants one at a time" in line
    # Control: the same name in another namespace or of another kind is no duplicate.
    write(tmp_path, VS.replace("  name: reviews\n", "  name: reviews\n  namespace: other\n"), "b.yaml")
    assert len(resources.load([tmp_path])) == 2


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, VS + "---\n" + VS.replace("hosts: [reviews]", "hosts: [reviews"))
    line = error(path)
    assert line.startswith(f"{path}:17: YAML syntax error") and "(document 1)" in line, line


def test_missing_path_and_empty_directory(tmp_path):
    assert error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: not found (fix: check the path)"
    (tmp_path / "empty").mkdir()
    assert "no *.yaml or *.yml files" in error(tmp_path / "empty")


def test_billion_laughs_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert "expands to more than" in error(path)


@pytest.mark.parametrize("rule,good,bad", [
    ("duration(self) >= duration('1ms')", ["1ms", "1.5s", "1h30m"], ["0.5ms", "1x", "", "10"]),
    ("0 < self && self <= 65535", [1, 65535], [0, 65536]),
    ('!self.contains("*")', ["a.com"], ["*.a.com"]),
    ("(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) <= 1", [{}, {"a": 1}], [{"a": 1, "b": 2}]),
    ("has(self.wasm) != has(self.lua)", [{"lua": 1}], [{}, {"lua": 1, "wasm": 2}]),
    ('self in ["", "HTTP", "HTTPS"]', ["HTTP"], ["TCP"]),
    ("self.all(l1, self.exists_one(l2, l1.number == l2.number))", [[{"number": 1}, {"number": 2}]],
     [[{"number": 1}, {"number": 1}]]),
])
def test_trivial_cel_rules(rule, good, bad):
    check = crd._rule(rule)
    assert check is not None
    for v in good:
        assert check(v), v
    for v in bad:
        with pytest.raises(Exception) if v in ("1x", "", "10") else _no_raise():
            assert not check(v), v


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_unknown_cel_rules_are_skipped():
    assert crd._rule('url(self).getScheme() in ["http", "https"]') is None
