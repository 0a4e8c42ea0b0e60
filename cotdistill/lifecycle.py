"""A stopped command leaves no process behind. Installed by the CLI, not on import:

- SIGTERM / SIGHUP (a scheduler's stop, SLURM/Kubernetes, a user's ``kill``) become ``SystemExit``, so every
  ``finally`` runs: teachers close their vLLM engines and servers we started are stopped, as on Ctrl-C. By
  default SIGTERM ends Python at once, and vLLM's ``EngineCore``/``Worker`` processes kept running as orphans
  at full CPU (on a GPU, holding its memory).
- At exit, any descendant process still alive (an engine whose shutdown failed) gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import time


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below ``pid`` (default: this one), from /proc (Linux); [] where /proc is absent."""
    pid = pid or os.getpid()
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for d in entries:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def reap_children(grace_s: float = 5.0) -> list[int]:
    """SIGTERM every descendant still alive, SIGKILL those left after ``grace_s``; returns the pids signalled."""
    pids = descendants()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        pids_left = [p for p in pids if _alive(p)]
        if not pids_left:
            break
        pids = pids_left
    return pids


def _stop(signum, frame):
    print(f"cotdistill: stopping on {signal.Signals(signum).name}; closing engines", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


_installed = False


def install() -> None:
    """For the CLI process: stop signals unwind through ``finally``; leftovers are reaped at exit."""
    global _installed
    import threading

    if _installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    atexit.register(reap_children)
    _installed = True
