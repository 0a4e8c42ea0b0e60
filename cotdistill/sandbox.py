"""Run an untrusted Python program in a sandboxed subprocess: never in our process, never with our rights.

    r = run_python("print(int(input()) * 2)", stdin="21\\n")   # -> SandboxResult(returncode=0, stdout="42\\n", ...)

Layers, each enough alone for the attack it names, all on at once where the system allows:
- a fresh temporary directory as the working directory, deleted afterwards; ``python -I -S -B`` (no user
  site, no environment variables, no bytecode written), an empty environment;
- resource limits: CPU seconds, address space (memory), file size (output capped: a program that prints
  forever is stopped by SIGXFSZ), open files, no core dumps;
- its own session and process group, killed as a whole on timeout and after every run;
- run as root (containers, CI): a network namespace with no interfaces and a fresh unprivileged uid with a
  process limit of one, so it cannot fork, reach the network, signal our processes or write our files;
  as another user, a user+network namespace where the kernel allows it;
- an audit hook installed before the program runs (Python's ``sys.addaudithook``, which a program cannot
  remove): no process creation, sockets, ``ctypes``, signals to other processes, or writes outside its
  directory.
"""

from __future__ import annotations

import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_GUARD = r'''
import os, sys
root = os.path.realpath(sys.argv[1])
source = open(os.path.join(root, "main.py"), encoding="utf-8").read()
sys.argv = ["main.py"]
sys.dont_write_bytecode = True
_real, _getpid = os.path.realpath, os.getpid
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DENY = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
         "os.killpg", "signal.pthread_kill", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
         "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.setuid", "os.setsid", "os.chroot", "os.putenv"}
_PATHS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.symlink": 2, "os.link": 2,
          "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1}

def _inside(p):
    if isinstance(p, int):
        return True
    p = _real(os.fsdecode(p))
    return p == root or p.startswith(root + os.sep)

def _hook(event, args):
    if event in _DENY or (event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes", "cffi")):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "os.kill" and args[0] not in (0, _getpid()):
        raise PermissionError("sandbox: signalling another process is not allowed")
    if event == "open":
        mode, flags = args[1] or "", args[2] or 0
        if (any(c in mode for c in "wax+") or flags & _WRITE) and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing outside the sandbox is not allowed: {args[0]}")
    if event in _PATHS and not all(_inside(a) for a in args[:_PATHS[event]] if isinstance(a, str | bytes)):
        raise PermissionError(f"sandbox: {event} outside the sandbox is not allowed")

sys.addaudithook(_hook)
del _hook
exec(compile(source, "main.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
'''

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
_uids = itertools.count()


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 512
    output_bytes: int = 1 << 20  # stdout (and any file it writes) beyond this: killed, "output limit"
    open_files: int = 64


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    status: str  # "ok" (exit 0), "error" (non-zero exit), "timeout", "memory", "output_limit", "killed"
    seconds: float
    isolation: list[str] = field(default_factory=list)  # the kernel layers that were on
    uid: int | None = None  # the fresh uid it ran as (root only)


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _preexec(limits: Limits, uid: int | None, libc):
    """Runs in the child between fork and exec: namespace, limits, then the unprivileged uid (last)."""
    def setup():
        if libc is not None:
            flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
            libc.unshare(flags)  # best effort; the audit hook blocks sockets either way
        for lim, val in ((resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1)),
                         (resource.RLIMIT_AS, (limits.memory_mb << 20,) * 2),
                         (resource.RLIMIT_FSIZE, (limits.output_bytes,) * 2),
                         (resource.RLIMIT_NOFILE, (limits.open_files,) * 2), (resource.RLIMIT_CORE, (0, 0))):
            resource.setrlimit(lim, val)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))  # a fresh uid owns this one process: no fork
            os.setuid(uid)
    return setup


@dataclass(frozen=True)
class _Setup:
    python: str
    uid_layer: bool
    netns: bool

    @property
    def isolation(self) -> list[str]:
        return (["network namespace"] if self.netns else []) + (["separate uid"] if self.uid_layer else [])


_SETUP: _Setup | None = None


def _probe(python: str, preexec) -> bool:
    try:
        return subprocess.run([python, "-I", "-S", "-c", "import sys; sys.exit(sys.version_info < (3, 8))"],
                              capture_output=True, timeout=30, preexec_fn=preexec, cwd="/").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _setup() -> _Setup:
    """What this machine grants, probed once in children: a network namespace, and (as root) an interpreter
    that a fresh unprivileged uid can run (ours may sit under /root, which other uids cannot enter)."""
    global _SETUP
    if _SETUP is None:
        root = os.geteuid() == 0
        libc = _libc()
        netns = _probe(sys.executable, lambda: None if libc.unshare(
            CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNET) == 0 else os._exit(1))
        python, uid_layer = sys.executable, False
        if root:
            for cand in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
                if os.path.exists(cand) and _probe(cand, _preexec(Limits(), 99_999, None)):
                    python, uid_layer = cand, True
                    break
        _SETUP = _Setup(python, uid_layer, netns)
    return _SETUP


def _status(rc: int | None, timed_out: bool, stderr: str, out_bytes: int, limits: Limits) -> str:
    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if rc == -signal.SIGXFSZ or out_bytes >= limits.output_bytes or "File too large" in stderr:
        return "output_limit"  # Python ignores SIGXFSZ: the write fails with EFBIG instead
    if rc == 0:
        return "ok"
    if "MemoryError" in stderr:
        return "memory"
    return "killed" if rc is not None and rc < 0 else "error"


def run_python(source: str, stdin: str = "", limits: Limits = Limits()) -> SandboxResult:
    """Run ``source`` as ``__main__`` with ``stdin``; return what it printed and how it ended."""
    setup = _setup()
    uid = 100_000 + (os.getpid() * 97 + next(_uids)) % 3_000_000 if setup.uid_layer else None
    libc = _libc() if setup.netns else None
    work = Path(tempfile.mkdtemp(prefix="cotdistill-sandbox-"))
    try:
        box = work / "box"
        box.mkdir()
        (box / "main.py").write_text(source, encoding="utf-8")
        (work / "guard.py").write_text(_GUARD)
        (work / "stdin").write_text(stdin)
        if uid is not None:
            os.chown(box, uid, uid)
            os.chmod(work, 0o755)
        t0 = time.perf_counter()
        with open(work / "stdin", "rb") as fin, open(work / "stdout", "wb") as fout, \
                open(work / "stderr", "wb") as ferr:
            proc = subprocess.Popen(
                [setup.python, "-I", "-S", "-B", str(work / "guard.py"), str(box)], stdin=fin, stdout=fout,
                stderr=ferr, cwd=box, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, close_fds=True,
                start_new_session=True, preexec_fn=_preexec(limits, uid, libc))
            timed_out = False
            try:
                rc = proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out, rc = True, None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, also after a normal exit
                except ProcessLookupError:
                    pass
                proc.wait()
        seconds = time.perf_counter() - t0
        raw = (work / "stdout").read_bytes()
        out = raw[: limits.output_bytes].decode("utf-8", "replace")
        err = (work / "stderr").read_bytes()[-4000:].decode("utf-8", "replace")
        status = _status(rc, timed_out, err, len(raw), limits)
        return SandboxResult(rc, out, err, status, round(seconds, 3), setup.isolation, uid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
