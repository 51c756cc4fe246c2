"""No network and no new programs for the process that runs an untrusted graph (seccomp).

ONNX Runtime has no network code and starts no programs; this is the second
line, for a kernel bug an input could exploit. A seccomp filter, installed on
every thread of the child once its trusted imports are done and before the
model's first byte is parsed, makes ``socket``, ``execve``, ``execveat`` and
``ptrace`` fail with EPERM: no connection can be opened (no socket, so no
TCP, UDP, netlink or Unix socket to a Docker daemon), no shell started.
Unlike a network namespace it needs no privilege, so it also works inside the
Action's container. Filters are inherited and cannot be removed
(``no_new_privs``). Where it cannot be installed, nothing runs.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
#: classic BPF: load a word at an offset of seccomp_data, compare, jump, return.
LOAD, JUMP_EQ, JUMP_GE, RETURN = 0x20, 0x15, 0x35, 0x06
ARCH_OFFSET, NR_OFFSET = 4, 0
X32_BIT = 0x40000000


#: Per machine: its audit arch, the seccomp syscall, and the syscalls denied.
SYSCALLS = {
    "x86_64": (0xC000003E, 317, {"socket": 41, "execve": 59, "execveat": 322, "ptrace": 101}),
    "aarch64": (0xC00000B7, 277, {"socket": 198, "execve": 221, "execveat": 281, "ptrace": 117}),
}
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def machine() -> str | None:
    """This machine's key in ``SYSCALLS``, or None where no filter can be installed."""
    if platform.system() != "Linux":
        return None
    name = platform.machine().lower()
    name = MACHINES.get(name, name)
    return name if name in SYSCALLS else None


def deny_network_and_programs() -> None:
    """Install the filter on this process and all its threads; ``OSError`` if it cannot be."""
    name = machine()
    if name is None:
        raise OSError(
            errno.ENOSYS, f"no seccomp filter for {platform.system()} {platform.machine()}"
        )
    arch, seccomp, denied = SYSCALLS[name]
    program = _program(arch, list(denied.values()), x32=name == "x86_64")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    filters = ctypes.create_string_buffer(program)
    prog = struct.pack("HxxxxxxP", len(program) // 8, ctypes.addressof(filters))
    prog_buffer = ctypes.create_string_buffer(prog)
    libc.syscall.restype = ctypes.c_long
    done = libc.syscall(
        ctypes.c_long(seccomp), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC), prog_buffer,
    )  # fmt: skip
    if done != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")


def _program(arch: int, denied: list[int], x32: bool) -> bytes:
    """Foreign architecture: kill; x32 calls: deny; a denied call: EPERM; else allow."""
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    code = [
        (LOAD, 0, 0, ARCH_OFFSET),
        (JUMP_EQ, 1, 0, arch),
        (RETURN, 0, 0, SECCOMP_RET_KILL_PROCESS),
    ]
    code.append((LOAD, 0, 0, NR_OFFSET))
    if x32:
        code += [(JUMP_GE, 0, 1, X32_BIT), (RETURN, 0, 0, deny)]
    for number in denied:
        code += [(JUMP_EQ, 0, 1, number), (RETURN, 0, 0, deny)]
    code.append((RETURN, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(struct.pack("HBBI", *instruction) for instruction in code)
