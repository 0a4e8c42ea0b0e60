# Environment and entry points. `make test` builds .venv from nothing and runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test test-fast bench-generate bench-verify bench-train clean-venv

$(BIN)/.installed: pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV) cpu
	touch $@

venv: $(BIN)/.installed

# the main job on the embedded default: a locally built tiny teacher generates traces offline
demo: venv
	$(BIN)/python -m cotdistill.tiny runs/tiny-teacher
	$(BIN)/cotdistill generate data/configs/generate_demo.yaml
	$(BIN)/cotdistill filter data/configs/filter_demo.yaml
	$(BIN)/cotdistill report runs/demo

# fast tests first, then the slow (server / subprocess) ones
test: venv
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

bench-generate: venv
	$(BIN)/python scripts/bench_generate.py

bench-verify: venv
	$(BIN)/python scripts/bench_verify.py

bench-train: venv
	$(BIN)/python scripts/bench_train.py

clean-venv:
	rm -rf $(VENV)
