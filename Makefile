# repvit-mm: the two commands a new user needs.
#   make demo   - set up (.venv, mmcv compiled once and cached) and run the demo on the embedded Shapes data
#   make test   - set up and run the test suite
PYTHON := .venv/bin/python
DEMO_DIR ?= work_dirs/demo

.PHONY: install demo test clean

install:
	bash tools/install.sh

demo: install
	$(PYTHON) tools/run_demo.py --out $(DEMO_DIR)

test: install
	$(PYTHON) -m pytest tests

clean:
	rm -rf work_dirs .pytest_cache
