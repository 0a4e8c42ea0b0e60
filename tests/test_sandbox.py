"""The code sandbox against programs that try to get out. Each attack is tried for real and checked from outside
(files, processes, the parent's state, time), not only by the exit status. The kernel's layers are attacked with
the audit hook off (``mode="bare"``), so each test shows the kernel alone stops it; the same attacks run with the
hook on, as root (a fresh uid per run) and as an unprivileged user."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT

from cotdistill import sandbox
from cotdistill.sandbox import Limits, run_python

FAST = Limits(wall_s=3, cpu_s=2, memory_mb=256, output_bytes=64 << 10)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start an unprivileged user")


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (uid, parent pid, state) of every process now."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(d.name)] = (d.stat().st_uid, int(fields[1]), fields[0])
            except (OSError, ValueError, IndexError):
                pass
    return out


def running_under(uids: set[int]) -> set[int]:
    """Processes of these uids that still run (a zombie waiting to be collected runs nothing)."""
    return {pid for pid, (uid, _, state) in _procs().items() if uid in uids and state != "Z"}


def sandbox_uids_below(root: int) -> set[int]:
    """The fresh uids of the sandbox processes descending from ``root``: this test's own, not another worker's."""
    procs, kids = _procs(), {}
    for pid, (_, ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    todo, uids = [root], set()
    while todo:
        pid = todo.pop()
        uid = procs.get(pid, (0,))[0]
        if sandbox._UID_BASE <= uid < sandbox._UID_BASE + sandbox._UID_SPAN:
            uids.add(uid)
        todo += kids.get(pid, [])
    return uids


@pytest.fixture
def clean(monkeypatch):
    """Every uid this test's runs claimed has no process left after them (as root; others share the caller's)."""
    claimed: set[int] = set()
    real = sandbox._claim_uid

    def claim():
        got = real()
        claimed.add(got[0])
        return got

    monkeypatch.setattr(sandbox, "_claim_uid", claim)
    yield
    deadline = time.time() + 5  # a killed program's exit (freeing its tmpfs) may still be under way
    while time.time() < deadline and running_under(claimed):
        time.sleep(0.05)
    assert not running_under(claimed), "a sandboxed process outlived its run"


def bare(src: str, **kw):
    return run_python(textwrap.dedent(src), limits=kw.pop("limits", FAST), mode="bare", **kw)


def test_a_plain_program_runs(clean):
    r = run_python("import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3\n", FAST)
    assert (r.status, r.stdout) == ("ok", "6\n")
    assert {"user namespace", "pid namespace", "mount namespace", "network namespace", "seccomp"} <= set(r.isolation)


@pytest.mark.parametrize("src", [
    "import os\nos.fork()",
    "import os\nos.posix_spawn('/usr/bin/true', ['true'], {})",
    "import subprocess\nsubprocess.run(['/usr/bin/sleep', '100'])",
    "import multiprocessing as m\nm.Process(target=print).start()",
    "import pty\npty.fork()",
])
def test_the_kernel_refuses_new_processes(clean, src):
    r = bare(src)
    assert r.status == "error" and ("PermissionError" in r.stderr or "Operation not permitted" in r.stderr), \
        (src, r.stderr[-300:])


@pytest.mark.parametrize("call", ["syscall(57)", "syscall(58)", "syscall(56, 17, 0, 0, 0, 0)",  # fork, vfork, clone
                                  "syscall(435, 0, 0)"])                                         # clone3
def test_the_kernel_refuses_raw_process_calls(clean, call):
    r = bare(f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.{call}, ctypes.get_errno())")
    assert r.status == "ok" and r.stdout.split() in (["-1", "1"], ["-1", "38"]), (call, r.stdout, r.stderr[-300:])


def test_threads_still_work(clean):
    r = bare("""
        import threading
        out = []
        ts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(sorted(out))""")
    assert (r.status, r.stdout) == ("ok", "[0, 1, 2, 3]\n")


def test_other_processes_cannot_be_seen_or_signalled(clean):
    """Not the caller, not another process, not bwrap's reaper (pid 1), whose memory a /proc would expose."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        r = bare(f"""
            import os, signal
            print(os.path.exists('/proc'), os.getpid())
            for pid in ({victim.pid}, {os.getpid()}, 1, os.getppid(), -1):
                try:
                    os.kill(pid, signal.SIGKILL)
                    print('sent', pid)
                except OSError as e:
                    print('refused', pid, e.errno)""")
        lines = r.stdout.splitlines()
        assert lines[0] == "False 2", lines[0]  # no /proc to look through; itself pid 2 under bwrap's reaper
        assert not any(x.startswith("sent") for x in lines[1:]), r.stdout
        assert victim.poll() is None  # still alive
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()


def test_limits_cannot_be_raised_or_traced_around(clean):
    r = bare("""
        import ctypes, resource
        for what, call in (
                ("setrlimit", lambda: resource.setrlimit(resource.RLIMIT_CPU,
                                                         resource.getrlimit(resource.RLIMIT_CPU))),
                ("prlimit", lambda: resource.prlimit(0, resource.RLIMIT_NOFILE, (8, 8)))):
            try:
                call(); print(what, 'allowed')
            except (OSError, ValueError) as e:
                print(what, 'refused')
        libc = ctypes.CDLL(None, use_errno=True)
        for name, args in (("ptrace", (16, 1, 0, 0)), ("unshare", (0x10000000,)), ("unshare", (0x20000,)),
                           ("mount", (b"none", b"/tmp", b"tmpfs", 0, None)), ("mknod", (b"dev", 0o20666, 0x0103)),
                           ("socket", (2, 1, 0)), ("personality", (0x0040000,))):
            print(name, getattr(libc, name)(*args), ctypes.get_errno())""")
    assert r.status == "ok", r.stderr[-400:]
    out = r.stdout.splitlines()
    assert out[:2] == ["setrlimit refused", "prlimit refused"]
    assert all(line.split()[1] == "-1" and line.split()[2] == "1" for line in out[2:]), out  # -1, EPERM


def test_nothing_outside_the_box_is_visible_or_writable(clean, tmp_path):
    secret = tmp_path / "problems.jsonl"
    secret.write_text('{"answer": "42"}')
    targets = [tmp_path / "pwned", ROOT / f"pwned-{os.getpid()}", Path("/tmp") / f"pwned-{os.getpid()}",
               Path("/usr") / f"pwned-{os.getpid()}", Path("/") / f"pwned-{os.getpid()}"]
    r = bare(f"""
        import os, sqlite3, dbm
        for p in {[str(secret), str(ROOT / ".git"), str(ROOT), str(Path.home()), "/etc/passwd", "/work", "/root"]!r}:
            print('visible' if os.path.exists(p) else 'absent', p)
        for t in {[str(t) for t in targets]!r}:
            for how in ("open", "dirfd", "opener", "fifo", "sqlite", "dbm", "symlink"):
                try:
                    if how == "open": open(t, "w").write("x")
                    elif how == "dirfd":
                        d = os.open(os.path.dirname(t), os.O_RDONLY)
                        os.close(os.open(os.path.basename(t), os.O_CREAT | os.O_WRONLY, dir_fd=d))
                    elif how == "opener": open(t, "w", opener=lambda p, f: os.open(p, f)).write("x")
                    elif how == "fifo": os.mkfifo(t)
                    elif how == "sqlite": sqlite3.connect(t).execute("create table x(y)")
                    elif how == "dbm": dbm.open(t, "c")
                    else: os.symlink("/etc/passwd", t)
                except Exception:
                    pass""")
    assert r.status == "ok", r.stderr[-400:]
    assert all(line.startswith("absent") for line in r.stdout.splitlines()), r.stdout
    for t in targets:
        assert not t.exists() and not t.is_symlink(), t
        assert not Path(str(t) + ".db").exists()
    inside = run_python("open('out.txt', 'w').write('ok')\nprint(open('out.txt').read())", limits=FAST)
    assert (inside.status, inside.stdout) == ("ok", "ok\n")  # its own directory is writable


def test_dev_is_read_only_and_proc_absent(clean):
    r = bare("""
        import os
        for p in ('/dev/shm/x', '/dev/x', '/proc/1/mem', '/proc/self/mem'):
            try:
                open(p, 'wb').write(b'x' * 1000); print('wrote', p)
            except OSError as e:
                print('refused', p, e.errno)
        open('/dev/null', 'w').write('fine')""")
    assert r.status == "ok" and "wrote" not in r.stdout, r.stdout + r.stderr[-300:]


def test_the_network_is_unreachable(clean):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    try:
        r = bare(f"""
            import socket
            try:
                socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1).send(b'hi')
                print('connected')
            except OSError as e:
                print('refused', e.errno)""")
        assert r.stdout.startswith("refused"), r.stdout + r.stderr
        with pytest.raises(socket.timeout):
            server.accept()  # nothing connected
    finally:
        server.close()


def test_the_disk_is_capped_in_bytes_and_inodes_and_leaves_nothing(clean):
    r = bare("open('big', 'wb').write(b'x' * (8 << 20))", limits=Limits(wall_s=3, cpu_s=2, disk_bytes=1 << 20,
                                                                        output_bytes=64 << 20))
    assert r.status == "error" and "No space left" in r.stderr
    t = time.perf_counter()
    r = bare("""
        import os
        for _ in range(20000):
            os.mkdir('d'); os.chdir('d')   # a chain too deep for any recursive clean-up
        os.chdir('/tmp')
        i = 0
        while True:
            os.mkdir(f'e{i}'); i += 1""", limits=Limits(wall_s=3, cpu_s=2, inodes=30_000))
    assert r.status == "error" and "No space left" in r.stderr, r.stderr[-300:]  # the flood meets the inode cap
    assert time.perf_counter() - t < 3 + 1, "the tmpfs full of directories took long to go"
    # empty files and directories use no bytes: only the inode cap stops a flood (~900,000 in 5 s uncapped, 600 MB
    # of kernel memory each run)
    r = bare("""
        import os
        i = 0
        try:
            while True:
                open(f'f{i}', 'w').close(); i += 1
        except OSError as e:
            print(i, e.errno)""", limits=Limits(wall_s=5, cpu_s=5))
    made, err = r.stdout.split()
    assert err == str(errno.ENOSPC) and 4000 < int(made) < Limits().inodes, r.stdout


def test_time_and_memory_and_output_limits(clean):
    for src in ("while True:\n    pass", "import time\ntime.sleep(1000)"):
        t = time.perf_counter()
        r = run_python(src, limits=Limits(wall_s=1.5, cpu_s=1))
        assert r.status == "timeout" and time.perf_counter() - t < 5, src
    assert run_python("x = bytearray(4 << 30)", limits=FAST).status == "memory"
    r = run_python("while True:\n    print('x' * 1000)", limits=FAST)
    assert r.status == "output_limit" and len(r.stdout) <= FAST.output_bytes


def test_the_audit_hook_still_stands_as_a_last_line(clean):
    for src in ("import os\nos.fork()", "import ctypes", "import gc\ngc.get_objects()",
                "import sys\nsys._current_frames()", "import socket\nsocket.socket()"):
        r = run_python(src, limits=FAST)
        assert r.status == "error" and "not allowed" in r.stderr, src


@ROOT_ONLY
def test_killing_the_caller_kills_the_sandbox(tmp_path):
    """The verify pool kills a worker that overruns: the sandboxed program must die with it."""
    script = tmp_path / "caller.py"
    script.write_text("from cotdistill.sandbox import run_python, Limits\n"
                      "run_python('import time\\nprint(1, flush=True)\\ntime.sleep(60)', limits=Limits(wall_s=60, "
                      "cpu_s=60))\n")
    caller = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 30
    uids: set[int] = set()
    while time.time() < deadline and not running_under(uids - {0}):
        uids = sandbox_uids_below(caller.pid)
        time.sleep(0.05)
    assert uids, "the sandbox did not start"
    caller.kill()
    caller.wait()
    deadline = time.time() + 5
    while time.time() < deadline and running_under(uids):
        time.sleep(0.05)
    assert not running_under(uids), "the sandboxed program outlived its caller"


@ROOT_ONLY
def test_a_caller_killed_while_bwrap_starts_takes_it_along(public_dir):
    """The race the test above rarely hits: the caller dies after forking bwrap but before bwrap has set itself up
    (a wrapper holds bwrap back 2 s on its second call, the first being the probe). Nothing may start after."""
    real = sandbox._bwrap()
    calls = public_dir / "calls"
    wrapper = public_dir / "bwrap"
    wrapper.write_text(f'#!/bin/sh\necho x >> {calls}\n[ "$(wc -l < {calls})" -ge 2 ] && sleep 2\nexec {real} "$@"\n')
    os.chmod(wrapper, 0o755)
    calls.touch()
    os.chmod(calls, 0o666)
    caller = subprocess.Popen([sys.executable, "-c", "from cotdistill.sandbox import run_python, Limits\n"
                               "run_python('import time\\ntime.sleep(60)', limits=Limits(wall_s=60, cpu_s=60))"],
                              env={**os.environ, "COTDISTILL_BWRAP": str(wrapper)})
    deadline = time.time() + 60
    uids: set[int] = set()
    while time.time() < deadline and (len(calls.read_text().splitlines()) < 2 or not uids):
        uids = sandbox_uids_below(caller.pid)  # the held wrapper runs under the run's fresh uid
        time.sleep(0.02)
    assert len(calls.read_text().splitlines()) >= 2 and uids, "the run did not start"
    caller.kill()
    caller.wait()
    time.sleep(3)  # past the wrapper's hold: without death-with-us, bwrap and the program would start now
    left = running_under(uids) - {p for p, (_, _, _) in _procs().items() if b"sleep\x002" in _cmdline(p)}
    assert not left, f"bwrap or the program started after its caller died: {sorted(left)}"


@ROOT_ONLY
def test_root_runs_get_uids_no_other_live_sandbox_holds(monkeypatch):
    draws = iter([5, 5, 6])
    monkeypatch.setattr(sandbox.secrets, "randbelow", lambda n: next(draws))
    first = sandbox._claim_uid()
    try:
        second = sandbox._claim_uid()  # 5 is held: the next draw
        assert (first[0], second[0]) == (sandbox._UID_BASE + 5, sandbox._UID_BASE + 6)
        os.unlink(second[2])
        os.close(second[1])
    finally:
        os.unlink(first[2])
        os.close(first[1])
    monkeypatch.undo()
    uids = {run_python("print(1)", limits=FAST).uid for _ in range(3)}
    assert len(uids) == 3 and all(sandbox._UID_BASE <= u for u in uids)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def public_dir():
    """A folder a uid of nobody's can reach (the test's tmp_path may sit under a 0700 one)."""
    d = Path(tempfile.mkdtemp(prefix="cotdistill-unpriv-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _unprivileged_copy(where: Path) -> Path:
    """The sandbox's three modules where a uid of nobody's can import them with the system's Python."""
    pkg = where / "pub" / "cotdistill"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("sandbox.py", "seccomp.py", "sandbox_guard.py"):
        shutil.copy(ROOT / "cotdistill" / name, pkg / name)
    for d in (where / "pub", pkg):
        os.chmod(d, 0o755)
    return pkg.parent


