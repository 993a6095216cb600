"""The scenario format: what to send through a filter and what should come out.

`load()` reads a scenario YAML file (validated against schemas/scenario.yaml), `from_dict()` builds a
`Scenario` from validated data and checks what a schema cannot (cluster references, case names,
requests the live client can send).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoyext import schemas
from envoyext.errors import UserError
from envoyext.messages import DEFAULT_RESPONSE_TIMEOUT_MS, Headers, Request, first, header_list, unsendable, values
from envoyext.upstreams import UpstreamSpec

# A mapping as the scenario's YAML holds it, already validated against schemas/scenario.yaml.
Yaml = dict[str, Any]

# Cluster name of the default test upstream, in the bootstrap and in observations.
UPSTREAM = "upstream"
# The case a scenario's `startup:` block becomes: what the filter logged while it started.
STARTUP = "startup"
# Envoy's Lua filter reads route metadata under its own filter name, then under this one.
LUA_FILTER_NAMESPACE = "envoy.filters.http.lua"


@dataclass
class Route:
    name: str
    match: Yaml
    cluster: str | None = UPSTREAM
    direct_response: Yaml | None = None
    metadata: Yaml | None = None
    per_filter_config: Any = None
    timeout_ms: int | None = None
    upgrade_configs: list[Yaml] | None = None

    def _connect_upgrade(self) -> Yaml | None:
        """The route's enabled CONNECT upgrade (RouteAction.upgrade_configs), if any."""
        return next((u for u in self.upgrade_configs or []
                     if u["upgrade_type"].upper() == "CONNECT" and u.get("enabled", True)), None)

    @property
    def allows_connect(self) -> bool:
        return self._connect_upgrade() is not None

    @property
    def terminates_connect(self) -> bool:
        """connect_config: Envoy answers the CONNECT itself and tunnels to the cluster over TCP."""
        return "connect_config" in (self._connect_upgrade() or {})

    def filter_metadata(self, filter_name: str) -> dict[str, Yaml]:
        """Envoy's `Metadata.filter_metadata` of this route: the full form as written, or the
        short form (bare keys) under the filter's own name."""
        md = self.metadata
        if not md:
            return {}
        if "filter_metadata" in md:
            full: dict[str, Yaml] = md["filter_metadata"]
            return full
        return {filter_name: md}

    def matches(self, path: str | None, headers: Headers) -> bool:
        """Envoy's route match for the subset of fields the scenario format allows. A CONNECT
        request (no :path) matches only a `connect_matcher` route, and only it matches one."""
        m = self.match
        if ("connect_matcher" in m) != (first(headers, ":method") == "CONNECT"):
            return False
        bare = (path or "").split("?", 1)[0]
        if "path" in m and bare != m["path"]:
            return False
        if "prefix" in m and not (path or "").startswith(m["prefix"]):
            return False
        for name, want in header_list(m.get("headers")):
            if want not in values(headers, name):
                return False
        return True


@dataclass(frozen=True)
class MtlsPeer:
    """The client certificate a case's connection presents over mTLS: its URI SAN (the SPIFFE ID),
    optionally a subject (RFC 4514, e.g. `CN=productpage,O=bookinfo`; Istio's SVIDs have none)
    and DNS SANs. The certificates themselves: envoyext.envoy.peer_tls."""
    peer: str
    subject: str = ""
    dns: tuple[str, ...] = ()


def _connection(block: Yaml | None, in_mesh: bool, path: Path, where: str) -> MtlsPeer | None:
    mtls = (block or {}).get("mtls")
    if mtls is None:
        return None
    if in_mesh:
        raise UserError("a mesh case's connection is the mesh's: its sidecars' mTLS", file=path,
                        field=f"{where}.connection", fix="remove it; the mesh's PeerAuthentication decides")
    subject = mtls.get("subject", "")
    if subject:
        _check_subject(subject, path, f"{where}.connection.mtls.subject")
    return MtlsPeer(peer=mtls["peer"], subject=subject, dns=tuple(mtls.get("dns") or ()))


