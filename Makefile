# Set-up and the main jobs on a fresh machine with Python 3.10 or newer and a C++ compiler with OpenMP.
#   make demo    the main job (see README)
#   make test    lint, then the test suite (Triton kernels run in the Triton interpreter on CPU)
#   make lint    ruff (pyflakes, pycodestyle, import order; pyproject.toml [tool.ruff])
#   make bench   the benchmark suites (benchmarks/)
# TORCH_SPEC picks PyTorch, e.g. TORCH_SPEC="torch==2.11.0 --index-url <your CUDA wheel index>".
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
# pytest-xdist workers for `make test`: one per core, at most 4 (the suite's largest file takes
# about a sixth of its time, so more workers would wait on it; each takes its share of threads).
TEST_WORKERS ?= $(shell n=$$(nproc 2> /dev/null || getconf _NPROCESSORS_ONLN 2> /dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
# What to install is listed once, in pyproject.toml: the build requirements, the dependencies
# and the extras, read here without torch (installed first, alone). $(call REQS,<extra>)
# gives one extra; $(call REQS) the build requirements, the dependencies and "dev".
REQS = $$($(PY) -c "import re, sys; tomllib = __import__('tomllib' if sys.version_info >= (3, 11) else 'tomli'); \
       p = tomllib.load(open('pyproject.toml', 'rb')); \
       x = p['project']['optional-dependencies']; \
       r = x['$(1)'] if '$(1)' else p['build-system']['requires'] + p['project']['dependencies'] + x['dev']; \
       print(' '.join(v for v in r if re.split('[<>=!~ ;]', v)[0] != 'torch'))")

.PHONY: install demo lint test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and alone, so that no later step lets pip resolve a different torch.
$(VENV)/.deps: $(PY) pyproject.toml
	$(PY) -c "import tomllib" 2> /dev/null || $(PY) -m pip install -q tomli   # Python 3.10
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q $(call REQS)
	$(PY) -m pip install -q $(call REQS,triton) || echo "triton could not be installed: fused kernels disabled"
	# int8 CPU inference (optimize(dtype="int8")); no deps: it must not pull another torch
	$(PY) -m pip install -q --no-deps $(call REQS,int8) || echo "torchao could not be installed: int8 disabled"
	touch $@

$(VENV)/.hrfast: $(VENV)/.deps setup.py pyproject.toml build_backend/hrfast_build.py $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cpp csrc/cuda/*.h)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.hrfast

demo: install
	$(PY) -m hrfast demo

lint: install
	$(PY) -m ruff check .

test: lint
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(PY) -m pytest -q benchmarks --benchmark-columns=median,ops --benchmark-sort=name

clean:
	rm -rf $(VENV) build dist *.egg-info hrfast/_C*.so hrfast/_build_info.json outputs
