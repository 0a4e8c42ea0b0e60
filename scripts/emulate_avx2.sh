#!/usr/bin/env bash
# Run a command as an AVX2-only CPU (the AMD EPYC machines of our kind) would run it, on a machine with AVX-512/AMX:
#   bash scripts/emulate_avx2.sh make test
#   bash scripts/emulate_avx2.sh .venv/bin/cotdistill run data/configs/run_demo.yaml
# oneDNN, MKL and ATen are capped at AVX2, and every Python process the command starts loads
# scripts/avx2_emulation/sitecustomize.py (torch's AMX / AVX512-BF16 probes answer no; cotdistill sees no AVX-512 or
# AMX flags, so `dtype: auto` engines start in float32 and every `machine` record says "held to AVX2").
# vLLM loads its AVX2 kernel build (torch's AVX-512 probe answers no too). Not emulated: clocks, caches and memory;
# a real AVX2 machine takes longer (README, "CPU kinds").
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: bash scripts/emulate_avx2.sh COMMAND [ARGS...]" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
export PYTHONPATH="$here/avx2_emulation${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
