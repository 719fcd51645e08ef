# attnkit: `make demo` sets everything up and runs the main job; `make test` sets everything up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

demo: $(STAMP)
	$(BIN)/attnkit demo

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/attnkit bench all --json bench.json

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependencies change; the tested versions are pinned in constraints.txt.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,tensorboard]"
	touch $@

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
