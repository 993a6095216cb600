"""Live changes lose nothing: `envoyext mesh apply` (a separate process, as a user runs it) changes
Bookinfo's routing while steady traffic flows through the gateway and from productpage's app
through its sidecar, and every request is answered 200; routing did change (v2 answers appear
after 80/20, none before). Negative control: applying a route to a subset with no endpoints gives
503s that the very same check counts as failures.

`mesh up --watch PROJECT`: a Lua filter attached to productpage's sidecar is edited while traffic
flows; the Envoys keep their PIDs, no request fails, and answers switch from the old header value
to the new one. A source edit that does not build leaves the running filter in place.

Everything is judged by counts (requests, statuses, pods), never by how long something took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from envoyext.mesh import traffic
from envoyext.messages import Request
from tests.conftest import ENVOYEXT, envoy_pids, run_cli
from tests.mesh.conftest import SUITE_BOOKINFO

BOOKINFO = SUITE_BOOKINFO  # examples/bookinfo, the suite's copy (the official one differs in layout)
ROUTING = BOOKINFO / "routing"
BASE_FILES = [BOOKINFO / "platform.yaml", BOOKINFO / "gateway.yaml", BOOKINFO / "destination-rules.yaml"]
PHASE_REQUESTS = 60     # workload calls answered in each routing phase before the next apply
HARD_CAP = 5000         # each sender stops here whatever happens (a bounded loop)
TIMEOUT_MS = 5000


# --- a mesh run the way a user runs it: `envoyext mesh up` in its own process ------------------
@dataclass
class MeshUp:
    proc: subprocess.Popen[str]
    workdir: Path
    lines: list[str]
    gateway: str = ""           # host:port
    admins: dict[str, str] = field(default_factory=dict)

    def wait_for(self, needle: str, limit: int = 400) -> str:
        """Read the command's output until a line contains `needle` (at most `limit` lines)."""
        assert self.proc.stdout is not None
        for _ in range(limit):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("mesh up ended:\n" + "".join(self.lines) + self._stderr())
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no '{needle}' in:\n" + "".join(self.lines))

    def _stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def app_control(self, deployment: str) -> str:
        """The stand-in app's control URL, from the addresses `mesh up` recorded in its state."""
        from envoyext.runners.mesh import build, load_resources
        doc = json.loads((self.workdir / "state.json").read_text())
        mesh = build(load_resources([Path(f) for f in doc["files"]]), int(doc["base"]))
        w = next(w for w in mesh.workloads if w.deployment == deployment)
        return f"http://{w.app_address}:15999"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        return "".join(self.lines) + out + err


