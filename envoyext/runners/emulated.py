"""Scenario -> observations through the emulated Envoy (`envoyext.emulated`) around the filter's
emulated host: the Wasm host (`envoyext.wasm`) or the Lua host (`envoyext.lua`), chosen by the
artifact's kind. Records the same `Observation` the live runner records; time is virtual."""

from __future__ import annotations

from envoyext import prometheus
from envoyext.artifact import Artifact
from envoyext.emulated.connection_manager import EmulatedEnvoy
from envoyext.emulated.stream import FilterDidNotReturn, FilterHost, NotModelled, StreamStuck
from envoyext.envoy.identity import TEST_PROXY, ProxyIdentity
from envoyext.messages import Response, is_no_response, no_response
from envoyext.runners.names import EMULATED
from envoyext.scenario import UPSTREAM, Case, Observation, Scenario, startup_logs


def _series(host: FilterHost, artifact: Artifact) -> prometheus.Series:
    """What /stats/prometheus would show of the filter's own stats. (The connection manager's
    would need all of Envoy's default tag extractors; scenarios check those by admin name.)"""
    stats = host.stats()
    gauges = getattr(host, "gauge_names", lambda: set())()
    histograms = getattr(host, "histograms", lambda: {})()
    return prometheus.series({k: v for k, v in stats.items() if k not in gauges},
                             {k: v for k, v in stats.items() if k in gauges}, histograms, artifact.stats_tags)


def load_host(artifact: Artifact, env: EmulatedEnvoy, workers: int = 1) -> FilterHost:
    """The emulator for this artifact's kind, loaded with the scenario's filter configuration.
    `workers`: live Envoy's worker threads; each, and the main thread, runs (and ticks) a Wasm VM."""
    if artifact.kind == "wasm":
        from envoyext.wasm.emulator import WasmFilterHost
        return WasmFilterHost(artifact, env.scenario.config, env, idle_vms=workers)
    from envoyext.lua.emulator import LuaFilterHost
    return LuaFilterHost(artifact, env.scenario.config, env)


def _request_in_time(env: EmulatedEnvoy, host: FilterHost, case: Case, responses: list[Response]) -> str | None:
    """One request of `case`; the runner's error if it got no response (in the case's timeout)."""
    started_ns = env.clock.ns
    try:
        response = env.request(host, case)
    except FilterDidNotReturn:
        return no_response(case.request.timeout_ms)
    except (StreamStuck, NotModelled) as e:  # the emulator can say why at once
        return str(e)
    if env.clock.ns - started_ns > case.request.timeout_ms * 1_000_000:  # e.g. a slow upstream, no route timeout
        return no_response(case.request.timeout_ms)
    responses.append(response)
    return None


def run_scenario(artifact: Artifact, scenario: Scenario, workers: int = 1,
                 identity: ProxyIdentity = TEST_PROXY) -> list[Observation]:
    """Run every case of `scenario` through the emulated filter, in the proxy `identity` names;
    one Observation per case."""
    env = EmulatedEnvoy(scenario, identity)
    host = load_host(artifact, env, workers)
    started = startup_logs(host.take_logs())  # what the filter logged while it loaded
    observations = []
    try:
        for case in scenario.cases:
            if case.startup:
                observations.append(Observation(case=case.name, runner=EMULATED, proxy=identity.name, logs=started))
                continue
            if case.only == "live":
                continue
            if observations and is_no_response(observations[-1].error):
                # The filter never returned last time; live Envoy restarts too (see runners.live).
                host.close()
                host = load_host(artifact, env, workers)
            getattr(host, "set_response_timeout", lambda ms: None)(case.request.timeout_ms)
            if case.wait_ms:
                env.clock.advance_ms(case.wait_ms)
                host.advance(env)
            scrape = "prometheus" in case.expect
            before = {**env.stats, **host.stats()}
            prom_before = _series(host, artifact) if scrape else None
            host.take_logs()
            failed_before = len(getattr(host, "failures", ()))  # Wasm VM failures (traps) so far
            env.take_received()
            responses = []
            error = None
            for _ in range(case.repeat):
                error = _request_in_time(env, host, case, responses)
                if error:
                    break
                env.clock.advance_ms(1)
                host.advance(env)
            after = {**env.stats, **host.stats()}
            prom = prometheus.delta(prom_before, _series(host, artifact)) if scrape else None
            received = env.take_received()
            observations.append(Observation(
                case=case.name, runner=EMULATED, proxy=identity.name, response=None if error else responses[-1],
                responses=responses, upstream=received.pop(UPSTREAM, []), clusters=received,
                logs=host.take_logs(),
                stats={k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)},
                prometheus=prom, error=error,
                faults=list(getattr(host, "failures", [])[failed_before:])))
    finally:
        host.close()
    return observations
