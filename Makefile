# Two commands a newcomer needs (see README):
#   make demo   train + evaluate on the built-in shapes data, write runs/demo/predictions.png
#   make test   unit tests, equivalence tests against torchvision, and every notebook (nbval)
# Both create .venv and install what they need on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Per-cell budget for notebooks under nbval (the model cache's one-time training runs in a cell).
NB_CELL_TIMEOUT ?= 900
# The trained model the notebooks share (mrcnn_teach/pretrained.py) is cached inside the checkout,
# so a fresh clone starts from an empty cache and `make test` exercises the training path too.
export MRCNN_TEACH_CACHE ?= $(CURDIR)/.cache/models

.PHONY: install test test-fast notebooks notebooks-run sync lab demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -qq -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import mrcnn_teach, nbval, jupytext"  # fail here, not later, if the install did not work
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests $(if $(NOTEBOOKS),$(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NB_CELL_TIMEOUT))

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

# Run the notebooks under nbval only.
notebooks: $(STAMP)
	$(PY) -m pytest $(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NB_CELL_TIMEOUT)

# For authors: pair, execute in place (saved with outputs), pair again; prints each run time.
notebooks-run: $(STAMP)
	$(VENV)/bin/jupytext --sync $(NOTEBOOKS)
	$(PY) -m mrcnn_teach.notebook $(NOTEBOOKS)
	$(VENV)/bin/jupytext --sync $(NOTEBOOKS)

# Bring each notebook and its py:percent twin level (the newer one wins).
sync: $(STAMP)
	$(VENV)/bin/jupytext --sync $(NOTEBOOKS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

demo: $(STAMP)
	$(PY) -m mrcnn_teach demo --out runs/demo

bench: $(STAMP)
	$(PY) benchmarks/bench_vs_torchvision.py

clean:
	rm -rf $(VENV) .pytest_cache