# The attribute types a case's subject may name, by their RFC 4514 keys: those whose printing by
# Envoy (OpenSSL's RFC 2253; envoyext.envoy.peer_tls) was measured against live Envoy.
SUBJECT_KEYS = ("CN", "O", "OU", "L", "ST", "C", "STREET", "DC", "UID")


def _check_subject(subject: str, path: Path, field: str) -> None:
    from cryptography.x509 import Name
    from cryptography.x509.oid import NameOID
    fix = f"write it as CN=name,O=organization (types: {', '.join(SUBJECT_KEYS)}; escape , + \" \\ < > ; with \\)"
    try:
        name = Name.from_rfc4514_string(subject)
    except ValueError as e:
        reason = str(e).strip() or "a type=value part does not parse"
        raise UserError(f"not an RFC 4514 name: {subject!r}: {reason}", file=path, field=field, fix=fix) from None
    known = {NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.LOCALITY_NAME,
             NameOID.STATE_OR_PROVINCE_NAME, NameOID.COUNTRY_NAME, NameOID.STREET_ADDRESS,
             NameOID.DOMAIN_COMPONENT, NameOID.USER_ID}   # SUBJECT_KEYS
    for a in name:
        if a.oid not in known:
            raise UserError(f"attribute type {a.oid.dotted_string} is not one envoyext prints as Envoy does",
                            file=path, field=field, fix=fix)
        value = a.value if isinstance(a.value, str) else ""
        if any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
            raise UserError(f"a control character in {a.rfc4514_string()!r}", file=path, field=field,
                            fix="remove it: a subject's characters must be printable")


@dataclass
class Case:
    name: str
    request: Request
    expect: Yaml
    repeat: int = 1
    wait_ms: int = 0
    only: str | None = None  # "live" | "emulated" | None (both)
    startup: bool = False    # no request: the expectations are on the logs of the filter's start
    # A mesh scenario's case: who sends (`ingress` or a workload) to which host[:port], the files
    # applied and the app behaviour set before it, and how many requests are in flight at once.
    source: str | None = None
    target: str | None = None
    apply: list[Path] = field(default_factory=list)
    behaviour: Yaml = field(default_factory=dict)
    concurrency: int = 1
    # What happens while the requests are in flight: (after_ms, action, value), action one of
    # apply (files), behaviour (by workload), kill (a Deployment or pod).
    during: list[tuple[int, str, Any]] = field(default_factory=list)
    mtls: MtlsPeer | None = None   # the request arrives over mTLS presenting this peer's certificate


@dataclass
class Oracle:
    http_filters: list[Yaml]
    typed_per_filter_config: Yaml
    compare: list[str]


@dataclass
class MeshSpec:
    """A scenario's `mesh:` block: the resources the mesh is built from, and what its apps do.
    For a filter project's scenarios run in the project's mesh (filter.yaml `mesh:`), also where the
    filter attaches (an envoyext.publish.istio.Placement) and who sends each case to whom."""
    resources: list[Path]
    workloads: Yaml
    attach: Any = None
    source: str | None = None
    target: str | None = None
    # The SPIFFE ID the attached filter sees on its downstream connection (the sender's sidecar or
    # gateway, over auto-mTLS into an inbound side); None when that connection is plaintext.
    peer: str | None = None


@dataclass
class Scenario:
    path: Path
    name: str
    config: Any
    upstream: UpstreamSpec
    clusters: dict[str, UpstreamSpec]
    routes: list[Route]
    cases: list[Case]
    oracle: Oracle | None = None
    workers: int | None = None  # live Envoy's worker threads (None: filter.yaml's, or the CLI's)
    mesh: MeshSpec | None = None  # run in a modelled mesh (the mesh runner), not one test Envoy

    def route_for(self, path: str | None, headers: Headers) -> Route | None:
        return next((r for r in self.routes if r.matches(path, headers)), None)

    def all_clusters(self) -> dict[str, UpstreamSpec]:
        return {UPSTREAM: self.upstream, **self.clusters}


def default_routes() -> list[Route]:
    return [Route(name="default", match={"prefix": "/"}, cluster=UPSTREAM)]


