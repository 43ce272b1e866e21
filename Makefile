# Set-up and the main jobs on a fresh machine with nothing but Python 3.
#   make demo    the main job (see README)
#   make test    the test suite (Triton kernels run in the Triton interpreter on CPU)
#   make bench   the benchmark suites (benchmarks/)
# TORCH_SPEC picks PyTorch, e.g. TORCH_SPEC="torch==2.11.0 --index-url <your CUDA wheel index>".
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
# What to install is listed once, in pyproject.toml: the build requirements, the dependencies
# and the "dev" extra, read here without torch (installed first, alone).
PYPROJECT_REQS = $(PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
                 r = p['build-system']['requires'] + p['project']['dependencies'] + \
                 p['project']['optional-dependencies']['dev']; \
                 print(' '.join(x for x in r if not x.startswith('torch')))"

.PHONY: install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and alone, so that no later step lets pip resolve a different torch.
$(VENV)/.deps: $(PY) pyproject.toml
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q $$($(PYPROJECT_REQS))
	$(PY) -m pip install -q triton || echo "triton could not be installed: fused kernels disabled"
	# int8 CPU inference (optimize(dtype="int8")); no deps: it must not pull another torch
	$(PY) -m pip install -q --no-deps torchao==0.18.0 || echo "torchao could not be installed: int8 disabled"
	touch $@

$(VENV)/.hrfast: $(VENV)/.deps setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.hrfast

demo: install
	$(PY) -m hrfast demo

test: install
	$(PY) -m ruff check .
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests

bench: install
	$(PY) -m pytest -q benchmarks --benchmark-columns=median,ops --benchmark-sort=name

clean:
	rm -rf $(VENV) build *.egg-info hrfast/_C*.so outputs
