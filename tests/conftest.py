from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
COCO_MINI = REPO / "data" / "coco-mini"
# The official W32 state_dict listing: from ../shared (CI layout) or a copy in tests/data.
FIXTURE_CANDIDATES = [REPO.parent / "shared" / "fixtures" / "official_w32_state_dict.tsv",
                      REPO / "tests" / "data" / "official_w32_state_dict.tsv"]

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