def from_dict(data: Yaml, path: Path, default_config: Any = None) -> Scenario:
    """Build a Scenario from already-validated data."""
    clusters = {n: UpstreamSpec.from_dict(s) for n, s in (data.get("clusters") or {}).items()}
    if UPSTREAM in clusters:
        raise UserError(f"cluster name '{UPSTREAM}' is reserved for the default upstream",
                        file=path, field=f"clusters.{UPSTREAM}", fix="rename it, or configure it under 'upstream'")
    routes = []
    for i, r in enumerate(data.get("routes") or []):
        target = r.get("cluster", None if "direct_response" in r else UPSTREAM)
        if target is not None and target != UPSTREAM and target not in clusters:
            raise UserError(f"route points at unknown cluster '{target}'", file=path,
                            field=f"routes[{i}].cluster", fix="declare it under 'clusters'")
        _check_metadata(r.get("metadata"), path, f"routes[{i}].metadata")
        routes.append(Route(name=r.get("name", f"route{i}"), match=r["match"], cluster=target,
                            direct_response=r.get("direct_response"), metadata=r.get("metadata"),
                            per_filter_config=r.get("per_filter_config"), timeout_ms=r.get("timeout_ms"),
                            upgrade_configs=r.get("upgrade_configs")))
    cases = [_startup_case(data["startup"], data["cases"], path)] if "startup" in data else []
    first_index: dict[str, int] = {}
    for i, c in enumerate(data["cases"]):
        # Reports, JSON results and differential tools name cases: two of one name make a verdict ambiguous.
        if c["name"] in first_index:
            raise UserError(f"case name '{c['name']}' is already used by cases[{first_index[c['name']]}]",
                            file=path, field=f"cases[{i}].name", fix="give every case of a scenario its own name")
        first_index[c["name"]] = i
        for name in (c.get("expect") or {}).get("clusters") or {}:
            if name not in clusters:
                raise UserError(f"expectation on undeclared cluster '{name}'", file=path,
                                field=f"cases[{i}].expect.clusters.{name}", fix="declare it under 'clusters'")
        cases.append(Case(
            name=c["name"], request=_request(c.get("request") or {}, path, f"cases[{i}].request"),
            expect=c.get("expect") or {}, repeat=c.get("repeat", 1), wait_ms=c.get("wait_ms", 0),
            only=c.get("only"), source=c.get("from"), target=c.get("to"),
            apply=[_relative(path, f) for f in _listed(c.get("apply"))], behaviour=c.get("behaviour") or {},
            concurrency=c.get("concurrency", 1), during=_during(c.get("during") or [], path, f"cases[{i}]"),
            mtls=_connection(c.get("connection"), "mesh" in data, path, f"cases[{i}]")))
        _check_sendable(cases[-1].request, path, f"cases[{i}].request")
        _check_mesh_only(c, "mesh" in data, path, f"cases[{i}]")
        for j, f in enumerate(cases[-1].apply):
            if not f.exists():
                raise UserError(f"no such file or directory: {f}", file=path, field=f"cases[{i}].apply[{j}]",
                                fix="give a path relative to the scenario file")
    o = data.get("oracle")
    oracle = Oracle(o.get("http_filters", []), o.get("typed_per_filter_config", {}),
                    o.get("compare", ["status", "headers", "body", "upstream"])) if o else None
    return Scenario(path=path, name=data.get("name", path.stem),
                    config=data["config"] if "config" in data else default_config,
                    upstream=UpstreamSpec.from_dict(data.get("upstream") or {}),
                    clusters=clusters, routes=routes or default_routes(), cases=cases, oracle=oracle,
                    workers=data.get("workers"), mesh=_mesh(data.get("mesh"), path))


def _during(items: list[Yaml], path: Path, where: str) -> list[tuple[int, str, Any]]:
    """A case's `during:` list as (after_ms, action, value), files resolved and checked."""
    out: list[tuple[int, str, Any]] = []
    for j, item in enumerate(items):
        action = next(k for k in item if k != "after_ms")
        value = item[action]
        if action == "apply":
            value = [_relative(path, f) for f in _listed(value)]
            for f in value:
                if not f.exists():
                    raise UserError(f"no such file or directory: {f}", file=path, field=f"{where}.during[{j}].apply",
                                    fix="give a path relative to the scenario file")
        out.append((item["after_ms"], action, value))
    return sorted(out, key=lambda a: a[0])


