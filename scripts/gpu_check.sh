#!/usr/bin/env bash
# The prepared GPU check (issue: GPUs, bf16, real vocabularies): run it on a lent GPU machine from the repository
# root. Needs torch + transformers only (no vLLM/TRL/network); fits in 10 minutes on one H200-class GPU.
#   bash scripts/gpu_check.sh            # prints the figures; writes $OUT/gpu_check.json when OUT is set
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
timeout 540 python scripts/gpu_check.py --device cuda ${OUT:+--out "$OUT/gpu_check.json"}
