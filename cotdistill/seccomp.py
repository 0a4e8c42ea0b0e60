"""The sandbox's seccomp filter: a classic-BPF program, built here so no C library is needed, that bubblewrap loads
into the sandboxed process just before it runs the interpreter (``bwrap --seccomp FD``).

    program = filter_bytes()   # -> bytes of struct sock_filter[], or None on an architecture we have no table for

What it refuses (EPERM unless said):
- process creation: fork, vfork, clone without CLONE_THREAD (threads stay allowed), clone3 (ENOSYS, so glibc
  falls back to clone, which is checked);
- signals to any process but its own: kill/tkill/tgkill/rt_sigqueueinfo/rt_tgsigqueueinfo with a target other
  than 0 or 2 (in its pid namespace the program is pid 2, under bubblewrap's reaper), pidfd_*;
- resource limits changed from inside: setrlimit, prlimit64 with a new limit;
- ptrace and process_vm_*, mknod/mknodat, mount and every new mount API call, pivot_root, chroot, unshare, setns,
  sockets (the network namespace has no interface either), SysV/POSIX IPC and memfd, keyrings, bpf, perf,
  userfaultfd, io_uring, modules, kexec, reboot, swap, clocks, quotas, file handles, personality, syslog, ioperm;
- x32 system calls and any other architecture's calling convention: the process is killed.
Only x86-64 has a table: elsewhere the sandbox refuses to run code rather than run it without this layer.
"""

from __future__ import annotations

import errno
import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_CLONE_THREAD = 0x00010000
SANDBOX_PID = 2  # the program under bubblewrap's pid-1 reaper in a fresh pid namespace

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl)
_X86_64 = {
    "socket": 41, "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "kill": 62, "semget": 64, "msgget": 68,
    "shmget": 29, "ptrace": 101, "pivot_root": 155, "syslog": 103, "personality": 135, "mknod": 133, "uselib": 134,
    "adjtimex": 159,
    "setrlimit": 160, "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167,
    "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "tkill": 200, "clock_settime": 227, "mq_open": 240, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "mknodat": 259, "unshare": 272, "perf_event_open": 298,
    "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "tgkill": 234, "fanotify_init": 300, "prlimit64": 302,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "memfd_create": 319, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
}
_SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # target pid/tgid in args[0]
_SPECIAL = {"clone", "clone3", "prlimit64", *_SIGNAL_CALLS}
DENIED = sorted(set(_X86_64) - _SPECIAL)

_LD_ABS, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_ALLOW, _KILL = 0x7FFF0000, 0x80000000
_ERRNO = 0x00050000


def _arg(i: int, high: bool = False) -> int:
    return 16 + 8 * i + (4 if high else 0)  # struct seccomp_data: nr, arch, instruction_pointer, args[6] (LE)


def _assemble(code: list) -> bytes:
    """Instructions (op, k) or jumps (op, k, true_label, false_label) with labels as strings; jumps go forward."""
    where, pos = {}, 0
    for ins in code:
        if isinstance(ins, str):
            where[ins] = pos
        else:
            pos += 1
    out, pos = [], 0
    for ins in code:
        if isinstance(ins, str):
            continue
        op, k, *jumps = ins
        jt, jf = (0, 0) if not jumps else [0 if j is None else where[j] - pos - 1 for j in jumps]
        assert 0 <= jt < 256 and 0 <= jf < 256, "a BPF jump must go forward by less than 256"
        out.append(struct.pack("<HBBI", op, jt, jf, k))
        pos += 1
    return b"".join(out)


def filter_bytes() -> bytes | None:
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    nr = _X86_64
    code: list = [(_LD_ABS, 4), (_JEQ, _AUDIT_ARCH_X86_64, None, "kill"),
                  (_LD_ABS, 0), (_JSET, _X32_BIT, "kill", None)]
    code += [(_JEQ, nr[name], "eperm", None) for name in DENIED]
    code += [(_JEQ, nr["clone3"], "enosys", None), (_JEQ, nr["clone"], "clone", None),
             (_JEQ, nr["prlimit64"], "prlimit", None)]
    code += [(_JEQ, nr[name], "signal", None) for name in _SIGNAL_CALLS]
    code += [(_RET, _ALLOW),
             "clone", (_LD_ABS, _arg(0)), (_JSET, _CLONE_THREAD, "allow", "eperm"),
             "prlimit", (_LD_ABS, _arg(2)), (_JEQ, 0, None, "eperm"), (_LD_ABS, _arg(2, True)),
             (_JEQ, 0, "allow", "eperm"),
             "signal", (_LD_ABS, _arg(0, True)), (_JEQ, 0, None, "eperm"), (_LD_ABS, _arg(0)),
             (_JEQ, 0, "allow", None), (_JEQ, SANDBOX_PID, "allow", "eperm"),
             "allow", (_RET, _ALLOW),
             "eperm", (_RET, _ERRNO | errno.EPERM),
             "enosys", (_RET, _ERRNO | errno.ENOSYS),
             "kill", (_RET, _KILL)]
    return _assemble(code)
