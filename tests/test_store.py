"""Append-only JSONL: torn tails repaired or ignored, never parsed as data."""

import json

import pytest

from cotdistill.errors import CotdistillError
from cotdistill.store import AppendWriter, iter_jsonl, keep_only_keys, read_keys, repair_tail


def rec(pid, i, **kw):
    return json.dumps({"problem_id": pid, "sample_index": i, **kw})


def test_writer_appends_whole_lines_and_repairs_torn_tail(tmp_path):
    p = tmp_path / "t.jsonl"
    with AppendWriter(p) as w:
        w.add(rec("a", 0))
        w.add(rec("a", 1))
    with open(p, "ab") as f:
        f.write(b'{"problem_id": "a", "sample_in')  # a write cut by SIGKILL
    assert [o["sample_index"] for _, o in iter_jsonl(p)] == [0, 1]
    assert read_keys(p) == {"a#0", "a#1"}
    with AppendWriter(p) as w:  # opening for append drops the torn bytes first
        w.add(rec("a", 2))
    lines = p.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)


def test_repair_tail_cases(tmp_path):
    p = tmp_path / "t.jsonl"
    assert repair_tail(p) == 0  # missing file
    p.write_bytes(b"")
    assert repair_tail(p) == 0
    p.write_bytes(b'{"x"')  # only a torn line
    assert repair_tail(p) == 4 and p.read_bytes() == b""
    p.write_bytes(b'{"a":1}\n{"b"')
    assert repair_tail(p) == 4 and p.read_bytes() == b'{"a":1}\n'
    assert repair_tail(p) == 0


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(rec("a", 0) + "\nnot json\n" + rec("a", 1) + "\n")
    with pytest.raises(CotdistillError, match=r"t\.jsonl: line 2: not valid JSON"):
        list(iter_jsonl(p))


def test_keep_only_keys_drops_orphans_and_duplicates(tmp_path):
    p = tmp_path / "lp.jsonl"
    p.write_text("\n".join([rec("a", 0), rec("a", 1), rec("a", 0), rec("b", 0)]) + "\n")
    assert keep_only_keys(p, {"a#0", "b#0"}) == 2
    assert [(o["problem_id"], o["sample_index"]) for _, o in iter_jsonl(p)] == [("a", 0), ("b", 0)]
    assert keep_only_keys(p, {"a#0", "b#0"}) == 0


def test_read_keys_rejects_foreign_file(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"foo": 1}\n')
    with pytest.raises(CotdistillError, match="lacks 'problem_id'"):
        read_keys(p)


def test_a_second_writer_is_refused(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "shard.jsonl"
    with AppendWriter(p) as w:
        w.add('{"a": 1}')
        code = ("import sys; from pathlib import Path; from cotdistill.store import AppendWriter\n"
                "try:\n    AppendWriter(Path(sys.argv[1]))\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True)
        assert r.returncode == 3 and "another process is writing this file" in r.stdout
    with AppendWriter(p) as w:  # released on close
        w.add('{"a": 2}')
    assert [o["a"] for _, o in iter_jsonl(p)] == [1, 2]


def test_a_failed_write_is_rolled_back_not_repeated(tmp_path, monkeypatch):
    import os

    import pytest

    p = tmp_path / "t.jsonl"
    w = AppendWriter(p)
    w.add('{"k": 1}')
    w.flush()
    real = os.write
    calls = []

    def disk_full(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real(fd, bytes(data[:5]))  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    w.add('{"k": 2}')
    with pytest.raises(OSError):
        w.flush()
    monkeypatch.setattr(os, "write", real)
    w.close()  # nothing left to write: the failed lines are not written again
    assert p.read_text() == '{"k": 1}\n'


def test_output_dir_checked_before_any_work(tmp_path, monkeypatch):
    """A file where the folder should be or above it, a folder this process cannot write, a nearly full disk: one
    line each naming the path; a missing folder under a writable one is fine (it is created later)."""
    import os
    import shutil
    from collections import namedtuple

    from cotdistill.store import check_output_dir

    check_output_dir(tmp_path / "new" / "deeper")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CotdistillError, match=r"output_dir: '.*f' is a file; give a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(CotdistillError, match=r"'.*f/out' cannot be created: '.*f' is a file"):
        check_output_dir(tmp_path / "f" / "out")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a read-only mount answers, for root too
    with pytest.raises(CotdistillError, match=r"'.*' is not writable \(read-only folder or file system\)"):
        check_output_dir(tmp_path / "new", "train.output_dir")
    monkeypatch.undo()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - (50 << 20), 50 << 20))
    with pytest.raises(CotdistillError, match=r"only 50 MiB free on its disk"):
        check_output_dir(tmp_path / "new")
