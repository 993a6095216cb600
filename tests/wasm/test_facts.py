"""envoyext.envoy.facts, the Envoy 1.40 facts both emulators read, measured on the live binary."""

from __future__ import annotations

import json
import re
import subprocess

from envoyext.envoy import facts
from envoyext.envoy.process import envoy_binary

MAP_LINE = re.compile(r"\]\s+((?:request|response) (?:header|trailer) map): \d+ bytes: ?(.*)$", re.M)


def startup_header_maps(tmp_path) -> dict[str, frozenset[str]]:
    """What Envoy prints at startup ("HTTP header map info"): each map's inline header names.
    --mode init_only initializes the server and exits, so no process is left to stop."""
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps({"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                           "port_value": 0}}}}))
    log = subprocess.run([str(envoy_binary()), "-c", str(config), "--disable-hot-restart", "-l", "info",
                          "--mode", "init_only"], capture_output=True, text=True, timeout=120, check=True).stderr
    return {name: frozenset(filter(None, names.strip().split(","))) for name, names in MAP_LINE.findall(log)}


def test_inline_headers_are_those_envoy_prints_at_startup(tmp_path):
    assert startup_header_maps(tmp_path) == facts.INLINE_HEADERS


def test_a_table_missing_one_name_would_not_match(tmp_path):
    # Negative control: the comparison above notices a single lost name.
    measured = startup_header_maps(tmp_path)
    assert measured["request header map"] - {"authorization"} != facts.INLINE_REQUEST_HEADERS


def test_route_filter_config_disables_only_when_it_says_so():
    assert facts.disabled_by_route({"@type": facts.FILTER_CONFIG, "disabled": True})
    assert not facts.disabled_by_route({"@type": facts.FILTER_CONFIG, "disabled": False})
    assert not facts.disabled_by_route({"disabled": True})  # a LuaPerRoute: the Lua filter's own switch
    assert not facts.disabled_by_route(None)