# What only a mesh scenario can say: a case field, or an expectation, outside one has nothing to act on.
_MESH_CASE_FIELDS = ("from", "to", "apply", "behaviour", "concurrency", "during")
_MESH_EXPECTATIONS = ("answered_by", "tolerance", "statuses", "workloads", "retries", "min_duration_ms", "trace")


def _check_mesh_only(case: Yaml, in_mesh: bool, path: Path, where: str) -> None:
    if in_mesh:
        return
    for key in _MESH_CASE_FIELDS:
        if key in case:
            raise UserError(f"'{key}' needs a mesh", file=path, field=f"{where}.{key}",
                            fix="add a top-level 'mesh: {resources: DIR}' block, or remove it")
    for key in _MESH_EXPECTATIONS:
        if key in (case.get("expect") or {}):
            raise UserError(f"'{key}' is an expectation on a mesh run", file=path, field=f"{where}.expect.{key}",
                            fix="add a top-level 'mesh: {resources: DIR}' block, or remove it")


def _listed(v: str | list[str] | None) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


def _relative(scenario_file: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else scenario_file.parent / p


def _mesh(block: Yaml | None, path: Path) -> MeshSpec | None:
    if block is None:
        return None
    files = [_relative(path, f) for f in _listed(block["resources"])]
    for i, f in enumerate(files):
        if not f.exists():
            raise UserError(f"no such file or directory: {f}", file=path, field=f"mesh.resources[{i}]",
                            fix="give a path relative to the scenario file")
    return MeshSpec(resources=files, workloads=block.get("workloads") or {})


def _request(rq: Yaml, path: Path, where: str) -> Request:
    """A case's request. CONNECT has no path: its target is the authority (`host:port`)."""
    method = rq.get("method", "GET")
    if method == "CONNECT" and "path" in rq:
        raise UserError("a CONNECT request has no path (its target is the authority)", file=path,
                        field=f"{where}.path", fix="remove it and give authority: host:port")
    return Request(method=method, path=None if method == "CONNECT" else rq.get("path", "/"),
                   authority=rq.get("authority", "example.com"), headers=header_list(rq.get("headers")),
                   body=rq.get("body", "").encode(), trailers=header_list(rq.get("trailers")),
                   timeout_ms=rq.get("timeout_ms", DEFAULT_RESPONSE_TIMEOUT_MS))


def _startup_case(expect: Yaml, cases: list[Yaml], path: Path) -> Case:
    """The `startup:` block as a case of its own, checked and compared like any other."""
    for i, c in enumerate(cases):
        if c["name"] == STARTUP:
            raise UserError(f"the case name '{STARTUP}' is taken by the startup block", file=path,
                            field=f"cases[{i}].name", fix="rename the case")
    return Case(name=STARTUP, request=Request(), expect=expect, startup=True)


def _check_metadata(md: Yaml | None, path: Path, where: str) -> None:
    """The full form (`filter_metadata: {namespace: {...}}`) stands alone; anything else is the
    short form, put under the filter's own name."""
    if md and "filter_metadata" in md and len(md) > 1:
        extra = sorted(k for k in md if k != "filter_metadata")[0]
        raise UserError("route metadata mixes the full form (filter_metadata) with bare keys", file=path,
                        field=f"{where}.{extra}", fix="move it under filter_metadata.<filter name>")


def _check_sendable(rq: Request, path: Path, where: str) -> None:
    """A request the live client cannot put on the wire is the scenario's fault, not a runner's."""
    problem = unsendable(rq)
    if problem:
        field_, message, fix = problem
        raise UserError(message, file=path, field=f"{where}.{field_}", fix=fix)


def load(path: Path | str, default_config: Any = None) -> Scenario:
    path = Path(path)
    return from_dict(schemas.load(path, "scenario"), path, default_config)