def mesh_up(workdir: Path, files: list[Path], *extra: str | Path) -> MeshUp:
    args = [*ENVOYEXT, "mesh", "up", "--workdir", str(workdir), *[a for f in files for a in ("-f", str(f))],
            *map(str, extra)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            env={**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    up = MeshUp(proc, workdir, [])
    try:
        up.wait_for("proxies ready")
        up.gateway = up.wait_for("gateway: http://").split("http://", 1)[1].strip().rstrip("/")
        while "Ctrl-C to stop" not in (line := up.wait_for("")):
            if "admin http://" in line:
                name, url = line.split()[0], line.split("admin ", 1)[1].strip()
                up.admins[name] = url
    except BaseException:
        up.stop()
        raise
    return up


@pytest.fixture
def bookinfo_up(tmp_path: Path) -> Iterator[MeshUp]:
    up = mesh_up(tmp_path / "mesh", [*BASE_FILES, ROUTING / "all-v1.yaml"])
    yield up
    up.stop()


def mesh_apply(up: MeshUp, *files: Path) -> None:
    r = run_cli("mesh", "apply", "--workdir", up.workdir, *[a for f in files for a in ("-f", f)], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# --- steady traffic, judged by counts ----------------------------------------------------------
@dataclass
class Answer:
    sender: str                 # "gateway" or "productpage"
    phases: tuple[str, str]     # the routing phase when the request left and when its answer came
    status: int | None          # None: reset, refused or timed out (no response at all)
    pod: str = ""               # the pod that answered (x-envoyext-pod)
    jason: bool = False         # sent with end-user: jason
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def phase(self) -> str | None:
        """The phase it ran wholly inside, or None if a change landed while it was in flight."""
        return self.phases[0] if self.phases[0] == self.phases[1] else None


class Traffic:
    """Two bounded senders running until told to stop: through the ingress gateway, and from
    productpage's app to reviews:9080 through productpage's sidecar (every third as end-user jason)."""

    def __init__(self, up: MeshUp, *, gateway: bool = True, workload: str | None = "productpage-v1",
                 target: str = "reviews:9080", path: str = "/reviews/0"):
        self.up, self.target, self.path = up, target, path
        self.phase = "start"
        self.answers: list[Answer] = []
        self.cond = threading.Condition()
        self.done = threading.Event()
        self.threads = []
        if gateway:
            self.threads.append(threading.Thread(target=self._loop, args=("gateway", self._via_gateway), daemon=True))
        if workload:
            self.control = up.app_control(workload)
            self.threads.append(threading.Thread(target=self._loop, args=(workload, self._via_workload), daemon=True))

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(60)

    def _loop(self, sender: str, send: Callable[[int], Answer]) -> None:
        for i in range(HARD_CAP):
            if self.done.is_set():
                break
            start = self.phase
            a = send(i)
            a.sender, a.phases = sender, (start, self.phase)
            with self.cond:
                self.answers.append(a)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _via_gateway(self, i: int) -> Answer:
        rq = Request(path="/productpage", authority="bookinfo.example", timeout_ms=TIMEOUT_MS)
        host, port = self.up.gateway.split(":")
        sent = traffic.to_gateway(host, int(port), rq)
        return _answer(sent, False)

    def _via_workload(self, i: int) -> Answer:
        jason = i % 3 == 0
        rq = Request(path=self.path, authority=self.target, timeout_ms=TIMEOUT_MS,
                     headers=[("end-user", "jason")] if jason else [])
        return _answer(traffic.from_workload(self.control, self.target, rq), jason)

    def count(self, phase: str, sender: str | None = None) -> int:
        return sum(1 for a in self.answers if a.phase == phase and (sender is None or a.sender == sender))

    def wait_answers(self, phase: str, n: int, sender: str) -> None:
        """Block until `n` answers from `sender` ran wholly inside `phase` (a count, not a time)."""
        with self.cond:
            while self.count(phase, sender) < n:
                assert all(t.is_alive() for t in self.threads), "a sender stopped (hard cap reached?)"
                self.cond.wait(5)

    def change(self, phase: str, apply: Callable[[], None]) -> None:
        self.phase = f"applying {phase}"
        apply()
        self.phase = phase


def _answer(sent: traffic.Sent, jason: bool) -> Answer:
    r = sent.response
    if r is None:
        return Answer("", ("", ""), None, jason=jason, error=sent.error or "reset")
    headers = dict(r.headers)
    return Answer("", ("", ""), r.status, headers.get(traffic.POD_HEADER, ""), jason, headers)


def failures(answers: list[Answer]) -> list[str]:
    """Every request that did not get a 200: the one check both the test and its control use."""
    return [f"{a.sender} in {a.phases}: {a.status if a.status is not None else 'no response'} {a.error}"
            for a in answers if a.status != 200]


def reviews_versions(answers: list[Answer], phase: str, *, jason: bool | None = None) -> set[str]:
    """The reviews versions ('v1', 'v2', ...) that answered productpage's calls wholly inside `phase`."""
    return {a.pod.split("-")[1] for a in answers if a.phase == phase and a.sender != "gateway" and a.pod
            and (jason is None or a.jason == jason)}


# --- 1. mesh apply under steady traffic ---------------------------------------------------------
def test_mesh_apply_under_steady_traffic_loses_no_request(bookinfo_up):
    up = bookinfo_up
    pids = envoy_pids()
    steps = [("80/20", ROUTING / "reviews-80-20.yaml"), ("end-user", ROUTING / "reviews-end-user-v2.yaml"),
             ("all-v1", ROUTING / "all-v1.yaml")]
    with Traffic(up) as t:
        t.change("all-v1 (from up)", lambda: None)
        previous = "all-v1 (from up)"
        for phase, file in steps:
            t.wait_answers(previous, PHASE_REQUESTS, "productpage-v1")
            t.change(phase, lambda f=file: mesh_apply(up, f))
            previous = phase
        t.wait_answers(previous, PHASE_REQUESTS, "productpage-v1")
    answers = t.answers
    assert failures(answers) == []
    # Routing changed, and only when told: no v2 before 80/20, some v2 under it (P(no v2 in 60) < 1e-5),
    # end-user jason to v2 and everyone else to v1, then all v1 again.
    assert reviews_versions(answers, "all-v1 (from up)") == {"v1"}
    assert reviews_versions(answers, "80/20") == {"v1", "v2"}
    assert reviews_versions(answers, "end-user", jason=True) == {"v2"}
    assert reviews_versions(answers, "end-user", jason=False) == {"v1"}
    assert reviews_versions(answers, "all-v1") == {"v1"}
    # The gateway's traffic flowed all along (it is not idle while the workload's is judged).
    assert all(t.count(p, "gateway") > 0 for p in ("all-v1 (from up)", "80/20", "end-user", "all-v1"))
    assert envoy_pids() == pids, "an Envoy was restarted"


NO_ENDPOINTS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
  - {name: v9, labels: {version: v9}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v9}, weight: 50}
"""


def test_negative_control_a_subset_with_no_endpoints_is_counted_as_loss(bookinfo_up, tmp_path):
    up = bookinfo_up
    broken = tmp_path / "reviews-v9.yaml"
    broken.write_text(NO_ENDPOINTS)
    with Traffic(up, gateway=False) as t:
        t.change("all-v1 (from up)", lambda: None)
        t.wait_answers("all-v1 (from up)", 20, "productpage-v1")
        t.change("v9", lambda: mesh_apply(up, broken))
        t.wait_answers("v9", 40, "productpage-v1")
        t.change("all-v1", lambda: mesh_apply(up, BOOKINFO / "destination-rules.yaml", ROUTING / "all-v1.yaml"))
        t.wait_answers("all-v1", 20, "productpage-v1")
    lost = failures(t.answers)
    in_v9 = [a for a in t.answers if a.phase == "v9"]
    assert lost, "the check counted no failure while half the calls went to a subset with no pods"
    assert any(a.status == 503 for a in in_v9)
    assert all(a.status == 200 for a in t.answers if a.phase in ("all-v1 (from up)", "all-v1"))


# --- 2. mesh up --watch: a filter swapped under traffic -----------------------------------------
HEADER = "x-nl-watch"
WORKERS = 2  # each Envoy's --concurrency (envoyext.envoy.process.EnvoyProcess): one upstream pool per worker


@dataclass
class WatchedProject:
    root: Path
    source: Path        # the file the test edits
    new: tuple[str, str]     # (old text, new text): the edit that makes the filter add "new"
    broken: str         # appended: a source that does not build


def filter_project(tmp_path: Path, lang: str) -> WatchedProject:
    """`envoyext new blank` in `lang`, adding the response header HEADER: "old", attached to
    productpage's sidecar (inbound) by filter.yaml's mesh block."""
    root = tmp_path / "nl-watch"
    r = run_cli("new", "blank", "nl-watch", "--lang", lang, "--dir", root)
    assert r.returncode == 0, r.stderr
    files = ", ".join(str(f) for f in [*BASE_FILES, ROUTING / "all-v1.yaml"])
    yaml_file = root / "filter.yaml"
    text = yaml_file.read_text() + f"mesh: {{resources: [{files}], workload: productpage-v1}}\n"
    if lang == "lua":
        source = root / "filter.lua"
        source.write_text(source.read_text().replace('add("x-nl-watch", "hello")', f'add("{HEADER}", "old")'))
        project = WatchedProject(root, source, ('"old"', '"new"'), "\nfunction broken(\n")
    else:  # C: the value comes from the config; the edit makes the code add its own
        text = text.replace("value: hello}", "value: old}")
        assert f"config: {{header: {HEADER}, value: old}}" in text
        source = root / "filter.c"
        project = WatchedProject(root, source, ("c->header, c->value)", 'c->header, "new")'), "\nint broken(\n")
    assert project.new[0] in source.read_text() and f"{HEADER}" in source.read_text() + text
    yaml_file.write_text(text)
    return project


def swap_problems(answers: list[Answer], before: str, after: str) -> list[str]:
    """What contradicts "the filter added `before` until the swap, `after` from then on (also
    while a broken edit was refused)"."""
    problems = []
    for a in answers:
        value = a.headers.get(HEADER)
        if a.phase == "old" and value != before:
            problems.append(f"{a.sender} before the swap: {value}")
        if a.phase == "broken source" and value != after:
            problems.append(f"{a.sender} after a broken edit: {value}")
    # After the swap, a connection a proxy had pooled to productpage's sidecar serves one more
    # request on the old filter chain, then closes (Istio's --drain-strategy immediate); new
    # connections run the new filter. So per sender at most one old answer per Envoy worker.
    for sender in ("gateway", "details-v1"):
        values = [a.headers.get(HEADER) for a in answers if a.phase == "new" and a.sender == sender]
        if not values or len([v for v in values if v != after]) > WORKERS:
            problems.append(f"{sender} after the swap: {values}")
    return problems


@pytest.mark.parametrize("lang", ["lua", "c"])
def test_watch_swaps_a_filter_under_traffic_without_restart_or_loss(tmp_path, lang):
    project = filter_project(tmp_path, lang)
    src = project.source
    up = mesh_up(tmp_path / "mesh", [*BASE_FILES, ROUTING / "all-v1.yaml"], "--watch", project.root)
    try:
        pids = envoy_pids()
        assert pids, "mesh up started no Envoy we can see"
        # Through the gateway into productpage's sidecar, and from details' app through its own
        # sidecar to productpage: both reach the filter on productpage's inbound side.
        with Traffic(up, workload="details-v1", target="productpage:9080", path="/productpage") as t:
            t.change("old", lambda: None)
            t.wait_answers("old", 30, "details-v1")

            def edit() -> None:
                src.write_text(src.read_text().replace(*project.new))
                up.wait_for("watch: nl-watch rebuilt and swapped")
            t.change("new", edit)
            t.wait_answers("new", 30, "details-v1")

            def break_it() -> None:
                src.write_text(src.read_text() + project.broken)
                up.wait_for("watch: not swapped")
            t.change("broken source", break_it)
            t.wait_answers("broken source", 30, "details-v1")
        assert envoy_pids() == pids, "an Envoy was restarted"
    finally:
        out = up.stop()
    answers = t.answers
    assert failures(answers) == []
    assert swap_problems(answers, "old", "new") == []
    # Negative control: the same check, told the values the other way round, fails.
    assert swap_problems(answers, "new", "old")
    # In flight during the swap: each answer ran one filter or the other, never none.
    assert {a.headers.get(HEADER) for a in answers} <= {"old", "new"}
    assert src.name in next(line for line in out.splitlines() if "not swapped" in line)
