# ntkhgm developer targets.  `make install` installs everything the tests need.
PYTHON ?= python

.PHONY: install test lint bench

install:
	$(PYTHON) -m pip install -e ".[test,plot,sklearn]"
	$(PYTHON) -m pip install --no-deps passagemath-singular

test:
	$(PYTHON) -m pytest -q

lint:
	ruff check ntkhgm tests benchmarks

bench:
	$(PYTHON) benchmarks/run.py
