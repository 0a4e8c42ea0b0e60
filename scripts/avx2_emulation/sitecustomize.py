"""Loaded at interpreter start by every Python process that ``scripts/emulate_avx2.sh`` starts (its directory is on
PYTHONPATH, which subprocesses, pytest-xdist workers and vLLM engines inherit). Together with the script's oneDNN /
MKL / ATen caps it makes this process take the paths an AVX2-only CPU takes:

- ``torch.cpu``'s AMX / AVX-512 / AVX512-BF16 / AMX-FP16 probes answer no: vLLM asks them before choosing its linear
  path and its attention ISA, and loads its AVX2 kernel build (``vllm/_C_AVX2``: attention, norms, activations);
- ``cotdistill.env._cpuinfo`` reports the CPU without its AVX-512 and AMX flags, and its model name says it is held
  to AVX2, so ``engine_dtype('auto')`` starts float32 engines and every ``machine`` record states the emulation.

Not emulated: clocks, caches and memory bandwidth stay this machine's. Times measured so are a lower bound for a real
AVX2 machine. (Until the eleventh session, 2026-12-04, vLLM's kernels kept their AVX-512 build; for the embedded
2M-parameter teacher the AVX2 build decoded as fast: bf16 3,102 tok/s, fp32 8,097, bench_cpu_dtype at 200 problems.)
Being first on PYTHONPATH, it shadows any other ``sitecustomize`` (Debian's, a venv's) for that command.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_DROPPED = ("avx512", "amx")
_NOTE = " [held to AVX2 by scripts/emulate_avx2.sh]"


def _patch_torch_cpu(mod) -> None:
    for probe in ("_is_amx_tile_supported", "_is_avx512_supported", "_is_avx512_bf16_supported",
                  "_is_amx_fp16_supported"):
        if hasattr(mod, probe):
            setattr(mod, probe, lambda: False)


def _patch_cotdistill_env(mod) -> None:
    real = mod._cpuinfo

    def held_to_avx2() -> dict:
        info = dict(real())
        flags = [f for f in info.get("flags", "").split() if not f.startswith(_DROPPED)]
        info["flags"] = " ".join(flags)
        info["model name"] = info.get("model name", "") + _NOTE
        return info

    mod._cpuinfo = held_to_avx2


_HOOKS = {"torch.cpu": _patch_torch_cpu, "cotdistill.env": _patch_cotdistill_env}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a patch right after one of the _HOOKS modules has executed, before anyone else sees it."""

    def find_spec(self, name, path=None, target=None):
        if name not in _HOOKS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, patch = spec.loader, _HOOKS[name]

        class _Patched(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                patch(module)

        spec.loader = _Patched()
        return spec


sys.meta_path.insert(0, _AfterImport())
