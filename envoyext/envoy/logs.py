"""Envoy's log, parsed in one place: the filter's own lines, Envoy's errors about the filter's VM,
and Envoy's reason for refusing a configuration.

Envoy runs with `--log-format "[%Y-%m-%d %T.%e][%t][%l][%n] %v"` (date, thread, level, component,
message); `--mode validate` uses Envoy's default format, which puts the source location,
`[file.cc:123] `, in front of the message. Both parse with the one LINE pattern below.
"""

from __future__ import annotations

import re

from envoyext.envoy.identity import TEST_PROXY
from envoyext.scenario import LogLine

LOG_FORMAT = "[%Y-%m-%d %T.%e][%t][%l][%n] %v"
LINE = re.compile(r"^\[[^\]]*\]\[\d+\]\[(?P<level>\w+)\]\[(?P<component>\w+)\] (?:\[[^\]]*:\d+\] )?(?P<message>.*)$")
# Guest log lines: Wasm `wasm log <plugin> <root_id> <vm_id>: msg`, Lua `script log: msg`.
_WASM = re.compile(r"^wasm log[^:]*: (.*)$", re.S)
_LUA = re.compile(r"^script log: (.*)$", re.S)
# Observations use the emulators' level names; spdlog spells one of them out.
_LEVEL = {"warning": "warn"}
_GUEST_RANK = {"critical": 0, "error": 0, "warning": 1, "info": 2, "debug": 3, "trace": 3}
# Envoy's own words for why a Wasm VM could not be made (a corrupt module, an ABI it does not know).
_VM_FAILED = re.compile(r"Wasm VM failed (.*)$")


def _guest_message(component: str, message: str) -> str | None:
    """What the filter itself logged, if this message of Envoy's `component` is one of its lines."""
    pattern = _WASM if component == "wasm" else _LUA if component == "lua" else None
    m = pattern.match(message) if pattern else None
    return m.group(1) if m else None


def is_envoy_log(text: str) -> bool:
    """Whether `text` holds at least one Envoy log line (else the binary is broken or not Envoy)."""
    return any(LINE.match(raw) for raw in text.splitlines())


def filter_logs(text: str, proxy: str = TEST_PROXY.name) -> list[LogLine]:
    """The filter's own log lines out of the log of Envoy `proxy` (its ProxyIdentity.name), at the
    emulators' level names."""
    out: list[LogLine] = []
    current: list[str] | None = None
    for raw in text.splitlines():
        m = LINE.match(raw)
        if not m:
            if current is not None:  # a message with newlines continues on the next line
                current[1] += "\n" + raw
            continue
        if current is not None:
            out.append(LogLine(current[0], current[1], proxy))
            current = None
        said = _guest_message(m["component"], m["message"])
        if said is not None:
            current = [_LEVEL.get(m["level"], m["level"]), said]
    if current is not None:
        out.append(LogLine(current[0], current[1], proxy))
    return out


def vm_failures(text: str) -> list[str]:
    """Envoy's own error lines about the filter's VM (a Wasm trap: `Function: proxy_on_... failed:
    ...`), first line each; the guest's log lines are filter_logs'."""
    out = []
    for raw in text.splitlines():
        m = LINE.match(raw)
        if m and m["level"] in ("error", "critical") and m["component"] in ("wasm", "lua"):
            if _guest_message(m["component"], m["message"]) is None:
                out.append(m["message"])
    return out


def wasm_vm_failure(log: str, *, loading: bool = False) -> str | None:
    """The first reason Envoy gives for failing a Wasm VM (the root cause), if any; with `loading`,
    only a failure to load the module itself (not its plugin refusing the configuration)."""
    for line in log.splitlines():
        m = _VM_FAILED.search(line)
        if m and not (loading and "configure" in m.group(1)):
            return m.group(1).strip()
    return None


def guest_cause(log: str) -> str | None:
    """What the filter itself said, most severe level first, latest line of that level."""
    lines = []
    for i, raw in enumerate(log.splitlines()):
        m = LINE.match(raw)
        said = _guest_message(m["component"], m["message"]) if m else None
        if m and said is not None:
            lines.append((_GUEST_RANK.get(m["level"], 3), i, said.strip()))
    return min(lines, key=lambda t: (t[0], -t[1]))[2] if lines else None


def first_error(log: str) -> str:
    """Envoy's own reason for rejecting a config: the 'error initializing configuration' line if
    any, else its last critical/error line, else its last line; trimmed to place and cause, and
    followed by the root cause (a Wasm VM failure or the filter's own words) when Envoy gave one."""
    all_lines = [line for line in log.splitlines() if line.strip()]
    cause = wasm_vm_failure(log, loading=True) or guest_cause(log) or wasm_vm_failure(log)
    for line in reversed(all_lines):
        m = re.search(r"error initializing config(?:uration)? '[^']*': (.*)", line)
        if m:
            return shorter(m.group(1)) + (f": {cause}" if cause else "")
    lines = [line for line in all_lines if "[critical]" in line or "[error]" in line]
    if lines:
        return shorter(re.sub(r"^(\[[^\]]*\])+\s*(\[[^\]]*\]\s*)?", "", lines[-1]))
    return shorter(all_lines[-1]) if all_lines else "no output"


def shorter(reason: str) -> str:
    """Envoy's proto errors name the place deep inside a wrapper sentence; keep place and cause."""
    m = re.search(r"invalid JSON in\s+\S+\s+@\s+(\S+): (.*?)(?:\) has unknown fields)?$", reason)
    if m:
        return f"{m.group(2)} (at {m.group(1)})"
    return reason
