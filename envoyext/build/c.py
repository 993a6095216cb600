"""C -> proxy-wasm module, with zig's clang (the `ziglang` wheel) for wasm32-wasi.

Every build links the SDK runtime (`envoyext/sdk/proxy_wasm.c`), which defines the module's
exports (`proxy_on_*`, `malloc`, `proxy_abi_version_0_2_1`), and the SDK's matchers
(`envoyext/sdk/pw_match.c`); the filter's own sources only implement `pw_on_*` hooks. The module
is a WASI *reactor*: it exports `_initialize`, which Envoy calls once before anything else, and
has no `main`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from envoyext import tempfiles
from envoyext.errors import BuildError, UserError

log = logging.getLogger(__name__)

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"
SDK_RUNTIME = SDK_DIR / "proxy_wasm.c"
# The SDK's other sources (Envoy's StringMatcher and the linear-time regex engine), linked into
# every module like the runtime, so a project copied out of the library still builds.
SDK_SOURCES = (SDK_RUNTIME, SDK_DIR / "pw_match.c")

TARGET = "wasm32-wasi"
# zig's default wasm stack is 16 MiB, all of it in every VM of every worker. A filter works
# on headers and small bodies; 1 MiB is generous. A later -Wl,-z,stack-size in cflags wins.
STACK_SIZE = 1 << 20
# The first build on a machine compiles wasi-libc into zig's cache (~20 s); later ones take
# well under a second. This only guards against a wedged compiler.
TIMEOUT_S = 600

_DIAG = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.+)$")
_UNDEFINED = re.compile(r"undefined symbol: (?P<sym>[A-Za-z_][A-Za-z0-9_]*)")
_DUPLICATE = re.compile(r"duplicate symbol: (?P<sym>pw_on_[a-z_]+)")

# Hooks whose proxy_on_* export the SDK runtime leaves out when the filter does not define them
# (proxy_wasm.c, "Default hooks"): a host then skips the call into the VM (one per request or
# per body chunk each) with the effect the default would have had.
OMITTABLE_HOOKS = (
    "pw_on_root_done", "pw_on_done", "pw_on_log",
    "pw_on_request_headers", "pw_on_request_body", "pw_on_request_trailers",
    "pw_on_response_headers", "pw_on_response_body", "pw_on_response_trailers",
    "pw_on_new_connection", "pw_on_downstream_data", "pw_on_upstream_data",
    "pw_on_downstream_connection_close", "pw_on_upstream_connection_close",
)


def sdk_include_dir() -> Path:
    """The directory holding `proxy_wasm.h` (always on the include path of compile_wasm)."""
    return SDK_DIR


def _zig() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


def compile_wasm(sources: Sequence[Path | str], out: Path | str, *, include_dirs: Iterable[Path | str] = (),
                 optimize: str = "-O2", cflags: Sequence[str] = (), strip: bool = True,
                 sdk_runtime: bool = True) -> Path:
    """Compile C `sources` (plus the SDK sources, unless `sdk_runtime=False`) into the proxy-wasm
    module `out`; return its path.

    The module is written next to `out` under a temporary name and renamed into place only on
    success, so a failed build leaves `out` as it was (absent, or the previous good build).
    On a compiler or linker error raise `BuildError` naming the first error's file and line.
    `strip=False` keeps the function names, which makes Envoy's Wasm backtraces readable.
    """
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise BuildError("no C sources to compile", fix="list at least one .c file")
    for s in srcs:
        if not s.is_file():
            raise BuildError("C source not found", file=s, fix="check the path")
    if importlib.util.find_spec("ziglang") is None:
        raise UserError("the C compiler (zig) is not installed", fix="pip install ziglang (envoyext requires it)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    # A project may vendor SDK sources; never link one twice. Modules that define the proxy-wasm
    # exports themselves (host test modules) link none.
    given = {s.resolve() for s in srcs}
    runtime = [sdk for sdk in SDK_SOURCES if sdk_runtime and sdk.resolve() not in given]
    cmd = [*_zig(), "cc", f"--target={TARGET}", "-mexec-model=reactor", optimize,
           f"-I{SDK_DIR}", *(f"-I{d}" for d in include_dirs),
           f"-Wl,-z,stack-size={STACK_SIZE}"]
    if strip:
        cmd.append("-s")
    absent = _absent_hooks(srcs) if SDK_RUNTIME in runtime else set()

    tmp = tempfiles.temp_beside(out)  # named for this process: a killed build's is removed by the next
    try:
        while True:
            defines = [f"-DPW_ABSENT_{h}" for h in sorted(absent)]
            try:
                proc = subprocess.run([*cmd, *defines, *cflags, *map(str, srcs), *map(str, runtime), "-o", str(tmp)],
                                      capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise BuildError(f"the C compiler did not finish in {TIMEOUT_S} s", file=srcs[0]) from None
            output = (proc.stderr or "") + (proc.stdout or "")
            defined = {m["sym"] for m in _DUPLICATE.finditer(output)} & absent if proc.returncode else set()
            if not defined:
                break
            absent -= defined  # defined after all (a name the scan cannot see): keep their exports
        if proc.returncode != 0:
            raise _error_from_output(output, srcs)
        if output.strip():
            log.warning("%s", output.strip())
        if tmp.stat().st_size == 0:
            raise BuildError("the C compiler produced no module", file=srcs[0])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _absent_hooks(sources: Sequence[Path]) -> set[str]:
    """The omittable hooks no source mentions: the SDK leaves their exports out. A mention in a
    comment keeps one (harmless); a definition the scan misses fails the link, and compile_wasm
    links again with that export kept."""
    text = ""
    for s in sources:
        try:
            text += s.read_text(errors="replace")
        except OSError:
            return set()
    mentioned = set(re.findall(r"\bpw_on_[a-z_]+", text))
    return {h for h in OMITTABLE_HOOKS if h not in mentioned}


def _error_from_output(output: str, sources: Sequence[Path]) -> BuildError:
    """The first error the compiler or linker printed, as a one-line BuildError."""
    lines = output.splitlines()
    for ln in lines:
        m = _DIAG.match(ln.strip())
        if m:
            msg = m["msg"]
            return BuildError(msg, file=m["file"], line=int(m["line"]), fix=_fix_for(msg))
    for ln in lines:
        if "error:" in ln:
            msg = ln.split("error:", 1)[1].strip()
            u = _UNDEFINED.search(msg)
            if u:
                sym = u["sym"]
                file, line = _first_use(sym, sources)
                return BuildError(f"undefined symbol: {sym}", file=file, line=line,
                                  fix=f"define {sym}, or remove the call: a filter can only import "
                                      f"proxy-wasm host functions (see proxy_wasm.h)")
            return BuildError(msg, file=sources[0] if len(sources) == 1 else None, fix=_fix_for(msg))
    tail = " ".join(output.split())[-300:] or "no output"
    return BuildError(f"the C compiler failed: {tail}", file=sources[0] if len(sources) == 1 else None,
                      fix="correct the C sources")


def _fix_for(msg: str) -> str:
    if "conflicting types for 'pw_on_" in msg:
        return "give the hook exactly the signature declared in proxy_wasm.h"
    if "file not found" in msg:
        return "check the #include name, or pass include_dirs"
    if "implicit declaration" in msg or "undeclared function" in msg:
        return "#include the header that declares it (proxy_wasm.h for pw_* functions)"
    return "correct the C source at that line"


def _first_use(symbol: str, sources: Sequence[Path]) -> tuple[Path | None, int | None]:
    """Where a source first mentions `symbol`, to place a linker error the linker cannot place."""
    sym = re.escape(symbol)
    pat = re.compile(rf"\b{sym}\b")
    # A prototype ("void helper(void);") is where it was promised, not where it is needed:
    # prefer the first other mention (the call), fall back to the prototype.
    proto = re.compile(rf"^\s*(?!return\b)[A-Za-z_][\w \t*]*[\s*]{sym}\s*\([^;{{]*\)\s*;")
    first: tuple[Path | None, int | None] | None = None
    for s in sources:
        try:
            text = s.read_text(errors="replace")
        except OSError:
            continue
        for i, ln in enumerate(text.splitlines(), 1):
            if pat.search(ln):
                if not proto.match(ln):
                    return s, i
                first = first or (s, i)
    return first or ((sources[0] if len(sources) == 1 else None), None)


@functools.lru_cache(maxsize=1)
def compiler_version() -> str:
    """"zig 0.x.y (clang a.b.c)", for `envoyext doctor`; raises UserError if zig cannot run."""
    if importlib.util.find_spec("ziglang") is None:
        raise UserError("the C compiler (zig) is not installed", fix="pip install ziglang")
    try:
        zig = subprocess.run([*_zig(), "version"], capture_output=True, text=True, timeout=60)
        cc = subprocess.run([*_zig(), "cc", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"cannot run the C compiler: {e}", fix="pip install ziglang") from None
    if zig.returncode != 0:
        raise UserError("cannot run the C compiler: " + " ".join((zig.stderr or "").split())[:200],
                        fix="pip install ziglang")
    version = f"zig {zig.stdout.strip()}"
    m = re.search(r"clang version (\S+)", cc.stdout or "")
    return f"{version} (clang {m[1]})" if m else version
