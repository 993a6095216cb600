"""Lua filter check: compile (never run) the source with LuaJIT, the Lua Envoy embeds."""

from __future__ import annotations

import re
from pathlib import Path

from envoyext.errors import BuildError, UserError

# The chunk name Lua puts in front of its messages. "=" makes Lua use it verbatim (no
# "[string ...]" wrapper, no truncation of a long path), so the line number parses reliably
# and the file is reported as the path the caller gave.
_CHUNK = "src"
_MESSAGE = re.compile(rf"^{_CHUNK}:(?P<line>\d+): (?P<msg>.*)$", re.S)

_COMPILE = """
local src = ...
local fn, err = load(src, "={chunk}")
if fn then return true end
return false, err
""".replace("{chunk}", _CHUNK)


def _runtime():
    try:
        from lupa import luajit21
    except ImportError:
        raise UserError("LuaJIT is not available (lupa.luajit21)",
                        fix="pip install lupa (envoyext requires it)") from None
    # A fresh state per call: LuaRuntime is not thread-safe and a check costs ~1 ms.
    return luajit21.LuaRuntime(register_eval=False, unpack_returned_tuples=True)


def check_lua(path: Path | str) -> None:
    """Raise BuildError(file=path, line=N) if the Lua source at `path` does not compile."""
    path = Path(path)
    try:
        src = path.read_bytes()
    except OSError as e:
        raise BuildError(f"cannot read the Lua source: {e.strerror or e}", file=path) from None
    ok, err = _check(src)
    if ok:
        return
    m = _MESSAGE.match(err or "")
    fix = "correct the Lua at that line (LuaJIT 2.1, Lua 5.1 syntax)"
    if m:
        raise BuildError(m["msg"], file=path, line=int(m["line"]), fix=fix)
    raise BuildError(err or "the Lua source does not compile", file=path, fix=fix)


def _check(src: bytes) -> tuple[bool, str | None]:
    lua = _runtime()
    result = lua.execute(_COMPILE, src)
    if isinstance(result, tuple):
        ok, err = result[0], result[1] if len(result) > 1 else None
    else:
        ok, err = result, None
    if isinstance(err, bytes):
        err = err.decode("utf-8", "replace")
    return bool(ok), err


def luajit_version() -> str:
    """e.g. "LuaJIT 2.1.1774896198", for `envoyext doctor`."""
    v = _runtime().eval("jit.version")
    return v.decode() if isinstance(v, bytes) else str(v)
