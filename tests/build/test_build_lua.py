"""check_lua: LuaJIT compiles the source (never runs it) and places a syntax error by line."""

from __future__ import annotations

import pytest

from envoyext.build import check_lua, luajit_version
from envoyext.errors import BuildError

GOOD = """\
function envoy_on_request(request_handle)
  request_handle:headers():add("x-lua", "yes")
end

function envoy_on_response(response_handle)
  local n = #response_handle:body():getBytes(0, 10)
  response_handle:logInfo("len " .. n)
end
"""


def test_good_source_passes(tmp_path):
    f = tmp_path / "f.lua"
    f.write_text(GOOD)
    check_lua(f)


def test_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "f.lua"
    f.write_text('function envoy_on_request(h)\n  local x = 1\n  if x then\n    h:logInfo("a"\n  end\nend\n')
    with pytest.raises(BuildError) as ei:
        check_lua(f)
    e = ei.value
    assert (e.file, e.line) == (str(f), 5)
    assert e.message == "')' expected (to close '(' at line 4) near 'end'"
    assert e.one_line().startswith(f"{f}:5: ')' expected (to close '(' at line 4) near 'end' (fix: ")


def test_unterminated_block_is_reported_at_eof(tmp_path):
    f = tmp_path / "f.lua"
    f.write_text("function envoy_on_request(h)\n  h:logInfo('x')\n")
    with pytest.raises(BuildError) as ei:
        check_lua(f)
    assert ei.value.line == 3 and "'end' expected (to close 'function' at line 1)" in ei.value.message


def test_long_path_is_not_truncated(tmp_path):
    d = tmp_path / ("d" * 80)
    d.mkdir()
    f = d / "filter.lua"
    f.write_text("x = = 1\n")
    with pytest.raises(BuildError) as ei:
        check_lua(f)
    assert ei.value.one_line().startswith(f"{f}:1: ")


def test_source_is_compiled_not_run(tmp_path):
    f = tmp_path / "f.lua"
    f.write_text('os.exit(3)\nerror("boom")\n')
    check_lua(f)  # still here: nothing ran


def test_non_utf8_bytes_are_fine(tmp_path):
    f = tmp_path / "f.lua"
    f.write_bytes(b"-- caf\xe9\nlocal s = '\xff'\n")
    check_lua(f)


def test_unreadable_file(tmp_path):
    with pytest.raises(BuildError) as ei:
        check_lua(tmp_path / "missing.lua")
    assert ei.value.file == str(tmp_path / "missing.lua")


def test_luajit_version():
    assert luajit_version().startswith("LuaJIT 2.1")
