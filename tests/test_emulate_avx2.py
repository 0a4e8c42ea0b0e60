"""scripts/emulate_avx2.sh: a command run through it takes the AVX2-only CPU's paths in every Python process it
starts (the caps, torch's probes, cotdistill's flags), and its records say so."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts/emulate_avx2.sh"

PROBE = r"""
import json, os, subprocess, sys
import torch
from cotdistill.env import cpu_has_fast_bf16, engine_dtype, machine
child = subprocess.run([sys.executable, "-c", "from cotdistill.env import engine_dtype; print(engine_dtype('auto'))"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"amx_probe": torch.cpu._is_amx_tile_supported(), "bf16_probe": torch.cpu._is_avx512_bf16_supported(),
                  "avx512_probe": torch.cpu._is_avx512_supported(),
                  "capability": torch.backends.cpu.get_cpu_capability(), "fast_bf16": cpu_has_fast_bf16(),
                  "auto": engine_dtype("auto"), "child_auto": child, "machine": machine(),
                  "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA")}))
"""


def _probe(prefix: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items()  # as if run plainly, also when the suite runs under the emulation
           if k not in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")}
    env["PYTHONPATH"] = os.pathsep.join(x for x in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if x and "avx2_emulation" not in x)
    p = subprocess.run([*prefix, sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_command_under_the_emulation_sees_an_avx2_only_cpu():
    held = _probe(["bash", str(SCRIPT)])
    assert held["amx_probe"] is False and held["bf16_probe"] is False and held["fast_bf16"] is False
    assert held["avx512_probe"] is False
    assert held["capability"] in ("AVX2", "DEFAULT") and held["onednn"] == "AVX2"
    m = held["machine"]
    assert not (m["avx512"] or m["avx512_bf16"] or m["amx"]) and "held to AVX2" in m["cpu"]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert held["auto"] == held["child_auto"] == ("float32" if x86 else "auto")  # subprocesses inherit it


def test_without_the_emulation_nothing_changes():
    plain = _probe([])
    assert "held to AVX2" not in plain["machine"]["cpu"] and plain["onednn"] is None
    assert plain["fast_bf16"] == (plain["machine"]["amx"] or plain["machine"]["avx512_bf16"])


def test_no_command_is_a_usage_error():
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 2 and "usage: bash scripts/emulate_avx2.sh COMMAND" in p.stderr


KERNELS = r"""
from vllm.platforms import current_platform
current_platform.import_kernels()
print([line.split("/")[-1] for line in open("/proc/self/maps").read().splitlines()
       if "/vllm/_C" in line and line.endswith(".so")][:1])
"""


def test_vllm_loads_its_avx2_kernel_build_under_the_emulation():
    """vLLM picks its compiled kernels (attention, norms, activations) by torch's AVX-512 probe: _C_AVX2 here."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not os.path.exists("/proc/self/maps"):
        pytest.skip("vLLM has AVX2 / AVX-512 kernel builds on x86 Linux only")
    p = subprocess.run(["bash", str(SCRIPT), sys.executable, "-c", KERNELS], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "['_C_AVX2.abi3.so']"
