"""Append-only JSONL files keyed by (problem id, sample index), safe against SIGKILL.

Writes go through ``os.write`` on an ``O_APPEND`` descriptor, one buffer of whole lines at a time,
so a killed process can leave at most one torn line, at the end of the file. ``open_append``
truncates that torn tail before appending again; readers skip it. Page-cache writes survive the
death of the process, so no fsync is needed for SIGKILL safety (only for power loss).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from cotdistill.errors import CotdistillError

MIN_FREE_BYTES = 200 << 20  # below this a stage's outputs (traces, checkpoints) would not fit


def check_output_dir(path: str | os.PathLike, field: str = "output_dir") -> None:
    """Before any work: ``path`` can be (or already is) a folder this process writes into, on a disk with room.
    One line naming it otherwise (a file there or above it, a read-only folder or file system, a full disk)."""
    p = Path(path).expanduser()
    try:
        _check_output_dir(p, path, field)
    except OSError as e:  # a parent that cannot be searched, an unreadable mount, ...
        raise CotdistillError(f"{field}: '{path}': {e.strerror or e}; give a folder you can write to") from None


def _check_output_dir(p: Path, path, field: str) -> None:
    import shutil

    if p.exists() and not p.is_dir():
        raise CotdistillError(f"{field}: '{path}' is a file; give a folder (it is created when missing)")
    nearest = p
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise CotdistillError(f"{field}: '{path}' cannot be created: '{nearest}' is a file; give another folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise CotdistillError(f"{field}: '{nearest}' is not writable (read-only folder or file system); give a "
                              f"folder you can write to")
    free = shutil.disk_usage(nearest).free
    if free < MIN_FREE_BYTES:
        raise CotdistillError(f"{field}: '{path}': only {free >> 20} MiB free on its disk; free some space or give "
                              f"a folder on another disk")


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (temp file + rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # an unencodable string, a full disk, Ctrl-C: no temp file left behind
        tmp.unlink(missing_ok=True)
        raise


def save_dataset_atomic(ds, path: Path, **kwargs) -> None:
    """``ds.save_to_disk`` into a fresh folder, then swapped in for ``path``: datasets rewrites a folder's Arrow files
    in place (same inodes), which would change the data under a reader that has them memory-mapped or hard-linked
    (a trainer's copy); swapped, an old file lives on under its readers until they close it."""
    import shutil

    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.{os.getpid()}.new"), path.with_name(f".{path.name}.{os.getpid()}.old")
    try:
        ds.save_to_disk(str(tmp), **kwargs)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def repair_tail(path: Path) -> int:
    """Drop an unterminated last line (a torn write). Returns the number of bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        # scan backwards for the last newline
        pos, chunk = size, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            if pos == size and buf.endswith(b"\n"):
                return 0
            nl = buf.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                f.truncate(keep)
                return size - keep
            pos = start
        f.truncate(0)
        return size


def iter_jsonl(path: str | os.PathLike, skip_torn_tail: bool = True) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object), reading one line at a time (memory does not grow with the file).
    A torn last line (no newline at the end of the file) is skipped; any other bad line is an error."""
    p = Path(path)
    with open(p, "rb") as f:
        for i, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n") and skip_torn_tail:  # only the last line can lack its newline
                return
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise CotdistillError(f"{p}: line {i}: not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(obj, dict):
                raise CotdistillError(f"{p}: line {i}: expected a JSON object, got {type(obj).__name__}")
            yield i, obj


def read_records(path: str | os.PathLike, cls, what: str) -> list:
    """Every line of a JSONL file validated as the pydantic model ``cls``; the first bad line is a
    one-line error naming the file, line and field."""
    from pydantic import ValidationError

    out = []
    for lineno, obj in iter_jsonl(path):
        try:
            out.append(cls.model_validate(obj))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise CotdistillError(f"{path}: line {lineno}: field '{field}': {err['msg']}; "
                                  f"not a {what} record of this version") from None
    return out


def read_keys(path: Path, key_fields: tuple[str, str] = ("problem_id", "sample_index")) -> set[str]:
    keys: set[str] = set()
    if not path.exists():
        return keys
    a, b = key_fields
    for lineno, obj in iter_jsonl(path):
        if a not in obj or b not in obj:
            raise CotdistillError(f"{path}: line {lineno}: record lacks '{a}'/'{b}'; not a trace file of ours")
        keys.add(f"{obj[a]}#{obj[b]}")
    return keys


def keep_only_keys(path: Path, keep: set[str]) -> int:
    """Atomically rewrite ``path`` keeping records whose key is in ``keep`` (first copy only).

    Used on resume to drop logprob side records whose trace never got written. Returns the
    number of records removed."""
    if not path.exists():
        return 0
    out, seen, removed = [], set(), 0
    for _, obj in iter_jsonl(path):
        k = f"{obj['problem_id']}#{obj['sample_index']}"
        if k in keep and k not in seen:
            seen.add(k)
            out.append(json.dumps(obj, ensure_ascii=False))
        else:
            removed += 1
    if removed:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(line + "\n" for line in out))
        os.replace(tmp, path)
    return removed


class AppendWriter:
    """Buffered appender of JSON lines; each flush is a single write of whole lines. The file is
    locked against a second writer (another process on the same shard would interleave records),
    and a failed write (disk full) is rolled back to the last whole flush, never written twice."""

    def __init__(self, path: Path):
        import fcntl

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = -1
            raise CotdistillError(f"{path}: another process is writing this file; two writers of one output would "
                                  f"mix their records: wait for it to finish, or give this run another output_dir "
                                  f"or shard") from None
        repair_tail(path)
        self._buf: list[str] = []

    def add(self, line: str) -> None:
        self._buf.append(line)

    def __len__(self) -> int:
        return len(self._buf)

    def flush(self) -> None:
        if not self._buf:
            return
        data = "".join(s + "\n" for s in self._buf).encode("utf-8")
        start = os.fstat(self._fd).st_size
        self._buf.clear()  # whatever happens below, these lines are not written a second time
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            os.truncate(self.path, start)  # no partial line; the lost records are generated again on resume
            raise

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)  # closing releases the lock
                self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
