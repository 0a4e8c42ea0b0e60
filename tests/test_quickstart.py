"""README's "your own data" quick start, run as written: its files are taken from the README (the blocks after
`<!-- quickstart:NAME -->`), its command run with only the student's steps cut; stdout is the JSON summary and the
outputs load with `datasets` as the README says."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def quickstart_blocks() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- quickstart:(\S+) -->\n```\w*\n(.*?)```", text, re.S)
    return dict(blocks)


def test_quickstart_blocks_are_there():
    assert set(quickstart_blocks()) == {"problems.jsonl", "heldout.jsonl", "my_run.yaml", "command"}


def test_readme_quickstart_runs_as_written(tmp_path):
    import datasets

    blocks = quickstart_blocks()
    for name in ("problems.jsonl", "heldout.jsonl", "my_run.yaml"):
        (tmp_path / name).write_text(blocks[name])
    (tmp_path / "data").symlink_to(ROOT / "data")  # the config names the shipped teacher, data/teacher
    cmd = shlex.split(blocks["command"].split("|")[0].split("#")[0])
    assert cmd[:3] == [".venv/bin/cotdistill", "run", "my_run.yaml"]
    p = subprocess.run([sys.executable, "-m", "cotdistill", *cmd[1:], "students.0.train.max_steps=5"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)  # `| jq` works: stdout is the summary alone
    assert set(summary["distillation"]["models"]) == {"teacher", "sft"}
    run = tmp_path / "runs" / "mine"
    kept = datasets.load_dataset(str(run / "filter"), split="train")
    assert "messages" in kept.column_names and len(kept) > 0
    assert len(datasets.load_dataset(str(run / "filter"), "verdicts", split="train")) == 24  # 3 problems x 8
    traces = datasets.load_dataset("json", data_files=str(run / "generate" / "traces.jsonl"), split="train")
    assert len(traces) == 24
    for f in ("students/sft/seed0/final/config.json", "eval/results.json", "report/report.md"):
        assert (run / f).exists(), f
