"""compile_wasm: the module's ABI surface, warnings, errors as one line, atomic output."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import wasmtime

from envoyext.build import c, compile_wasm, compiler_version, sdk_include_dir
from envoyext.errors import BuildError
from tests.build.sdk_minihost import STRICT

# Host functions of proxy-wasm ABI v0.2.1 (spec, "Functions exposed by the host").
PROXY_HOST_FUNCTIONS = {
    "proxy_log", "proxy_get_log_level", "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds", "proxy_done", "proxy_set_effective_context",
    "proxy_get_buffer_bytes", "proxy_set_buffer_bytes", "proxy_get_buffer_status",
    "proxy_get_header_map_size", "proxy_get_header_map_pairs", "proxy_set_header_map_pairs",
    "proxy_get_header_map_value", "proxy_add_header_map_value", "proxy_replace_header_map_value",
    "proxy_remove_header_map_value", "proxy_continue_stream", "proxy_close_stream", "proxy_get_status",
    "proxy_send_local_response", "proxy_http_call", "proxy_grpc_call", "proxy_grpc_stream",
    "proxy_grpc_send", "proxy_grpc_cancel", "proxy_grpc_close", "proxy_get_property", "proxy_set_property",
    "proxy_get_shared_data", "proxy_set_shared_data", "proxy_register_shared_queue",
    "proxy_resolve_shared_queue", "proxy_enqueue_shared_queue", "proxy_dequeue_shared_queue",
    "proxy_define_metric", "proxy_record_metric", "proxy_increment_metric", "proxy_get_metric",
    "proxy_call_foreign_function",
}
# WASI preview1 functions proxy-wasm-cpp-host registers (FOR_ALL_WASI_FUNCTIONS).
WASI_FUNCTIONS = set("""
fd_write fd_read fd_seek fd_close fd_fdstat_get fd_fdstat_set_flags fd_fdstat_set_rights environ_get
environ_sizes_get args_get args_sizes_get clock_time_get clock_res_get fd_advise fd_allocate fd_datasync
fd_filestat_set_size fd_filestat_set_times fd_pread fd_pwrite fd_readdir fd_renumber fd_sync fd_tell
path_create_directory path_filestat_set_times path_link path_readlink path_remove_directory path_rename
path_symlink path_unlink_file sock_accept sock_recv sock_send sock_shutdown random_get sched_yield
poll_oneoff proc_exit path_open fd_prestat_get fd_prestat_dir_name path_filestat_get fd_filestat_get
""".split())
REQUIRED_EXPORTS = {"memory", "_initialize", "malloc", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate"}
CALLBACKS = {
    "proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick", "proxy_on_done",
    "proxy_on_log", "proxy_on_delete", "proxy_on_request_headers", "proxy_on_request_body",
    "proxy_on_request_trailers", "proxy_on_response_headers", "proxy_on_response_body",
    "proxy_on_response_trailers", "proxy_on_new_connection", "proxy_on_downstream_data",
    "proxy_on_upstream_data", "proxy_on_downstream_connection_close", "proxy_on_upstream_connection_close",
    "proxy_on_http_call_response", "proxy_on_grpc_receive_initial_metadata", "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata", "proxy_on_grpc_close", "proxy_on_queue_ready",
    "proxy_on_foreign_function",
}
# Exported only when the filter defines the hook they dispatch to (c.OMITTABLE_HOOKS).
OMITTABLE = {
    "proxy_on_done", "proxy_on_log", "proxy_on_request_headers", "proxy_on_request_body",
    "proxy_on_request_trailers", "proxy_on_response_headers", "proxy_on_response_body",
    "proxy_on_response_trailers", "proxy_on_new_connection", "proxy_on_downstream_data",
    "proxy_on_upstream_data", "proxy_on_downstream_connection_close", "proxy_on_upstream_connection_close",
}
BLANK_MAX_BYTES = 16 * 1024


def surface(path):
    m = wasmtime.Module.from_file(wasmtime.Engine(), str(path))
    return {(i.module, i.name) for i in m.imports}, {e.name for e in m.exports}


def check_abi_surface(path):
    imports, exports = surface(path)
    for module, name in imports:
        assert (module == "env" and name in PROXY_HOST_FUNCTIONS) or \
               (module == "wasi_snapshot_preview1" and name in WASI_FUNCTIONS), f"foreign import {module}.{name}"
    assert REQUIRED_EXPORTS <= exports
    assert CALLBACKS - OMITTABLE <= exports
    assert {e for e in exports if e.startswith("proxy_on_")} <= CALLBACKS | {"proxy_on_memory_allocate"}
    assert "main" not in exports and "_start" not in exports  # a reactor, not a command


def test_blank_filter_is_small_strict_clean_and_complete(tmp_path):
    src = tmp_path / "blank.c"
    src.write_text('#include "proxy_wasm.h"\n')
    out = compile_wasm([src], tmp_path / "blank.wasm", cflags=[*STRICT, "-Wpedantic", "-std=c11"])
    check_abi_surface(out)
    size = out.stat().st_size
    print(f"blank filter: {size} bytes")
    assert size < BLANK_MAX_BYTES


def test_only_the_stream_hooks_a_filter_defines_are_exported(tmp_path):
    """A host skips a callback the module does not export (the default's effect), so each
    undefined stream hook costs no call into the VM per request."""
    src = tmp_path / "f.c"
    src.write_text('#include "proxy_wasm.h"\n'
                   'pw_action pw_on_request_headers(pw_ctx *c, uint32_t n, bool e) { return PW_CONTINUE; }\n')
    _, exports = surface(compile_wasm([src], tmp_path / "f.wasm"))
    assert exports & OMITTABLE == {"proxy_on_request_headers"}
    # pw_on_root_done alone keeps proxy_on_done: the host calls it for the plugin context too.
    src.write_text('#include "proxy_wasm.h"\nbool pw_on_root_done(pw_root *r) { return true; }\n')
    _, exports = surface(compile_wasm([src], tmp_path / "f.wasm"))
    assert exports & OMITTABLE == {"proxy_on_done"}


def test_a_hook_defined_through_a_macro_keeps_its_export(tmp_path):
    """The build finds hooks by name in the sources; one it cannot see collides with the SDK's
    strong default at link time, and the build links again with the export kept: never dead."""
    src = tmp_path / "f.c"
    src.write_text('#include "proxy_wasm.h"\n#define HOOK(x) pw_on_##x\n'
                   'void HOOK(log)(pw_ctx *c) { pw_log(PW_LOG_INFO, "logged"); }\n')
    _, exports = surface(compile_wasm([src], tmp_path / "f.wasm"))
    assert exports & OMITTABLE == {"proxy_on_log"}


def test_smoke_filter_abi_surface(smoke_wasm):
    check_abi_surface(smoke_wasm)
    imports, _ = surface(smoke_wasm)
    # What the smoke filter calls, and the i64 metric import, are really imported.
    assert {("env", "proxy_increment_metric"), ("env", "proxy_send_local_response"),
            ("env", "proxy_add_header_map_value")} <= imports


def test_header_is_valid_cxx_and_host_c(tmp_path):
    """The header must not break a C++ filter or a native build (editors, unit tests)."""
    (tmp_path / "x.cc").write_text('#include "proxy_wasm.h"\nint f() { return pw_status_str(PW_OK)[0]; }\n')
    (tmp_path / "x.c").write_text('#include "proxy_wasm.h"\nint f(void) { return PW_PAUSE; }\n')
    zig = [sys.executable, "-m", "ziglang"]
    for cmd in ([*zig, "c++", "--target=wasm32-wasi", "x.cc"], [*zig, "cc", "x.c"]):
        r = subprocess.run([*cmd, "-c", "-o", "x.o", *STRICT, f"-I{sdk_include_dir()}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr


def test_compile_error_is_one_line_with_file_and_line(tmp_path):
    src = tmp_path / "bad.c"
    src.write_text('#include "proxy_wasm.h"\n\npw_action pw_on_request_headers(pw_ctx *ctx, uint32_t n, bool e) {\n'
                   '    return nope;\n}\n')
    with pytest.raises(BuildError) as ei:
        compile_wasm([src], tmp_path / "bad.wasm")
    e = ei.value
    assert (e.file, e.line) == (str(src), 4)
    assert "nope" in e.message
    assert e.one_line().startswith(f"{src}:4: ")
    assert "\n" not in e.one_line()
    assert not (tmp_path / "bad.wasm").exists()


def test_wrong_hook_signature_says_how_to_fix(tmp_path):
    src = tmp_path / "sig.c"
    src.write_text('#include "proxy_wasm.h"\nint pw_on_request_headers(pw_ctx *ctx) { return 0; }\n')
    with pytest.raises(BuildError) as ei:
        compile_wasm([src], tmp_path / "sig.wasm")
    assert ei.value.line == 2
    assert "conflicting types" in ei.value.message
    assert "proxy_wasm.h" in ei.value.fix


def test_undefined_symbol_is_placed_at_its_call(tmp_path):
    """wasm-ld names no line; the error points at the first call rather than the prototype."""
    src = tmp_path / "undef.c"
    src.write_text('#include "proxy_wasm.h"\nvoid helper(void);\n\n'
                   'void pw_on_tick(pw_root *root) {\n    (void)root;\n    helper();\n}\n')
    with pytest.raises(BuildError) as ei:
        compile_wasm([src], tmp_path / "undef.wasm")
    assert ei.value.one_line().startswith(f"{src}:6: undefined symbol: helper")


def test_failed_build_keeps_the_previous_artifact_and_leaves_no_temp(tmp_path):
    src = tmp_path / "f.c"
    out = tmp_path / "out" / "f.wasm"
    src.write_text('#include "proxy_wasm.h"\n')
    compile_wasm([src], out)
    good = out.read_bytes()
    src.write_text('#include "proxy_wasm.h"\nint x = ;\n')
    with pytest.raises(BuildError):
        compile_wasm([src], out)
    assert out.read_bytes() == good
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.wasm"]


def test_include_dirs_and_several_sources(tmp_path):
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "greeting.h").write_text('const char *greeting(void);\n')
    (tmp_path / "greeting.c").write_text('#include "greeting.h"\nconst char *greeting(void) { return "hi"; }\n')
    (tmp_path / "main.c").write_text(
        '#include "proxy_wasm.h"\n#include "greeting.h"\n'
        'pw_action pw_on_response_headers(pw_ctx *c, uint32_t n, bool e) {\n'
        '    (void)c, (void)n, (void)e;\n'
        '    pw_add_header(PW_MAP_HTTP_RESPONSE_HEADERS, "x-greeting", greeting());\n'
        '    return PW_CONTINUE;\n}\n')
    out = compile_wasm([tmp_path / "main.c", tmp_path / "greeting.c"], tmp_path / "m.wasm",
                       include_dirs=[inc], cflags=STRICT)
    check_abi_surface(out)


def test_runtime_listed_explicitly_is_not_linked_twice(tmp_path):
    (tmp_path / "f.c").write_text('#include "proxy_wasm.h"\n')
    out = compile_wasm([tmp_path / "f.c", c.SDK_RUNTIME], tmp_path / "f.wasm")
    check_abi_surface(out)


def test_strip_false_keeps_function_names(tmp_path):
    src = tmp_path / "f.c"
    src.write_text('#include "proxy_wasm.h"\n')
    stripped = compile_wasm([src], tmp_path / "s.wasm").read_bytes()
    named = compile_wasm([src], tmp_path / "n.wasm", strip=False).read_bytes()
    assert b"pw__host_alloc" in named and b"pw__host_alloc" not in stripped
    assert len(stripped) < len(named)


def test_missing_source(tmp_path):
    with pytest.raises(BuildError) as ei:
        compile_wasm([tmp_path / "nope.c"], tmp_path / "x.wasm")
    assert ei.value.file == str(tmp_path / "nope.c")


def test_compiler_version():
    assert re.fullmatch(r"zig \d+\.\d+\.\d+\S* \(clang \d+\.\d+\.\d+\S*\)", compiler_version())
