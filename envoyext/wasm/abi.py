"""The Proxy-Wasm ABI in proxy-wasm's own words: enums, status codes and the pairs serialization.

Values are those of proxy-wasm/spec (v0.2.1, v0.2.0, v0.1.0) and of proxy-wasm-cpp-host, which
Envoy embeds; nothing here depends on a VM or a stream.
"""

from __future__ import annotations

import struct
from enum import Enum, IntEnum


class WasmResult(IntEnum):
    """proxy_status_t; cpp-host's WasmResult (the values every host function returns)."""
    Ok = 0
    NotFound = 1
    BadArgument = 2
    SerializationFailure = 3
    ParseFailure = 4
    BadExpression = 5
    InvalidMemoryAccess = 6
    Empty = 7
    CasMismatch = 8
    ResultMismatch = 9
    InternalFailure = 10
    BrokenConnection = 11
    Unimplemented = 12


class LogLevel(IntEnum):
    trace = 0
    debug = 1
    info = 2
    warn = 3
    error = 4
    critical = 5


# LogLine.level names, by proxy_log_level_t.
LOG_LEVEL_NAMES = tuple(level.name for level in LogLevel)


class BufferType(IntEnum):
    HttpRequestBody = 0
    HttpResponseBody = 1
    DownstreamData = 2
    UpstreamData = 3
    HttpCallResponseBody = 4
    GrpcReceiveBuffer = 5
    VmConfiguration = 6
    PluginConfiguration = 7
    CallData = 8      # FOREIGN_FUNCTION_ARGUMENTS
    MAX = 8


class MapType(IntEnum):
    RequestHeaders = 0
    RequestTrailers = 1
    ResponseHeaders = 2
    ResponseTrailers = 3
    GrpcReceiveInitialMetadata = 4
    GrpcReceiveTrailingMetadata = 5
    HttpCallResponseHeaders = 6
    HttpCallResponseTrailers = 7
    MAX = 7


class StreamType(IntEnum):
    Request = 0
    Response = 1
    Downstream = 2
    Upstream = 3
    MAX = 3


class MetricType(IntEnum):
    Counter = 0
    Gauge = 1
    Histogram = 2
    MAX = 2


class FilterHeadersStatus(IntEnum):
    Continue = 0
    StopIteration = 1
    ContinueAndEndStream = 2
    StopAllIterationAndBuffer = 3
    StopAllIterationAndWatermark = 4


class FilterDataStatus(IntEnum):
    Continue = 0
    StopIterationAndBuffer = 1
    StopIterationAndWatermark = 2
    StopIterationNoBuffer = 3


class FilterTrailersStatus(IntEnum):
    Continue = 0
    StopIteration = 1


class AbiVersion(Enum):
    V0_1_0 = "0.1.0"
    V0_2_0 = "0.2.0"
    V0_2_1 = "0.2.1"
    Unknown = "unknown"


ABI_MARKERS = {"proxy_abi_version_0_1_0": AbiVersion.V0_1_0,
               "proxy_abi_version_0_2_0": AbiVersion.V0_2_0,
               "proxy_abi_version_0_2_1": AbiVersion.V0_2_1}


def abi_version(export_names) -> AbiVersion:
    """The first function export naming an ABI version decides, as cpp-host's BytecodeUtil does."""
    for name in export_names:
        if name in ABI_MARKERS:
            return ABI_MARKERS[name]
    return AbiVersion.Unknown


# The guest callbacks cpp-host's WasmBase::getFunctions() looks up (FOR_ALL_MODULE_FUNCTIONS, in
# its order), with the signature each must have: (name, number of i32 params, returns an i32).
MODULE_CALLBACKS = (
    ("proxy_validate_configuration", 2, True), ("proxy_on_vm_start", 2, True), ("proxy_on_configure", 2, True),
    ("proxy_on_tick", 1, False), ("proxy_on_context_create", 2, False), ("proxy_on_new_connection", 1, True),
    ("proxy_on_downstream_data", 3, True), ("proxy_on_upstream_data", 3, True),
    ("proxy_on_downstream_connection_close", 2, False), ("proxy_on_upstream_connection_close", 2, False),
    ("proxy_on_request_body", 3, True), ("proxy_on_request_trailers", 2, True),
    ("proxy_on_request_metadata", 2, True), ("proxy_on_response_body", 3, True),
    ("proxy_on_response_trailers", 2, True), ("proxy_on_response_metadata", 2, True),
    ("proxy_on_http_call_response", 5, False), ("proxy_on_grpc_receive", 3, False),
    ("proxy_on_grpc_close", 3, False), ("proxy_on_grpc_receive_initial_metadata", 3, False),
    ("proxy_on_grpc_receive_trailing_metadata", 3, False), ("proxy_on_queue_ready", 2, False),
    ("proxy_on_done", 1, True), ("proxy_on_log", 1, False), ("proxy_on_delete", 1, False),
)
# Then the ones whose signature the declared ABI version decides (ABI 0.1.0 has no end_of_stream
# argument on the header callbacks, and no foreign functions).
ABI_CALLBACKS = {
    AbiVersion.V0_1_0: (("proxy_on_request_headers", 2, True), ("proxy_on_response_headers", 2, True)),
    AbiVersion.V0_2_0: (("proxy_on_request_headers", 3, True), ("proxy_on_response_headers", 3, True),
                        ("proxy_on_foreign_function", 3, False)),
}
ABI_CALLBACKS[AbiVersion.V0_2_1] = ABI_CALLBACKS[AbiVersion.V0_2_0]

