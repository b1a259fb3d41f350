# ntkhgm developer targets.  `make install` installs everything the tests need.
PYTHON ?= python
# benchmark and example outputs go here (git-ignored)
OUT ?= out

.PHONY: install test test-fast lint wheel wheel-test bench bench-quick rho-systems

install:
	$(PYTHON) -m pip install -e ".[test,plot,sklearn]"
	$(PYTHON) -m pip install --no-deps passagemath-singular

# the whole suite (Singular tests included; Risa/Asir tests skip when it is absent), one
# worker per core (pytest-xdist, idle workers take queued tests): ~3 minutes on 2 cores
test:
	$(PYTHON) -m pytest -q -n auto --dist worksteal

# without the computer-algebra and slow tests (a minute or two)
test-fast:
	$(PYTHON) -m pytest -q -n auto --dist worksteal -m "not cas and not slow"

lint:
	ruff check ntkhgm tests benchmarks

# the catalog's (√a, √b, ρ) systems (package data), derived from the shipped Pfaffians;
# rerun after regenerating a Pfaffian (a test fails while they disagree)
rho-systems:
	$(PYTHON) -m ntkhgm.numeric.rho_files

# the wheel, into dist/
wheel:
	$(PYTHON) -m pip wheel --no-deps -w dist .

# build the wheel, install it in a fresh venv, run the README's main job outside the checkout
wheel-test:
	PYTHON=$(PYTHON) .ci/wheel-test

# benchmarks: every result into $(OUT)/bench (JSON, CSV, PNG)
bench:
	mkdir -p $(OUT)/bench
	$(PYTHON) benchmarks/run.py --out $(OUT)/bench/ntk_depth3.json
	$(PYTHON) -m ntkhgm bench paper -o $(OUT)/bench
	$(PYTHON) -m ntkhgm bench accuracy --activation resin -o $(OUT)/bench
	$(PYTHON) -m ntkhgm bench accuracy --activation relu -o $(OUT)/bench

# the same at CI size (about a minute)
bench-quick:
	mkdir -p $(OUT)/bench-quick
	$(PYTHON) benchmarks/run.py --sizes 100 --out $(OUT)/bench-quick/ntk_depth3.json
	$(PYTHON) -m ntkhgm bench paper --quick -o $(OUT)/bench-quick
	$(PYTHON) -m ntkhgm bench accuracy --quick --activation resin -o $(OUT)/bench-quick
