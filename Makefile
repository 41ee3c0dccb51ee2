# repvit-mm: the two commands a new user needs.
#   make demo       - set up (.venv; docs/install.md) and run the demo on the embedded Shapes data
#   make test       - set up and run the whole test suite (what CI runs, after `make lint`)
# and for developers:
#   make test-fast  - the suite without the tests marked slow (end-to-end tool runs)
#   make test-demo  - the full demo against its targets (about 9 minutes on 2 cores)
#   make lint       - ruff's checks and format check (configured in pyproject.toml)
#   make format     - apply ruff's fixes and formatting
PYTHON := .venv/bin/python
DEMO_DIR ?= work_dirs/demo
LINTED := repvit_mm tools tests
# one pytest-xdist worker per core; a test module with expensive shared fixtures marks itself xdist_group
PARALLEL := -n auto --dist loadgroup

.PHONY: install demo test test-fast test-demo lint format clean

install:
	bash tools/install.sh

demo: install
	$(PYTHON) tools/run_demo.py --out $(DEMO_DIR)

test: install
	$(PYTHON) -m pytest tests $(PARALLEL) -m "not full_demo"

test-fast: install
	$(PYTHON) -m pytest tests $(PARALLEL) -m "not slow and not full_demo"

test-demo: install
	$(PYTHON) -m pytest tests -m full_demo

lint: install
	$(PYTHON) -m ruff check $(LINTED)
	$(PYTHON) -m ruff format --check $(LINTED)

format: install
	$(PYTHON) -m ruff check --fix $(LINTED)
	$(PYTHON) -m ruff format $(LINTED)

clean:
	rm -rf work_dirs .pytest_cache
