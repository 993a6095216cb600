"""WASI preview1 as cpp-host implements it for proxy-wasm (also served as `wasi_unstable`).

There is no filesystem: stdout/stderr writes become log lines (info/error, one trailing newline
dropped), clocks read Envoy's time, randomness is real, environment variables are the plugin's,
argv is empty, and the rest answer the errno cpp-host answers.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from envoyext.wasm.abi import RANDOM_GET_MAX_BYTES, Errno, LogLevel
from envoyext.wasm.host import GuestAbort, HostFunction

if TYPE_CHECKING:
    from envoyext.wasm.context import Wasm

SUCCESS, BADF, FAULT, INVAL, NOSYS, NOTSUP = (Errno.SUCCESS, Errno.BADF, Errno.FAULT, Errno.INVAL,
                                              Errno.NOSYS, Errno.NOTSUP)


def _stdio(fd):
    return fd in (1, 2)


def make_wasi(w: "Wasm") -> dict[str, HostFunction]:
    vm = lambda: w.vm  # noqa: E731 - the VM is created from this table

    def writev(fd, iovs, iovs_len):
        """(errno, bytes written): stdout logs at info, stderr at error."""
        if fd == 1:
            level = LogLevel.info
        elif fd == 2:
            level = LogLevel.error
        else:
            return BADF, 0
        out = []
        for i in range(iovs_len):
            iov = vm().get_memory(iovs + i * 8, 8)
            if iov is None:
                return FAULT, 0
            buf, n = struct.unpack("<II", iov)
            if n:
                data = vm().get_memory(buf, n)
                if data is None:
                    return FAULT, 0
                out.append(data)
        s = b"".join(out)
        if s:
            msg = s[:-1] if s.endswith(b"\n") else s
            if level >= w.services.log_level:
                w.services.log(level, msg.decode("utf-8", "surrogateescape"))
        return SUCCESS, len(s)

    def fd_write(fd, iovs, iovs_len, nwritten_ptr):
        errno, n = writev(fd, iovs, iovs_len)
        if errno != SUCCESS:
            return errno
        return SUCCESS if vm().set_word(nwritten_ptr, n) else FAULT

    def fd_pwrite(fd, iovs, iovs_len, offset, nwritten_ptr):
        if not _stdio(fd):
            return BADF
        return fd_write(fd, iovs, iovs_len, nwritten_ptr)

    def fd_read(fd, iovs, iovs_len, nread_ptr):
        return NOSYS

    def fd_seek(fd, offset, whence, newoffset_ptr):
        return SUCCESS   # cpp-host only reports "wasi_unstable fd_seek" at trace level

    def fd_close(fd):
        return SUCCESS

    def fd_fdstat_get(fd, stat_ptr):
        if not _stdio(fd):
            return BADF
        vm().set_memory(stat_ptr, struct.pack("<QQQ", 0, 64, 0))   # rights: FD_WRITE
        return SUCCESS

    def environ_sizes_get(count_ptr, size_ptr):
        env = w.plugin.environment
        if not vm().set_word(count_ptr, len(env)):
            return FAULT
        size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())
        return SUCCESS if vm().set_word(size_ptr, size) else FAULT

    def environ_get(array_ptr, buf_ptr):
        for k, v in w.plugin.environment.items():
            if not vm().set_word(array_ptr, buf_ptr):
                return FAULT
            data = k.encode() + b"=" + v.encode() + b"\0"
            if not vm().set_memory(buf_ptr, data):
                return FAULT
            buf_ptr += len(data)
            array_ptr += 4
        return SUCCESS

    def args_sizes_get(argc_ptr, size_ptr):
        if not vm().set_word(argc_ptr, 0) or not vm().set_word(size_ptr, 0):
            return FAULT
        return SUCCESS

    def clock_time_get(clock_id, precision, result_ptr):
        if clock_id == 0:
            t = w.services.now_ns()
        elif clock_id == 1:
            t = w.services.monotonic_ns()
        else:
            return NOTSUP
        return SUCCESS if vm().set_u64(result_ptr, t) else FAULT

    def clock_res_get(clock_id, result_ptr):
        if clock_id not in (0, 1):
            return NOTSUP
        return SUCCESS if vm().set_u64(result_ptr, 1) else FAULT

    def random_get(buf_ptr, size):
        if size > RANDOM_GET_MAX_BYTES:
            return INVAL
        if size == 0:
            return SUCCESS
        return SUCCESS if vm().set_memory(buf_ptr, os.urandom(size)) else FAULT

    def poll_oneoff(in_ptr, out_ptr, n, nevents_ptr):
        return SUCCESS if vm().set_word(nevents_ptr, 0) else FAULT

    def proc_exit(code):
        # cpp-host reports it and returns; a module that calls it cannot continue, so trap.
        raise GuestAbort(f"wasi proc_exit({code})")

    def fd_tell(fd, ptr):
        if not _stdio(fd):
            return BADF
        return SUCCESS if vm().set_u64(ptr, 0) else FAULT

    def zero_word_then(errno, at):
        def f(*args):
            return errno if vm().set_word(args[at], 0) else FAULT
        return f

    def stdio_ok(*args):
        return SUCCESS if _stdio(args[0]) else BADF

    def fd_renumber(fd, to):
        return NOTSUP if _stdio(fd) and _stdio(to) else BADF

    def sock_accept(fd, flags, ptr):
        return NOTSUP if vm().set_word(ptr, 0) else FAULT

    def sock_recv(fd, data, n, flags, ptr0, ptr1):
        if not vm().set_word(ptr0, 0) or not vm().set_memory(ptr1, b"\0\0"):
            return FAULT
        return NOTSUP

    const = lambda v: (lambda *args: v)  # noqa: E731

    table = {
        "fd_write": ("iiii", fd_write),
        "fd_read": ("iiii", fd_read),
        "fd_seek": ("iIii", fd_seek),
        "fd_close": ("i", fd_close),
        "fd_fdstat_get": ("ii", fd_fdstat_get),
        "fd_fdstat_set_flags": ("ii", const(NOSYS)),
        "fd_fdstat_set_rights": ("iII", stdio_ok),
        "environ_get": ("ii", environ_get),
        "environ_sizes_get": ("ii", environ_sizes_get),
        "args_get": ("ii", const(SUCCESS)),
        "args_sizes_get": ("ii", args_sizes_get),
        "clock_time_get": ("iIi", clock_time_get),
        "clock_res_get": ("ii", clock_res_get),
        "fd_advise": ("iIIi", const(SUCCESS)),
        "fd_allocate": ("iII", stdio_ok),
        "fd_datasync": ("i", stdio_ok),
        "fd_filestat_set_size": ("iI", stdio_ok),
        "fd_filestat_set_times": ("iIIi", stdio_ok),
        "fd_pread": ("iiiIi", const(NOSYS)),
        "fd_pwrite": ("iiiIi", fd_pwrite),
        "fd_readdir": ("iiiIi", zero_word_then(Errno.NOTDIR, 4)),
        "fd_renumber": ("ii", fd_renumber),
        "fd_sync": ("i", stdio_ok),
        "fd_tell": ("ii", fd_tell),
        "path_create_directory": ("iii", const(NOTSUP)),
        "path_filestat_set_times": ("iiiiIIi", const(NOTSUP)),
        "path_link": ("iiiiiii", const(NOTSUP)),
        "path_readlink": ("iiiiii", zero_word_then(NOTSUP, 5)),
        "path_remove_directory": ("iii", const(NOTSUP)),
        "path_rename": ("iiiiii", const(NOTSUP)),
        "path_symlink": ("iiiii", const(NOTSUP)),
        "path_unlink_file": ("iii", const(NOTSUP)),
        "sock_accept": ("iii", sock_accept),
        "sock_recv": ("iiiiii", sock_recv),
        "sock_send": ("iiiii", zero_word_then(NOTSUP, 4)),
        "sock_shutdown": ("ii", const(NOTSUP)),
        "random_get": ("ii", random_get),
        "sched_yield": ("", const(SUCCESS)),
        "poll_oneoff": ("iiii", poll_oneoff),
        "proc_exit": ("i", proc_exit),
        "path_open": ("iiiiiIIii", const(Errno.NOENT)),
        "fd_prestat_get": ("ii", const(BADF)),
        "fd_prestat_dir_name": ("iii", const(NOSYS)),
        "path_filestat_get": ("iiiii", const(NOTSUP)),
        "fd_filestat_get": ("ii", const(BADF)),
    }
    out = {}
    for name, (params, impl) in table.items():
        out[name] = HostFunction(params, "" if name == "proc_exit" else "i", impl)
    return out
