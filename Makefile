# Two commands from a fresh clone:
#   make demo   a virtual environment with the runtime dependencies only (no torch), then the sample dehazed
#   make test   adds the test and training extras (torch pinned) and runs the test suite
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
SAMPLE := samples/halong_bay.jpg
RESULT := out/halong_bay_dehazed.jpg

.PHONY: demo test clean

demo: $(VENV)/.installed-runtime
	$(VENV)/bin/tiledehaze process $(SAMPLE) -o $(RESULT) --overwrite
	@echo "dehazed $(SAMPLE) -> $(RESULT)"

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-runtime: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q "$(TORCH)" -e ".[test,train]"
	touch $@ $(VENV)/.installed-runtime

clean:
	rm -rf $(VENV) out