Signature = tuple[tuple[str, ...], tuple[str, ...]]   # (param types, result types), e.g. (("i32",), ())


def signature_text(sig: Signature) -> str:
    """cpp-host's printValTypes rendering: "i32 i32 -> i32", "void" for none."""
    params, results = sig
    return f"{' '.join(params) or 'void'} -> {' '.join(results) or 'void'}"


def export_failures(version: AbiVersion, exports: dict[str, Signature]) -> list[str]:
    """What cpp-host's getFunctions() fails the VM with for these function exports, in its order
    (Envoy logs each and refuses the plugin): each looked-up export whose signature is not the one
    wanted. Exports it does not look up are never checked."""
    failures: list[str] = []

    def found(name: str, nparams: int, returns_word: bool) -> bool:
        if name not in exports:
            return False
        want = (("i32",) * nparams, ("i32",) if returns_word else ())
        if exports[name] != want:
            failures.append(f"Bad function signature for: {name}, want: {signature_text(want)}, "
                            f"but the module exports: {signature_text(exports[name])}")
            return False
        return True

    if found("_initialize", 0, False):
        found("main", 2, True)
        found("__main_void", 0, True)
    else:
        found("_start", 0, False)
    if not found("malloc", 1, True):
        found("proxy_on_memory_allocate", 1, True)   # (none at all: Wasm's own "missing malloc")
    for name, nparams, returns_word in MODULE_CALLBACKS + ABI_CALLBACKS.get(version, ()):
        found(name, nparams, returns_word)
    return failures


# WASI errno values cpp-host returns.
class Errno(IntEnum):
    SUCCESS = 0
    BADF = 8
    FAULT = 21
    INVAL = 28
    NOENT = 44
    NOSYS = 52
    NOTDIR = 20
    NOTSUP = 58


# cpp-host limits (include/proxy-wasm/limits.h).
PAIRS_MAX_BYTES = 1024 * 1024
PAIRS_MAX_COUNT = 1024
RANDOM_GET_MAX_BYTES = 64 * 1024
MAX_MEMORY_BYTES = 1024 * 1024 * 1024

# cpp-host's restricted phases: only these imports may be called (others trap "restricted_callback").
_WASI = ("wasi_snapshot_preview1", "wasi_unstable")
# startVm: _initialize (+ main / __main_void) or _start. All of WASI but path_open, fd_read,
# fd_seek, fd_close, sched_yield and proc_exit.
STARTUP_ALLOWED = frozenset(
    ["env.emscripten_notify_memory_growth", "env.proxy_log"]
    + [f"{m}.{n}" for m in _WASI for n in """
fd_write args_sizes_get args_get environ_sizes_get environ_get clock_time_get clock_res_get
random_get poll_oneoff fd_fdstat_get fd_fdstat_set_flags fd_advise fd_allocate fd_datasync
fd_fdstat_set_rights fd_filestat_get fd_filestat_set_size fd_filestat_set_times fd_pread
fd_prestat_dir_name fd_prestat_get fd_pwrite fd_readdir fd_renumber fd_sync fd_tell
path_create_directory path_filestat_get path_filestat_set_times path_link path_readlink
path_remove_directory path_rename path_symlink path_unlink_file sock_accept sock_recv sock_send
sock_shutdown""".split()])
# allocMemory: the module's malloc / proxy_on_memory_allocate, when the host copies data in
# (Go's allocator may log, read the clock or sleep for its GC). Afterwards nothing is restricted.
MALLOC_ALLOWED = frozenset(["env.proxy_log"] + [f"{m}.{n}" for m in _WASI
                                               for n in ("fd_write", "clock_time_get", "poll_oneoff")])

_U32 = struct.Struct("<I")


def serialize_pairs(pairs) -> bytes:
    """Pairs of bytes -> the spec's map serialization: count, (key len, value len)*, key\\0 value\\0 ..."""
    if not pairs:
        return b""
    sizes = []
    data = []
    for k, v in pairs:
        sizes.append(struct.pack("<II", len(k), len(v)))
        data.append(k)
        data.append(b"\0")
        data.append(v)
        data.append(b"\0")
    return _U32.pack(len(pairs)) + b"".join(sizes) + b"".join(data)


def deserialize_pairs(buf: bytes) -> list[tuple[bytes, bytes]]:
    """cpp-host's PairsUtil::toPairs: anything malformed or over the limits yields no pairs at all."""
    n = len(buf)
    if n < 4 or n > PAIRS_MAX_BYTES:
        return []
    (count,) = _U32.unpack_from(buf, 0)
    if count > PAIRS_MAX_COUNT or 4 + count * 8 > n:
        return []
    sizes = struct.unpack_from("<%dI" % (2 * count), buf, 4)
    pos = 4 + count * 8
    out = []
    for i in range(count):
        ks, vs = sizes[2 * i], sizes[2 * i + 1]
        if pos + ks + 1 > n or buf[pos + ks] != 0:
            return []
        k = buf[pos:pos + ks]
        pos += ks + 1
        if pos + vs + 1 > n or buf[pos + vs] != 0:
            return []
        out.append((k, buf[pos:pos + vs]))
        pos += vs + 1
    return out if pos == n else []
