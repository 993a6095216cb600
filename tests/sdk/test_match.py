"""The SDK's one string matcher and linear-time regex engine, in C (envoyext/sdk/pw_match.c, compiled
natively with zig) and in Lua (envoyext/sdk/pw_match.lua, run on LuaJIT through lupa):

- both agree with Python's `re.fullmatch` on a table of patterns x inputs and on random patterns;
- both refuse what they do not support, with the same message;
- their work (the engines' own step counters) grows linearly with a pathological input, where a
  backtracking matcher's grows exponentially (the negative control, counted the same way);
- every Lua library filter that matches strings declares the Lua engine (filter.yaml's
  lua_libraries), and no filter, Lua or C, carries a matcher of its own.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import lupa.luajit21 as lupa
import pytest

from envoyext.build.c import SDK_DIR
from envoyext.paths import filters_dir

HERE = Path(__file__).resolve().parent
LUA_ENGINE = SDK_DIR / "pw_match.lua"
MAX_GROWTH = 2.5  # work(2n) / work(n): 2 for a linear engine, plus slack for constant terms

# (pattern, inputs): each input's answer must be Python's re.fullmatch (bytes, so ASCII classes).
TABLE = [
    (rb"abc", [b"abc", b"ab", b"abcd", b""]),
    (rb"a.c", [b"abc", b"a\nc", b"a\xffc", b"ac", b"a.c"]),
    (rb"[a-c]+", [b"abcabc", b"abd", b""]),
    (rb"[^a-c]*", [b"xyz", b"xaz", b"", b"\n\xff"]),
    (rb"[]a]+", [b"]a]", b"b"]),
    (rb"[^]a]", [b"]", b"b", b"a"]),
    (rb"[a-]+", [b"a-a", b"b"]),
    (rb"[\d.]+", [b"1.2.3", b"1,2"]),
    (rb"[\w\s]+", [b"a b_c", b"a-b"]),
    (rb"[\]\\]+", [b"]\\]", b"["]),
    (rb"\d{2,4}", [b"1", b"12", b"1234", b"12345"]),
    (rb"\w+@\w+\.com", [b"me@host.com", b"me@host.org", b"m-e@host.com"]),
    (rb"\S+\s\S+", [b"a b", b"a\tb", b"ab", b"a\nb"]),
    (rb"\D\W", [b"a-", b"1-", b"ab"]),
    (rb"(a|ab)(c|bcd)(d*)", [b"abcd", b"abcdd", b"acd", b"abc"]),
    (rb"(?:ab)+", [b"ababab", b"aba", b""]),
    (rb"a|", [b"", b"a", b"aa"]),
    (rb"(|a)+", [b"", b"aaa", b"ab"]),
    (rb"()", [b"", b"a"]),
    (rb"(a*)*", [b"", b"aaaa", b"b"]),
    (rb"(a*)+b", [b"b", b"aab", b"aa"]),
    (rb"a{3}", [b"aa", b"aaa", b"aaaa"]),
    (rb"a{2,}", [b"a", b"aa", b"aaaaaaa"]),
    (rb"a{0,2}b", [b"b", b"aab", b"aaab"]),
    (rb"(ab){1,2}?c", [b"abc", b"ababc", b"c"]),
    (rb"a+?b*?", [b"aab", b"b"]),
    (rb"^abc$", [b"abc", b"abcd"]),
    (rb"a^b", [b"ab"]),
    (rb"a$b", [b"ab"]),
    (rb"^$", [b"", b"a"]),
    (rb"(^a|b)+", [b"ab", b"ba", b"abb"]),
    (rb"x*y?z+", [b"z", b"xxyzz", b"xyy"]),
    (rb"\.\*\+\?\(\)\[\]\{\}\|\^\$\\\/\-", [rb".*+?()[]{}|^$\/-", b"x"]),
    (rb"\t\n\r\f\v", [b"\t\n\r\f\v", b"\t\n\r\f"]),
    (rb"https?://(?:www\.)?shop-[a-z]{2,3}\.example\.(?:com|co\.uk)",
     [b"https://www.shop-de.example.co.uk", b"http://shop-abcd.example.com", b"http://shop-fr.example.com"]),
    (rb"https://[^./]+\.internal\.test(:[0-9]+)*", [b"https://db.internal.test:5432", b"https://a.b.internal.test"]),
    (b"(" * 100 + b"a" + b")" * 100, [b"a", b""]),
    (rb"(a|a)*b", [b"a" * 12 + b"b", b"a" * 12]),  # Python re backtracks: keep it short
    (rb"(a+)+$", [b"a" * 12, b"a" * 12 + b"!"]),
]

# (pattern, message): refused by both engines, with the same words.
REFUSED = [
    (rb"x\b", "unsupported escape \\b at offset 1"),
    (rb"\x41", "unsupported escape \\x at offset 0"),
    (rb"\pL", "unsupported escape \\p at offset 0"),
    (rb"(a)\1", "unsupported escape \\1 at offset 3"),
    (rb"(?i)abc", "unsupported group syntax (only ( ) and (?: )) at offset 1"),
    (rb"(?P<n>a)", "unsupported group syntax (only ( ) and (?: )) at offset 1"),
    (rb"a**", "bad repetition operator at offset 2"),
    (rb"a{2}{3}", "bad repetition operator at offset 4"),
    (rb"a{,3}", "bad {n,m} repeat (at most 1000; a literal { is written \\{) at offset 1"),
    (rb"a{1001}", "bad {n,m} repeat (at most 1000; a literal { is written \\{) at offset 1"),
    (rb"a{3,2}", "bad {n,m} repeat (at most 1000; a literal { is written \\{) at offset 1"),
    (rb"https://{host}", "bad {n,m} repeat (at most 1000; a literal { is written \\{) at offset 8"),
    (rb"*a", "nothing to repeat at offset 0"),
    (rb"a|+", "nothing to repeat at offset 2"),
    (rb"^*", "nothing to repeat at offset 2"),
    (rb"(ab", "missing ) at offset 0"),
    (rb"ab)", "unmatched ) at offset 2"),
    (rb"[ab", "missing ] at offset 3"),
    (rb"[z-a]", "bad range in class at offset 0"),
    (rb"[\d-z]", "bad range in class at offset 3"),
    (b"ab\\", "trailing backslash at offset 2"),
    (rb"(a{1000}){1000}", "pattern too large once its repeats are expanded at offset 0"),
    (b"a" * 1025, "pattern longer than 1024 bytes at offset 1024"),
    (b"(" * 101 + b"a" + b")" * 101, "groups nested too deep at offset 101"),
]

# Patterns a backtracking matcher takes exponential time on, each with its pathological input.
PATHOLOGICAL = [
    (rb"(a|a)*b", lambda n: b"a" * n + b"!"),
    (rb"^(a|a)*b$", lambda n: b"a" * n + b"!"),
    (rb"(a+)+b", lambda n: b"a" * n + b"!"),
    (rb"(a*)*b", lambda n: b"a" * n + b"!"),
    (rb"(x+x+)+y", lambda n: b"x" * n),
    (rb"https://(a|aa)+\.example\.com", lambda n: b"https://" + b"a" * n + b"!"),
]


# ---- the two engines, behind one interface: compile -> error or None; match -> (answer, steps) ----

class CEngine:
    """envoyext/sdk/pw_match.c through tests/sdk/match_driver.c, one batch per call."""

    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, commands: list[str]) -> list[str]:
        out = subprocess.run([str(self.binary)], input="".join(c + "\n" for c in commands), text=True,
                             capture_output=True, timeout=600, check=True).stdout
        return out.splitlines()

    def compile_error(self, pattern: bytes) -> str | None:
        answer = self.run([f"C {pattern.hex()}"])[0]
        return None if answer == "ok" else answer.removeprefix("err ")

    def matches(self, pattern: bytes, inputs: list[bytes]) -> list[tuple[bool, int]]:
        lines = self.run([f"C {pattern.hex()}", *(f"M {s.hex()}" for s in inputs)])
        assert lines[0] == "ok", (pattern, lines[0])
        return [(hit == "1", int(steps)) for hit, steps in (ln.split() for ln in lines[1:])]

    def string_matches(self, kind: int, ignore_case: bool, value: bytes, inputs: list[bytes]) -> list[bool]:
        lines = self.run([f"S {kind} {int(ignore_case)} {value.hex()}", *(f"T {s.hex()}" for s in inputs)])
        assert lines[0] == "ok", lines[0]
        return [ln == "1" for ln in lines[1:]]


class LuaEngine:
    """envoyext/sdk/pw_match.lua on LuaJIT, the interpreter Envoy embeds."""

    def __init__(self):
        self.lua = lupa.LuaRuntime(encoding=None)
        self.pw_match = self.lua.execute(LUA_ENGINE.read_bytes())
        self.compile = self.lua.eval("function(m, p) local prog, err = m.compile(p); return {prog, err} end")

    def compile_error(self, pattern: bytes) -> str | None:
        prog, err = self._compiled(pattern)
        return None if prog is not None else err.decode()

    def _compiled(self, pattern: bytes):
        result = self.compile(self.pw_match, pattern)
        return result[1], result[2]

    def matches(self, pattern: bytes, inputs: list[bytes]) -> list[tuple[bool, int]]:
        prog, err = self._compiled(pattern)
        assert prog is not None, (pattern, err)
        out = []
        for s in inputs:
            before = prog.steps
            out.append((bool(self.pw_match.full_match(prog, s)), int(prog.steps - before)))
        return out


@pytest.fixture(scope="module")
def c_engine(tmp_path_factory) -> CEngine:
    binary = tmp_path_factory.mktemp("pw_match") / "match_driver"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{SDK_DIR}",
                    str(HERE / "match_driver.c"), str(SDK_DIR / "pw_match.c"), "-o", str(binary)],
                   check=True, capture_output=True, timeout=600)
    return CEngine(binary)


@pytest.fixture(scope="module")
def lua_engine() -> LuaEngine:
    return LuaEngine()


@pytest.fixture(params=["c", "lua"])
def engine(request, c_engine, lua_engine):
    return c_engine if request.param == "c" else lua_engine


# ---- agreement with Python's re ---------------------------------------------------------------------

def test_agrees_with_python_re_on_the_table(engine):
    for pattern, inputs in TABLE:
        got = [hit for hit, _ in engine.matches(pattern, inputs)]
        want = [re.fullmatch(pattern, s) is not None for s in inputs]
        assert got == want, pattern


def test_s_is_re2s_class_without_vertical_tab(engine):
    # RE2's \s is [\t\n\f\r ]; Python's bytes \s also takes \v: the one place the table cannot ask re.
    assert [hit for hit, _ in engine.matches(rb"\s", [b"\v", b"\f"])] == [False, True]
    assert [hit for hit, _ in engine.matches(rb"\S", [b"\v"])] == [True]


def random_pattern(rng: random.Random, depth: int = 0) -> str:
    """A random pattern over a and b, from the constructs the engines accept."""
    atoms = ["a", "b", ".", "[ab]", "[^a]", "\\w", "(?:ab|b)"]
    if depth < 2:
        inner = [random_pattern(rng, depth + 1) for _ in range(3)]
        atoms += [f"({inner[0]})", f"({inner[1]}|{inner[2]})"]
    parts = []
    for _ in range(rng.randint(1, 4)):
        atom = rng.choice(atoms)
        quantifier = rng.choice(["", "", "*", "+", "?", "{2}", "{0,2}", "{1,}", "*?"])
        parts.append(atom + quantifier)
    if rng.random() < 0.1:
        parts.insert(0, "^")
    if rng.random() < 0.1:
        parts.append("$")
    return "".join(parts)


def test_agrees_with_python_re_on_random_patterns(engine):
    rng = random.Random(8)  # fixed: the same cases every run
    inputs = [b"", b"a", b"b", b"ab", b"ba", b"aab", b"abab", b"bbba", b"abba", b"aaaa", b"a\nb", b"ab-"]
    for _ in range(300):
        pattern = random_pattern(rng).encode()
        got = [hit for hit, _ in engine.matches(pattern, inputs)]
        want = [re.fullmatch(pattern, s) is not None for s in inputs]
        assert got == want, pattern


def test_c_and_lua_do_the_same_work(c_engine, lua_engine):
    # One algorithm in two languages: not only the same answers but the same step counts.
    for pattern, inputs in TABLE:
        assert c_engine.matches(pattern, inputs) == lua_engine.matches(pattern, inputs), pattern


def test_refuses_what_it_does_not_support_with_one_message(engine):
    for pattern, message in REFUSED:
        assert engine.compile_error(pattern) == message, pattern


def test_negative_control_a_wrong_answer_is_caught(engine):
    # The agreement check itself can fail: ask for the opposite of Python's answer.
    got = [hit for hit, _ in engine.matches(rb"a+", [b"aaa"])]
    assert got != [re.fullmatch(rb"a+", b"aaa") is None]


# ---- linear time -------------------------------------------------------------------------------------

def growth(work, n: int) -> float:
    """work(2n) / work(n)."""
    return work(2 * n) / work(n)


@pytest.mark.parametrize("pattern,make_input", PATHOLOGICAL, ids=[p.decode() for p, _ in PATHOLOGICAL])
def test_work_grows_linearly_on_a_pathological_input(engine, pattern, make_input):
    def work(n: int) -> int:
        [(hit, steps)] = engine.matches(pattern, [make_input(n)])
        assert hit == (re.fullmatch(pattern, make_input(min(n, 20))) is not None)  # no match, at any n
        return steps

    assert growth(work, 5_000) <= MAX_GROWTH  # 10k-byte inputs answered, with linear work


class TooMuchWork(Exception):
    pass


def backtracking_steps(pattern: bytes, text: bytes, budget: int) -> int:
    """Steps a classic backtracking matcher (the kind pw_match replaced: depth-first, trying each
    alternative and each repeat count in turn) takes to answer a full match; TooMuchWork past
    `budget`. Only the constructs PATHOLOGICAL uses."""
    parser = re._parser  # type: ignore[attr-defined]  # the stdlib's own parse tree, to stay small
    c = re._constants  # type: ignore[attr-defined]
    steps = 0

    def seq(items, i, pos, k):
        nonlocal steps
        steps += 1
        if steps > budget:
            raise TooMuchWork
        if i == len(items):
            return k(pos)
        op, arg = items[i]
        rest = lambda p: seq(items, i + 1, p, k)  # noqa: E731
        if op is c.LITERAL:
            return pos < len(text) and text[pos] == arg and rest(pos + 1)
        if op is c.AT:
            return (pos == 0 if arg is c.AT_BEGINNING else pos == len(text)) and rest(pos)
        if op is c.SUBPATTERN:
            return seq(list(arg[-1]), 0, pos, rest)
        if op is c.BRANCH:
            return any(seq(list(alt), 0, pos, rest) for alt in arg[1])
        if op is c.MAX_REPEAT:
            lo, hi, body = arg

            def repeat(count, at):
                if count < hi and seq(list(body), 0, at, lambda p: p != at and repeat(count + 1, p)):
                    return True
                return count >= lo and rest(at)
            return repeat(0, pos)
        raise NotImplementedError(op)

    seq(list(parser.parse(pattern.decode())), 0, 0, lambda p: p == len(text))
    return steps


@pytest.mark.parametrize("pattern,make_input", PATHOLOGICAL, ids=[p.decode() for p, _ in PATHOLOGICAL])
def test_negative_control_backtracking_work_explodes(pattern, make_input):
    # The same measure on a backtracking matcher: doubling an 8-byte input multiplies its work far
    # beyond MAX_GROWTH (or past a budget no linear engine would need), so the check above bites.
    def work(n: int) -> int:
        try:
            return backtracking_steps(pattern, make_input(n), budget=BUDGET)
        except TooMuchWork:
            return BUDGET

    BUDGET = 500_000
    assert work(8) < BUDGET
    assert growth(work, 8) > 4 * MAX_GROWTH


# ---- the string matcher --------------------------------------------------------------------------

def test_c_string_matcher_kinds_and_ignore_case(c_engine):
    inputs = [b"Api.Example.COM", b"api.example.com", b"example", b""]
    assert c_engine.string_matches(0, True, b"API.example.com", inputs) == [True, True, False, False]
    assert c_engine.string_matches(0, False, b"api.example.com", inputs) == [False, True, False, False]
    assert c_engine.string_matches(1, True, b"api.", inputs) == [True, True, False, False]
    assert c_engine.string_matches(2, True, b".com", inputs) == [True, True, False, False]
    assert c_engine.string_matches(3, False, b"xam", inputs) == [True, True, True, False]
    # Envoy ignores ignore_case for a regex.
    assert c_engine.string_matches(4, True, rb"api\..*", inputs) == [False, True, False, False]


def test_lua_string_matcher_kinds_and_ignore_case(lua_engine):
    lua = lua_engine.lua

    def matcher(spec: str):
        return lua_engine.pw_match.string_matcher(lua.eval(spec), b"f")

    inputs = [b"Api.Example.COM", b"api.example.com", b"example", b""]
    for spec, want in [
        ('{exact = "API.example.com", ignore_case = true}', [True, True, False, False]),
        ('{exact = "api.example.com"}', [False, True, False, False]),
        ('{prefix = "api.", ignore_case = true}', [True, True, False, False]),
        ('{suffix = ".com", ignore_case = true}', [True, True, False, False]),
        ('{contains = "xam"}', [True, True, True, False]),
        ('{safe_regex = {regex = "api\\\\..*"}, ignore_case = true}', [False, True, False, False]),
        ('{regex = "api\\\\..*"}', [False, True, False, False]),
        ('"api.example.com"', [False, True, False, False]),
    ]:
        m = matcher(spec)
        assert [bool(m(s)) for s in inputs] == want, spec


def test_lua_string_matcher_errors_name_the_field(lua_engine):
    lua = lua_engine.lua
    check = lua.eval("function(m, spec, field) local ok, err = pcall(m.string_matcher, spec, field); return err end")
    err = check(lua_engine.pw_match, lua.eval('{safe_regex = {regex = "x\\\\b"}}'), b"additional_origins[2]")
    assert err == b'additional_origins[2].safe_regex.regex: unsupported escape \\b at offset 1 (pattern "x\\b")'
    err = check(lua_engine.pw_match, lua.eval("{ignore_case = true}"), b"allow_origins[0]")
    assert err == b"allow_origins[0]: needs one of exact, prefix, suffix, contains, safe_regex.regex"


# ---- one implementation, used by every library filter -------------------------------------------

LIBRARY_FILTERS = ["cors", "csrf", "ext-authz", "fault"]


def test_every_lua_library_filter_that_matches_strings_declares_the_engine():
    from envoyext import project
    for kind in LIBRARY_FILTERS:
        assert "pw_match" in project.load(filters_dir() / kind / "lua").lua_libraries, kind


def test_no_library_filter_has_a_matcher_of_its_own():
    assert not list(filters_dir().glob("*/c/regex.[ch]")), "the C filters share envoyext/sdk/pw_match.c"
    for kind in LIBRARY_FILTERS:
        source = (filters_dir() / kind / "c" / "filter.c").read_text()
        assert "pw_json_string_matcher(" in source, kind
        assert "strncasecmp" not in source and "same_bytes" not in source, kind
    for script in filters_dir().glob("*/lua/filter.lua"):
        text = script.read_text()
        assert not re.search(r"function\s+\w*(regex|full_match)", text), f"{script}: declare lua_libraries: [pw_match]"


# ---- the build links it into every module ----------------------------------------------------------

def test_every_c_build_links_the_matcher_once(tmp_path):
    from envoyext.build.c import compile_wasm
    src = tmp_path / "f.c"
    src.write_text('#include "proxy_wasm.h"\n'
                   'bool pw_on_configure(pw_root *root, const char *json, size_t len) {\n'
                   '    pw_string_matcher m; char err[64]; (void)root;\n'
                   '    bool ok = pw_string_matcher_init(&m, PW_MATCH_REGEX, json, len, false, err, sizeof err);\n'
                   '    pw_string_matcher_free(&m);\n'
                   '    return ok;\n}\n')
    assert compile_wasm([src], tmp_path / "a.wasm").stat().st_size > 0  # not listed: linked anyway
    assert compile_wasm([src, SDK_DIR / "pw_match.c"], tmp_path / "b.wasm").stat().st_size > 0  # listed: once
