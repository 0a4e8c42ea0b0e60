# Environment and entry points. `make test` builds .venv from nothing and runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test test-fast bench-generate clean-venv

$(BIN)/.installed: pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV) cpu
	touch $@

venv: $(BIN)/.installed

# fast tests first, then the slow (server / subprocess) ones
test: venv
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

bench-generate: venv
	$(BIN)/python scripts/bench_generate.py

clean-venv:
	rm -rf $(VENV)
