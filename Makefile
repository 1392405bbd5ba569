# Two commands a newcomer needs (see README):
#   make demo   train + evaluate on the built-in shapes data, write runs/demo/predictions.png
#   make test   unit tests, equivalence tests against torchvision, and every notebook (nbval)
# Both create .venv and install what they need on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Per-cell budget for notebooks under nbval (the cached model is trained before, by `make model`).
NB_CELL_TIMEOUT ?= 900
# The trained model the notebooks share (mrcnn_teach/pretrained.py) is cached inside the checkout,
# so a fresh clone starts from an empty cache and `make test` exercises the training path too.
export MRCNN_TEACH_CACHE ?= $(CURDIR)/.cache/models

.PHONY: install model test test-fast notebooks notebooks-run sync lab demo bench clean book book-test repo-url \
        classroom classroom-test

# constraints.txt pins this repository's exact torch/torchvision (pyproject.toml declares the range).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -qq -c constraints.txt -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import mrcnn_teach, nbval, jupytext"  # fail here, not later, if the install did not work
	touch $(STAMP)

install: $(STAMP)

# The notebooks' cached model (mrcnn_teach/pretrained.py), trained once here rather than inside the first
# notebook cell that asks for it, so its one-time training (minutes) is outside nbval's per-cell limit.
model: $(STAMP)
	$(PY) -m mrcnn_teach.pretrained

# TEST_JOBS pytest workers (pytest-xdist), a test file or notebook each at a time (--dist loadfile: a
# notebook's cells stay in order on one kernel), the CPU cores shared out among them as torch threads.
TEST_JOBS ?= 2
TEST_THREADS ?= $(shell n=$$(( $$(nproc) / $(TEST_JOBS) )); echo $$(( n > 0 ? n : 1 )))
test: $(STAMP) model
	OMP_NUM_THREADS=$(TEST_THREADS) MKL_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --timeout=$(NB_CELL_TIMEOUT) --durations=20 \
	  tests $(if $(NOTEBOOKS),$(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NB_CELL_TIMEOUT))

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

# Run the notebooks under nbval only.
notebooks: $(STAMP) model
	$(PY) -m pytest $(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NB_CELL_TIMEOUT)

# For authors: pair, execute in place (saved with outputs), pair again; prints each run time.
notebooks-run: $(STAMP) model
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

# The exercises as an nbgrader course (README, "For teachers"): classroom/, not versioned, one
# assignment per numbered notebook, generated from notebooks/ and notebooks/solutions/.
CLASSROOM_STAMP := $(VENV)/.classroom-stamp

$(CLASSROOM_STAMP): $(STAMP)
	$(PY) -m pip install -qq -c constraints.txt -e '.[dev,classroom]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import nbgrader"
	touch $(CLASSROOM_STAMP)

classroom: $(CLASSROOM_STAMP)
	$(PY) -m mrcnn_teach.classroom --out classroom

# nbgrader's flow on every notebook, and mrcnn_teach.grade against it (tests/test_classroom.py).
# nbgrader runs `alembic` from PATH, hence the venv's bin/ on it. CLASSROOM_JOBS notebooks at a time
# (pytest-xdist), the CPU cores shared out among them as torch threads; each worker prints its table of
# times into build/classroom-times/. The notebooks come heaviest first (tests/test_classroom.py) and a
# worker is handed one test at a time (--maxschedchunk 1), so no heavy notebook waits behind another.
CLASSROOM_JOBS ?= $(TEST_JOBS)
CLASSROOM_THREADS ?= $(shell n=$$(( $$(nproc) / $(CLASSROOM_JOBS) )); echo $$(( n > 0 ? n : 1 )))
classroom-test: $(CLASSROOM_STAMP)
	rm -rf build/classroom-times
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" MRCNN_TEACH_CLASSROOM_TEST=1 MRCNN_TEACH_CLASSROOM_TIMES=build/classroom-times \
	  OMP_NUM_THREADS=$(CLASSROOM_THREADS) MKL_NUM_THREADS=$(CLASSROOM_THREADS) \
	  $(PY) -m pytest tests/test_classroom.py -n $(CLASSROOM_JOBS) --dist load --maxschedchunk 1; status=$$?; \
	  cat build/classroom-times/*.txt 2>/dev/null; exit $$status

clean:
	rm -rf $(VENV) $(BOOK_VENV) build/book .pytest_cache

# The notebooks as a static web site from their saved outputs (nothing is executed), for reading
# offline or on GitHub Pages: build/book/_build/html/index.html. Its tools live in .venv-book/
# (book/requirements.txt; see there why not in .venv).
BOOK_VENV ?= .venv-book
BOOK_STAMP := $(BOOK_VENV)/.installed-stamp
CHROMIUM ?= /usr/bin/chromium

$(BOOK_STAMP): book/requirements.txt
	test -x $(BOOK_VENV)/bin/python || $(PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_VENV)/bin/python -m pip install -qq -r book/requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(BOOK_VENV)/bin/python -c "import jupyter_book, playwright"
	touch $(BOOK_STAMP)

book: $(BOOK_STAMP)
	$(BOOK_VENV)/bin/python book/build.py

# Every page of the built site in headless Chromium (Debian's, installed here when absent): no console
# error, every image and equation rendered, every internal link resolves, no request leaves 127.0.0.1.
book-test: book
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 || { echo "book-test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	CHROMIUM=$(CHROMIUM) $(BOOK_VENV)/bin/python book/browser_test.py

# After changing [project.urls] Repository in pyproject.toml (a fork): rewrite the notebooks' Colab
# cell and the README's Colab/Binder links (book/colab_cell.py).
repo-url: $(STAMP)
	$(PY) book/colab_cell.py
