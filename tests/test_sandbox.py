"""The code sandbox against programs that try to get out: each attack is tried for real, and the test checks the
attack's effect did not happen (no file, no connection, no signal, no process left), not only the exit status."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cotdistill.sandbox import Limits, run_python

FAST = Limits(wall_s=3, cpu_s=2, memory_mb=256, output_bytes=64 << 10)


def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("cotdistill-sandbox-*")}


def processes_of(uid: int | None) -> list[int]:
    if uid is None:
        return []
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and d.stat().st_uid == uid:
                out.append(int(d.name))
        except FileNotFoundError:
            pass
    return out


@pytest.fixture
def clean():
    before = leftovers()
    yield
    assert leftovers() <= before, "a sandbox directory was left behind"


def test_a_plain_program_runs(clean):
    r = run_python("import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3\n", FAST)
    assert (r.status, r.stdout) == ("ok", "6\n")


def test_fork_bomb_is_stopped(clean):
    r = run_python("import os\nwhile True:\n    os.fork()", limits=FAST)
    assert r.status == "error" and "not allowed" in r.stderr
    time.sleep(0.2)
    assert processes_of(r.uid) == []


def test_fork_through_subprocess_and_multiprocessing_is_stopped(clean):
    for src in ("import subprocess\nsubprocess.run(['sleep', '100'])",
                "import multiprocessing as m\nm.Process(target=print).start()",
                "import os\nos.system('sleep 100 &')", "import pty\npty.fork()"):
        r = run_python(src, limits=FAST)
        assert r.status == "error", src
        assert processes_of(r.uid) == []


def test_infinite_output_is_capped(clean):
    r = run_python("while True:\n    print('x' * 1000)", limits=FAST)
    assert r.status == "output_limit" and len(r.stdout) <= FAST.output_bytes


def test_infinite_loop_and_sleep_time_out_and_leave_nothing(clean):
    for src in ("while True:\n    pass", "import time\ntime.sleep(1000)"):
        t = time.perf_counter()
        r = run_python(src, limits=Limits(wall_s=1.5, cpu_s=1))
        assert r.status == "timeout" and time.perf_counter() - t < 5, src
        assert processes_of(r.uid) == []


def test_memory_bomb_is_stopped(clean):
    r = run_python("x = bytearray(4 << 30)", limits=FAST)
    assert r.status == "memory"


def test_files_outside_the_sandbox_are_not_written(clean, tmp_path):
    targets = [Path(tempfile.gettempdir()) / f"cotdistill-pwned-{os.getpid()}", tmp_path / "pwned",
               Path(__file__).resolve().parent / f"pwned-{os.getpid()}", Path.home() / f"pwned-{os.getpid()}"]
    for target in targets:
        for src in (f"open({str(target)!r}, 'w').write('x')",
                    f"import os\nfd = os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'x')",
                    f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
                    f"import os\nos.symlink('/etc/passwd', {str(target)!r})",
                    f"import shutil\nshutil.copy('main.py', {str(target)!r})"):
            r = run_python(src, limits=FAST)
            assert r.status == "error", src
            assert not target.exists() and not target.is_symlink(), src
    inside = run_python("open('out.txt', 'w').write('ok')\nprint(open('out.txt').read())", limits=FAST)
    assert (inside.status, inside.stdout) == ("ok", "ok\n")  # its own directory is writable


def test_network_is_unreachable(clean):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        for src in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).send(b'hi')",
                    "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)",
                    "import socket\nsocket.getaddrinfo('example.com', 80)"):
            r = run_python(src, limits=FAST)
            assert r.status == "error", src
        with pytest.raises(socket.timeout):
            server.accept()  # nothing connected
    finally:
        server.close()


def test_other_processes_cannot_be_signalled(clean):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for src in (f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)",
                    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
                    f"import os, signal\nos.killpg({victim.pid}, signal.SIGKILL)"):
            r = run_python(src, limits=FAST)
            assert r.status == "error", src
        assert victim.poll() is None  # still alive
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()


def test_ctypes_cannot_reach_around_the_hook(clean):
    r = run_python("import ctypes\nctypes.CDLL(None).fork()", limits=FAST)
    assert r.status == "error" and "not allowed" in r.stderr


def test_isolation_layers_are_reported():
    r = run_python("print(1)", limits=FAST)
    if os.geteuid() == 0:  # as root the fresh uid and the network namespace are expected on Linux
        assert "separate uid" in r.isolation and r.uid is not None
    assert set(r.isolation) <= {"network namespace", "separate uid"}
