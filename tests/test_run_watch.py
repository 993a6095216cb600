"""`envoyext run --watch`: a live Envoy takes each good build of the filter with no restart and no
failed request, keeps the running filter when a build fails, and leaves no Envoy after Ctrl-C.

Judged by counts, never speeds: a traffic thread records every answer in order; the waits below are
only bounds on a run that would otherwise hang."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from envoyext.envoy import watched
from tests.conftest import ENVOYEXT, envoy_pids, run_cli

BOUND_S = 240  # a C rebuild on a busy 2-core machine; only a hang reaches it
MAX_REQUESTS = 50_000  # the traffic thread's own bound


def scaffold(tmp_path: Path, lang: str) -> Path:
    name = f"w-{lang}"
    r = run_cli("new", "blank", name, "--lang", lang, "--dir", tmp_path / name)
    assert r.returncode == 0, r.stderr
    return tmp_path / name


# An edit that changes the header value the filter adds, and one that does not build.
EDITS = {
    "lua": ("filter.lua", '"hello"', '"v2"', '"v2" +', "hello", "v2"),
    "c": ("filter.c", "c->header, c->value)", 'c->header, "v2")', 'c->header, "v2") oops', "hello", "v2"),
}


@dataclass
class Traffic:
    """One request after another until told to stop; every outcome kept. `keepalive`: all on one
    HTTP/1.1 connection (reopened only when Envoy's response says `connection: close`), else a new
    connection each."""
    host: str
    port: int
    header: str
    keepalive: bool = False
    answers: list[str] = field(default_factory=list)  # the header's value, or "FAILED: why"
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self.stop.is_set() and len(self.answers) < MAX_REQUESTS:
            try:
                conn.request("GET", "/watch")
                resp = conn.getresponse()
                resp.read()  # http.client closes the socket itself when told `connection: close`
                value = resp.headers.get(self.header, "<none>")
                self.answers.append(value if resp.status == 200 else f"FAILED: status {resp.status}")
            except OSError as e:
                self.answers.append(f"FAILED: {e!r}")
                conn.close()
            if not self.keepalive:
                conn.close()
            time.sleep(0.01)
        conn.close()

    def count(self, value: str) -> int:
        return self.answers.count(value)


def traffic_problems(answers: list[str], phases: list[str]) -> list[str]:
    """What is wrong with a run of answers expected to go through `phases` in order (each seen,
    never going back), with no failed request."""
    problems = [f"request {i}: {a}" for i, a in enumerate(answers) if a.startswith("FAILED")]
    rank = {p: i for i, p in enumerate(phases)}
    at = 0
    for i, a in enumerate(answers):
        if a.startswith("FAILED"):
            continue
        if a not in rank:
            problems.append(f"request {i}: unexpected {a!r}")
        elif rank[a] < at:
            problems.append(f"request {i}: back to {a!r} after {phases[at]!r}")
        else:
            at = rank[a]
    problems += [f"never answered {p!r}" for p in phases if p not in answers]
    return problems


def _wait(what: str, ready, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + BOUND_S
    while not ready():
        assert proc.poll() is None, f"run --watch exited {proc.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {BOUND_S} s"
        time.sleep(0.05)


@pytest.mark.parametrize("lang", ["lua", "c"])
def test_run_watch_swaps_the_filter_under_traffic_without_a_restart(tmp_path, lang):
    project = scaffold(tmp_path, lang)
    source, old_text, new_text, broken_text, old, new = EDITS[lang]
    before = envoy_pids()
    proc = subprocess.Popen([*ENVOYEXT, "run", str(project), "--watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    traffic = kept = None
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (line, said)
        host, port = line.split("listening on http://")[1].strip().split(":")
        admin_url = proc.stdout.readline().split()[1]
        pids = envoy_pids() - before
        assert len(pids) == 1, pids

        traffic = Traffic(host, int(port), f"x-w-{lang}")
        kept = Traffic(host, int(port), f"x-w-{lang}", keepalive=True)
        senders = [threading.Thread(target=t.run, daemon=True) for t in (traffic, kept)]
        for s in senders:
            s.start()
        _wait("answer from the first build", lambda: traffic.count(old) >= 20, proc)

        def edit(file: str, before_text: str, after_text: str, outcome: str, count: int) -> None:
            """Edit, wait for the `count`th line saying `outcome`, then for 20 more answers on each."""
            text = (project / file).read_text()
            assert before_text in text
            (project / file).write_text(text.replace(before_text, after_text))
            _wait(outcome, lambda: sum(outcome in s for s in said) >= count, proc)
            answered, kept_answered = len(traffic.answers), len(kept.answers)
            _wait(f"answers after {outcome!r}", lambda: len(traffic.answers) >= answered + 20
                  and len(kept.answers) >= kept_answered + 20, proc)

        if lang == "c":  # a comment: the same module, so nothing is delivered
            edit(source, "#include <stdio.h>", "/* a comment */\n#include <stdio.h>", "nothing to swap", 1)
        # A good edit: rebuilt, swapped, and the next requests run the new code.
        edit(source, old_text, new_text, "swapped in", 1)
        assert traffic.count(new) and kept.count(new)
        if lang == "c":
            # A configuration the plugin refuses (no 'value'): Envoy's validation says so, nothing is
            # delivered; put back, it is the running filter again: nothing to swap.
            edit("filter.yaml", ", value: hello}", "}", "not swapped", 1)
            edit("filter.yaml", "config: {header: x-w-c}", "config: {header: x-w-c, value: hello}",
                 "nothing to swap", 2)
        # A broken edit: one line naming the file, and the new filter keeps answering.
        refused = sum("not swapped" in s for s in said)
        edit(source, new_text, broken_text, "not swapped", refused + 1)
        for t, s in zip((traffic, kept), senders):
            t.stop.set()
            s.join(BOUND_S)

        refusals = [s for s in said if "not swapped" in s]
        assert len(refusals) == (2 if lang == "c" else 1), said
        if lang == "c":  # the plugin's refusal names filter.yaml's config, in the plugin's words
            assert "filter.yaml" in refusals[0] and "config" in refusals[0] and "'value'" in refusals[0], refusals
        assert source in refusals[-1] and all(s.count("\n") == 1 for s in said), said
        assert sum("swapped in" in s for s in said) == 1, said
        assert envoy_pids() - before == pids, "the same Envoy throughout"
        assert traffic_problems(traffic.answers, [old, new]) == [], traffic.answers[-5:]
        # The kept-alive connection too: Envoy closes it after a response from the old filter
        # (`connection: close`), and the client's next request meets the new one.
        assert traffic_problems(kept.answers, [old, new]) == [], kept.answers[-5:]
        print(f"{lang}: {len(traffic.answers)} requests on new connections ({traffic.count(old)} {old}, "
              f"{traffic.count(new)} {new}); {len(kept.answers)} kept-alive ({kept.count(old)} {old}, "
              f"{kept.count(new)} {new})")
        # Negative controls: the same answers judged against wrong expectations must fail.
        assert traffic_problems(traffic.answers, [old]), "an Envoy that never swapped would pass"
        assert traffic_problems(traffic.answers, [old, "v3"]), "any new value would pass"
        assert traffic_problems([*traffic.answers, old], [old, new]), "going back would pass"
        assert traffic_problems([*traffic.answers, "FAILED: reset"], [old, new]), "a failure would pass"
        assert traffic_problems(kept.answers, [old]), "a kept-alive connection left on the old filter would pass"

        stats = json.loads(_get(admin_url + "/stats?format=json&filter=listener_manager"))["stats"]
        counters = {s["name"]: s["value"] for s in stats if "value" in s}
        assert counters["listener_manager.lds.update_success"] >= 2, counters  # initial + the swap
        assert counters["listener_manager.listener_in_place_updated"] == 1, counters

        proc.send_signal(signal.SIGINT)
        proc.wait(BOUND_S)
    finally:
        for t in (traffic, kept):
            if t is not None:
                t.stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, said
    deadline = time.monotonic() + 30
    while envoy_pids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert envoy_pids() - before == set(), "Ctrl-C left an Envoy running"


def _get(url: str) -> bytes:
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


def test_split_listeners_moves_every_listener_to_the_watched_file(tmp_path):
    config = {"static_resources": {"listeners": [{"name": "a"}], "clusters": [{"name": "c"}]}}
    out, listeners = watched.split_listeners(config, tmp_path / "xds" / "lds.json")
    assert listeners == [{"name": "a"}]
    assert "listeners" not in out["static_resources"] and out["static_resources"]["clusters"] == [{"name": "c"}]
    source = out["dynamic_resources"]["lds_config"]["path_config_source"]
    assert source == {"path": str(tmp_path / "xds" / "lds.json"), "watched_directory": {"path": str(tmp_path / "xds")}}
    assert config["static_resources"]["listeners"] == [{"name": "a"}], "the input is left alone"


def test_a_rebuilt_module_gets_its_own_file_name(tmp_path):
    from envoyext.artifact import Artifact
    module = tmp_path / "f.wasm"
    names = []
    for content in (b"\0asm one", b"\0asm two", b"\0asm one"):
        module.write_bytes(content)
        pinned = watched.pinned(Artifact(kind="wasm", path=module, name="f"), tmp_path / "modules")
        assert pinned.path.read_bytes() == content
        names.append(pinned.path.name)
    assert names[0] != names[1] and names[0] == names[2]
    lua = Artifact(kind="lua", path=tmp_path / "f.lua", name="f")
    assert watched.pinned(lua, tmp_path / "modules") is lua, "inline Lua needs no copy"


def test_run_watch_with_a_broken_first_build_is_one_line_and_no_envoy(tmp_path):
    from tests.test_cli import assert_one_line_error
    project = scaffold(tmp_path, "lua")
    (project / "filter.lua").write_text("function envoy_on_request(h\n")
    before = envoy_pids()
    r = run_cli("run", project, "--watch", timeout=120)
    assert_one_line_error(r, "filter.lua")
    assert envoy_pids() - before == set()
    # Negative control: the same project fixed starts and listens.
    (project / "filter.lua").write_text("function envoy_on_request(h) end\n")
    proc = subprocess.Popen([*ENVOYEXT, "run", str(project), "--watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        assert "listening on http://127.0.0.1:" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        proc.wait(BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