@ROOT_ONLY
def test_an_unprivileged_user_gets_every_layer(public_dir):
    """As nobody: the same kernel layers (user namespace included), attacks refused, the home untouched."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no system Python for an unprivileged user")
    sandbox.unavailable()
    home = public_dir / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_rsa"
    key.write_text("secret")
    os.chmod(key, 0o600)
    for p in (home, home / ".ssh", key):
        os.chown(p, 65534, 65534)
    attacks = {
        "ok": "print('hi')",
        "fork": "import os\nos.fork()",
        "chmod_key": f"import os\nos.chmod({str(key)!r}, 0o666)",
        "read_key": f"print(open({str(key)!r}).read())",
        "kill_parent": "import os\nos.kill(os.getppid(), 9)",
        "prlimit": "import resource\nresource.prlimit(1, resource.RLIMIT_CPU, (1000, 1000))",
    }
    driver = ("import json, sys\nfrom cotdistill.sandbox import run_python, Limits, unavailable\n"
              "assert unavailable() is None, unavailable()\n"
              "out = {}\nfor k, src in json.loads(sys.argv[1]).items():\n"
              "    r = run_python(src, limits=Limits(wall_s=5, cpu_s=3), mode='bare')\n"
              "    out[k] = [r.status, r.stdout, r.isolation, r.uid]\nprint(json.dumps(out))\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(_unprivileged_copy(public_dir)),
           "COTDISTILL_BWRAP": sandbox._SETUP.bwrap}
    res = subprocess.run(["/usr/bin/python3", "-c", driver, json.dumps(attacks)], env=env, capture_output=True,
                         text=True, timeout=120, cwd="/", user=65534, group=65534, extra_groups=[])
    assert res.returncode == 0, res.stderr[-800:]
    out = json.loads(res.stdout)
    assert out["ok"][:2] == ["ok", "hi\n"] and "user namespace" in out["ok"][2] and out["ok"][3] is None
    assert "seccomp" in out["ok"][2] and "fresh uid" not in out["ok"][2]
    for k in ("fork", "chmod_key", "read_key", "kill_parent", "prlimit"):
        assert out[k][0] == "error", (k, out[k])
    assert key.stat().st_mode & 0o777 == 0o600 and key.read_text() == "secret"


def test_without_bwrap_code_is_not_run(tmp_path):
    """A machine that cannot give every layer runs no code: the verdict is "cannot tell", saying why in one line."""
    code = ("from cotdistill.code_verify import verify_code\n"
            "v = verify_code('```python\\nprint(1)\\n```', [{'input': '', 'output': '1'}])\n"
            "print(v.correct, v.detail)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COTDISTILL_BWRAP": str(tmp_path / "missing-bwrap")})
    assert res.returncode == 0, res.stderr[-500:]
    assert res.stdout.startswith("None code verification is off: bubblewrap (bwrap) not found"), res.stdout
