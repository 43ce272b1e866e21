import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels run in Triton's CPU interpreter, which must be chosen
    # before triton is first imported: plain `pytest` then runs the Triton suites as `make test`.
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist the workers share the cores: each takes its share of the intra-op
    # threads (and so do the processes it starts), or N workers x all cores' OpenMP threads
    # oversubscribe them and spin against each other.
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    torch.set_num_threads(_share)

REPO = Path(__file__).resolve().parent.parent
COCO_MINI = REPO / "data" / "coco-mini"
# The official W32 state_dict listing: from ../shared (CI layout) or a copy in tests/data.
FIXTURE_CANDIDATES = [REPO.parent / "shared" / "fixtures" / "official_w32_state_dict.tsv",
                      REPO / "tests" / "data" / "official_w32_state_dict.tsv"]

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def pytest_report_header(config):
    """A Triton interpreter that cannot run the kernels is named at the top of the run, not only
    in each failing test (hrfast.kernels.launch.interpreter_problem)."""
    from hrfast.kernels.launch import interpreter_problem
    problem = interpreter_problem()
    return [f"WARNING: {problem}"] if problem else []


@pytest.fixture(scope="session")
def official_w32_keys():
    for path in FIXTURE_CANDIDATES:
        if path.is_file():
            rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()
                    if line and not line.startswith("#")]
            return [(k, tuple(int(d) for d in s.split("x")) if s else ()) for k, s in rows]
    pytest.fail(f"official_w32_state_dict.tsv not found in {FIXTURE_CANDIDATES}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tf32_off():
    """cuDNN and the Triton kernels in IEEE float32 (both follow cudnn.allow_tf32): fp32 parity
    tests on CUDA compare exact float32 arithmetic, not TF32's 10-bit mantissa."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


def rel_err(out: torch.Tensor, gold: torch.Tensor) -> float:
    """||out - gold|| / ||gold|| in float64 (a norm over all elements, so one unlucky
    rounding cannot decide a test the way a max can)."""
    gold = gold.detach().double()
    return float((out.detach().double() - gold).norm() / gold.norm())


def assert_within_twice_eager(fast, eager, gold, what: str = "") -> None:
    """The low-precision rule: the fast path's error against a float64 (or
    float32) reference is at most twice eager's in the same dtype. No slack term: in the CPU
    interpreter the kernels round bf16 to nearest even as the GPU does (kernels/fused_gemm.py,
    ``_narrow``), so the rule holds there as written."""
    for k, (f, e, g) in enumerate(zip(fast, eager, gold)):
        err_f, err_e = rel_err(f, g), rel_err(e, g)
        assert err_f <= 2 * err_e, f"{what}[{k}]: fast {err_f:.3e} > 2 x eager {err_e:.3e}"


def write_task_yaml(folder, config: str, **sections):
    """A family config written to ``folder`` as a YAML file, with ``sections`` (e.g.
    DATASET={...}) merged into its own: how a user points an official YAML at their data."""
    import yaml

    from hrfast.models.family import FAMILY_DIR
    raw = yaml.safe_load((FAMILY_DIR / f"{config}.yaml").read_text())
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path = folder / f"{config}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
