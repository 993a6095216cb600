"""Scenarios, observations and the one checker.

A scenario (YAML) says what to send through a filter and what should come out (`model`). Every
runner, the emulators and live Envoy alike, turns a scenario into one `Observation` per case
(`observation`); `check()` judges an observation against the case's expectations and `compare()`
judges two observations of the same case against each other (`check`). This package's public
names are importable from `envoyext.scenario` itself.
"""

from envoyext.messages import Headers, Received, Request, Response, first, header_list
from envoyext.scenario.check import Mismatch, check, compare, fault_line, filter_errors
from envoyext.scenario.model import (
    LUA_FILTER_NAMESPACE,
    STARTUP,
    UPSTREAM,
    Case,
    MeshSpec,
    MtlsPeer,
    Oracle,
    Route,
    Scenario,
    default_routes,
    from_dict,
    load,
)
from envoyext.scenario.observation import LogLine, Observation, mask, startup_logs

__all__ = [
    # the scenario format
    "LUA_FILTER_NAMESPACE", "STARTUP", "UPSTREAM", "Case", "MeshSpec", "MtlsPeer", "Oracle", "Route", "Scenario",
    "default_routes",
    "from_dict", "load",
    # what runners observe (and the messages observations and expectations speak of)
    "LogLine", "Observation", "mask", "startup_logs", "Headers", "Received", "Request", "Response", "first",
    "header_list",
    # judging
    "Mismatch", "check", "compare", "fault_line", "filter_errors",
]
