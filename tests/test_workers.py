"""`make test` runs two pytest-xdist workers: each must hold cores of its own and no more threads than those
cores (two unpinned torch/vLLM thread pools on 2 cores spin on each other, ENVIRONMENT.md), and a temporary
directory of its own, inherited by the subprocesses its tests start."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
pytestmark = pytest.mark.skipif(WORKERS < 2 or not hasattr(os, "sched_getaffinity"),
                                reason="only under pytest -n 2 or more (make test)")


def test_a_worker_is_pinned_with_as_many_threads_as_cores_and_its_subprocesses_too():
    import torch

    mine = os.sched_getaffinity(0)
    assert len(mine) == max(1, os.cpu_count() // WORKERS) and torch.get_num_threads() == len(mine)
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert tempfile.gettempdir().endswith(f"-{worker}")
    code = ("import json, os, tempfile, torch; print(json.dumps([sorted(os.sched_getaffinity(0)), "
            "torch.get_num_threads(), tempfile.gettempdir()]))")
    child = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child == [sorted(mine), len(mine), tempfile.gettempdir()]
