"""`envoyext publish --apply`: the validated resource, server-side applied through the Kubernetes API.

The request is kubectl's `apply --server-side`: PATCH with `application/apply-patch+yaml`,
`fieldManager=envoyext`, `force` only when asked (`--force-conflicts`). `--dry-run` sends the same
request with `dryRun=All`, reads the live object and prints a unified diff between the two, both
without the fields the server manages (STRIPPED). Nothing on the cluster changes in a dry run.

The pure parts (the resource's API path, stripping, the diff, the kubeconfig search, what an API
answer means to the user) are plain functions; `Cluster` and `connect` are the I/O edge, and the
only code that imports the `kubernetes` client. Every failure the user can fix is a one-line
UserError: no kubeconfig (naming each place looked in), an unknown context, an unreachable API
server (naming its URL), RBAC, a missing CRD, a field-manager conflict.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from envoyext.errors import UserError, read_text

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Json = dict[str, Any]
FIELD_MANAGER = "envoyext"
APPLY_PATCH = "application/apply-patch+yaml"
TIMEOUT = (10.0, 60.0)   # seconds: connect, read
# The resource kinds envoyext publishes, by the plural their CRD serves them under.
PLURALS = {"EnvoyFilter": "envoyfilters", "WasmPlugin": "wasmplugins",
           "EnvoyExtensionPolicy": "envoyextensionpolicies"}
# Who installs each API group's CRDs (for "no EnvoyFilter kind on this cluster — is Istio installed?").
PROVIDERS = {"networking.istio.io": "Istio", "extensions.istio.io": "Istio", "gateway.envoyproxy.io": "Envoy Gateway"}
# What the server sets on every object: never part of what envoyext applies, so never in a diff.
STRIPPED_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp")
STRIPPED = ("status",)
DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(frozen=True)
class Ref:
    """Where a resource lives in the API: /apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}."""
    kind: str
    group: str
    version: str
    plural: str
    namespace: str
    name: str

    @property
    def provider(self) -> str:
        return PROVIDERS.get(self.group, f"the {self.group} CRDs")

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def plural(kind: str) -> str:
    """The plural a kind is served under (EnvoyFilter -> envoyfilters)."""
    try:
        return PLURALS[kind]
    except KeyError:
        raise UserError(f"envoyext does not apply a {kind}", field="kind",
                        fix=f"apply one of: {', '.join(PLURALS)}") from None


def ref_of(doc: Mapping[str, Any]) -> Ref:
    """The API path of a resource, from its apiVersion, kind and metadata."""
    group, _, version = str(doc["apiVersion"]).rpartition("/")
    meta = doc["metadata"]
    return Ref(kind=doc["kind"], group=group, version=version, plural=plural(doc["kind"]),
               namespace=meta.get("namespace") or "default", name=meta["name"])


def strip(obj: Mapping[str, Any] | None) -> Json | None:
    """A copy of `obj` without the fields the API server manages (STRIPPED_METADATA, status)."""
    if obj is None:
        return None
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in STRIPPED}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in STRIPPED_METADATA}
    return out


def _lines(obj: Mapping[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(dict(obj), sort_keys=True, default_flow_style=False, width=120).splitlines(keepends=True)


def diff(live: Mapping[str, Any] | None, after: Mapping[str, Any] | None, ref: Ref) -> str:
    """A unified diff from the live object to the object after the apply, both stripped of what
    the server manages; "" when they are the same. No live object: every line is added."""
    before = "absent" if live is None else "live"
    return "".join(difflib.unified_diff(_lines(strip(live)), _lines(strip(after)),
                                        fromfile=f"{ref} ({before})", tofile=f"{ref} (after apply)"))


def kubeconfig_files(option: Path | None, environ: Mapping[str, str], home: Path) -> list[Path]:
    """The kubeconfig files to use, as kubectl finds them: --kubeconfig; else every existing file
    of $KUBECONFIG (a list, merged); else ~/.kube/config. None: one line saying where it looked."""
    if option is not None:
        if not option.is_file():
            raise UserError("kubeconfig not found" if not option.exists() else "not a file", file=option,
                            field="--kubeconfig", fix="give the path of a kubeconfig file")
        return [option]
    default = home / ".kube" / "config"
    listed = environ.get("KUBECONFIG", "")
    if listed:
        found = [Path(p) for p in listed.split(os.pathsep) if p and Path(p).is_file()]
        if found:
            return found
        tried = f"$KUBECONFIG={listed} (none of its files exists)"
    elif default.is_file():
        return [default]
    else:
        tried = f"$KUBECONFIG (not set), {DEFAULT_KUBECONFIG} ({default}: no such file)"
    raise UserError(f"no kubeconfig found; tried --kubeconfig (not given), {tried}", field="--apply",
                    fix="pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config "
                        "(e.g. `kubectl config view --raw --minify > FILE` where kubectl reaches the cluster)")


def choose_context(files: list[Path], wanted: str | None) -> str:
    """The context to use: --kube-context if the kubeconfig has it, else its current-context
    (the first file that sets one wins, as in kubectl)."""
    names: list[str] = []
    current = ""
    for path in files:
        try:
            doc = yaml.safe_load(read_text(path, what="kubeconfig")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise UserError(f"not YAML: {getattr(e, 'problem', None) or e}", file=path,
                            line=mark.line + 1 if mark is not None else None, fix="check the kubeconfig") from None
        if not isinstance(doc, dict):
            raise UserError("not a kubeconfig (expected a mapping)", file=path, fix="check the kubeconfig")
        names += [c["name"] for c in doc.get("contexts") or [] if isinstance(c, dict) and c.get("name")]
        current = current or str(doc.get("current-context") or "")
    where = ":".join(map(str, files))
    has = f"it has: {', '.join(names)}" if names else "it has none"
    if wanted is not None:
        if wanted not in names:
            raise UserError(f"no context {wanted!r} in the kubeconfig ({has})", file=where, field="--kube-context",
                            fix="give one of its contexts (kubectl config get-contexts)")
        return wanted
    if not current:
        raise UserError(f"the kubeconfig sets no current-context ({has})", file=where, field="current-context",
                        fix="pass --kube-context NAME (or kubectl config use-context NAME)")
    if current not in names:
        raise UserError(f"current-context {current!r} is not among its contexts ({has})", file=where,
                        field="current-context", fix="pass --kube-context NAME (or kubectl config use-context NAME)")
    return current


def _status(body: str | None) -> Json:
    """The Kubernetes Status an API error carries ({} when the body is not one)."""
    try:
        doc = json.loads(body or "")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def api_error(ref: Ref, code: int, reason: str, body: str | None, server: str) -> UserError:
    """What an HTTP error from the API server means for applying `ref`, as one line with a fix."""
    status = _status(body)
    message = str(status.get("message") or reason or "").strip()
    details = status.get("details") or {}
    if code == 401:
        return UserError(f"the API server at {server} refused the credentials: {message}", field="--kube-context",
                         fix="refresh the credentials (log in again) or pick another --kube-context")
    if code == 403 and "admission webhook" in message:
        return UserError(f"the cluster refused the {ref.kind}: {message}", field=str(ref),
                         fix="change the filter or its placement to what the cluster's admission policy accepts")
    if code == 403:
        return UserError(f"forbidden: {message}", field=str(ref),
                         fix=f"ask for RBAC rights to get and patch {ref.plural}.{ref.group} "
                             f"in namespace {ref.namespace}, or pick another --kube-context")
    if code == 404 and details.get("kind") == "namespaces":
        return UserError(f"namespace {ref.namespace!r} does not exist on this cluster", field="--namespace",
                         fix=f"create it (kubectl create namespace {ref.namespace}) or pass another --namespace")
    if code == 404:
        return UserError(f"no {ref.kind} kind on this cluster ({ref.group}/{ref.version} is not served) "
                         f"— is {ref.provider} installed?", field=str(ref),
                         fix=f"install {ref.provider}, or point --kube-context at a cluster that has it")
    if code == 409:
        return UserError(f"conflict: {message}", field=str(ref),
                         fix="re-run with --force-conflicts to take those fields over (fieldManager envoyext)")
    if code >= 500:
        return UserError(f"the API server at {server} failed (HTTP {code}): {message}", field=str(ref),
                         fix="retry; if it persists, check the cluster's health (kubectl get --raw /readyz)")
    return UserError(f"the API server refused the {ref.kind} (HTTP {code} {reason}): {message}", field=str(ref),
                     fix="report this as an envoyext bug, with the filter.yaml and the cluster's version")


def unreachable(server: str, cause: BaseException, context: str = "", kubeconfig: str | None = None) -> UserError:
    """The API server at `server` (of `context` in `kubeconfig`) could not be reached (`cause`:
    urllib3's reason)."""
    text, name = str(cause), type(cause).__name__
    fix = ("is the cluster running? check the context's server (kubectl cluster-info) "
           "or pick another --kube-context")
    if "Connection refused" in text:
        what = "connection refused"
    elif "NameResolution" in name or "Name or service not known" in text:
        what = "its host name does not resolve"
    elif "Timeout" in name or "timed out" in text:
        what = f"no answer within {TIMEOUT[0]:g} s"
    elif "SSL" in name or "SSL" in text:
        what = f"TLS failed: {text}"
        fix = "check the cluster's certificate-authority(-data) in the kubeconfig"
    else:
        what = text or name
    return UserError(f"cannot reach the API server at {server}: {what}", file=kubeconfig,
                     field=f"context {context}" if context else None, fix=fix)


class Cluster:
    """One context's API server. The I/O edge: every request and its errors go through here."""

    def __init__(self, client: ApiClient, context: str, kubeconfig: str):
        self.client = client
        self.context = context
        self.kubeconfig = kubeconfig
        self.server: str = client.configuration.host

    def _call(self, ref: Ref, request: Callable[[], Any]) -> Any:
        import urllib3
        from kubernetes.client.exceptions import ApiException
        try:
            return request()
        except ApiException as e:
            if not e.status:   # the client's way of saying TLS failed
                raise self._unreachable(ConnectionError(f"SSL: {e.reason}")) from None
            raise api_error(ref, int(e.status), str(e.reason or ""), e.body, self.server) from None
        except urllib3.exceptions.MaxRetryError as e:
            raise self._unreachable(e.reason or e) from None
        except urllib3.exceptions.HTTPError as e:
            raise self._unreachable(e) from None

    def _unreachable(self, cause: BaseException) -> UserError:
        return unreachable(self.server, cause, self.context, self.kubeconfig)

    def apply(self, doc: Json, *, dry_run: bool = False, force: bool = False) -> Json:
        """Server-side apply `doc`; the object as the server has it afterwards (or would, in a dry run)."""
        from kubernetes.client import CustomObjectsApi
        ref = ref_of(doc)
        api = CustomObjectsApi(self.client)
        result = self._call(ref, lambda: api.patch_namespaced_custom_object(
            ref.group, ref.version, ref.namespace, ref.plural, ref.name, doc,
            field_manager=FIELD_MANAGER, force=True if force else None, dry_run="All" if dry_run else None,
            _content_type=APPLY_PATCH, _request_timeout=TIMEOUT))
        return dict(result)

    def get(self, ref: Ref) -> Json | None:
        """The live object, None when there is none."""
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.exceptions import ApiException
        api = CustomObjectsApi(self.client)

        def request() -> Any:
            try:
                return api.get_namespaced_custom_object(ref.group, ref.version, ref.namespace, ref.plural,
                                                        ref.name, _request_timeout=TIMEOUT)
            except ApiException as e:
                if e.status == 404 and (_status(e.body).get("details") or {}).get("name") == ref.name:
                    return None   # the kind is served, this object is not there
                raise
        found = self._call(ref, request)
        return None if found is None else dict(found)

    def delete(self, ref: Ref) -> None:
        from kubernetes.client import CustomObjectsApi
        api = CustomObjectsApi(self.client)
        self._call(ref, lambda: api.delete_namespaced_custom_object(
            ref.group, ref.version, ref.namespace, ref.plural, ref.name, _request_timeout=TIMEOUT))

    def close(self) -> None:
        close: Callable[[], None] = self.client.close   # unannotated in the client
        close()


def connect(kubeconfig: Path | None = None, context: str | None = None,
            environ: Mapping[str, str] | None = None) -> Cluster:
    """A client for the kubeconfig's context; nothing is sent yet (an unreachable server shows on
    the first request)."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException
    files = kubeconfig_files(kubeconfig, os.environ if environ is None else environ, Path.home())
    chosen = choose_context(files, context)
    where = os.pathsep.join(map(str, files))
    new_client: Callable[..., ApiClient] = config.new_client_from_config   # unannotated in the client
    try:
        client = new_client(config_file=where, context=chosen, persist_config=False)
    except ConfigException as e:
        raise UserError(f"context {chosen!r}: {e}", file=where, fix="check the kubeconfig (kubectl config view)") \
            from None
    return Cluster(client, chosen, where)


@dataclass
class Apply:
    """`publish --apply`'s options, checked together: --dry-run, --force-conflicts, --kubeconfig and
    --kube-context mean nothing without --apply."""
    cluster: Cluster
    dry_run: bool = False
    force: bool = False

    def publish(self, text: str, echo: Callable[..., Any]) -> None:
        """Apply the validated resource `text`; a dry run prints the diff on stdout (nothing when
        unchanged). `echo` is click.echo (a summary goes to stderr)."""
        cluster = self.cluster
        doc = yaml.safe_load(text)
        ref = ref_of(doc)
        try:
            after = cluster.apply(doc, dry_run=self.dry_run, force=self.force)
            if not self.dry_run:
                echo(f"applied {ref} to {cluster.server} (context {cluster.context}, server-side, "
                     f"fieldManager {FIELD_MANAGER})", err=True)
                return
            live = cluster.get(ref)
            changes = diff(live, after, ref)
            echo(changes, nl=False)
            verdict = "would be created" if live is None else "would change" if changes else "unchanged"
            echo(f"dry run: {ref} {verdict} on {cluster.server} (nothing was applied)", err=True)
        finally:
            cluster.close()


def options(apply: bool, dry_run: bool, kubeconfig: Path | None, context: str | None, force: bool) -> Apply | None:
    """None without --apply (and then none of its options); else the connected Apply."""
    if not apply:
        given = [name for name, on in (("--dry-run", dry_run), ("--kubeconfig", kubeconfig is not None),
                                       ("--kube-context", context is not None), ("--force-conflicts", force)) if on]
        if given:
            raise UserError("goes with --apply", field=given[0],
                            fix=f"add --apply (publish --apply {given[0]} ...) or drop {given[0]}")
        return None
    return Apply(connect(kubeconfig, context), dry_run=dry_run, force=force)
