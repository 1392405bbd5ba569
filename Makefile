# Two commands a newcomer needs (see README):
#   make demo   train + evaluate on the built-in shapes data, write runs/demo/predictions.png
#   make test   unit tests, equivalence tests against torchvision, and every notebook (nbval)
# Both create .venv and install what they need on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
# Per-cell budget for notebooks; each notebook is also budgeted as a whole in tests/.
NB_CELL_TIMEOUT ?= 300

.PHONY: install test test-fast notebooks demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests $(if $(NOTEBOOKS),$(NOTEBOOKS) --nbval-lax --nbval-cell-timeout=$(NB_CELL_TIMEOUT))

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

notebooks: $(STAMP)
	$(PY) -m pytest $(NOTEBOOKS) --nbval-lax --nbval-cell-timeout=$(NB_CELL_TIMEOUT)

demo: $(STAMP)
	$(PY) -m mrcnn_teach demo --out runs/demo

bench: $(STAMP)
	$(PY) benchmarks/bench_vs_torchvision.py

clean:
	rm -rf $(VENV) .pytest_cache
