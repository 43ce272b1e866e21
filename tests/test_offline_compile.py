"""Every Triton kernel of the fused exchange unit compiles for Hopper (sm_90a) and uses the
hardware as meant: bf16 GEMMs on the tensor cores with bf16 operands (HGMMA/HMMA ...BF16, not
TF32), no spills to local memory, and 16-byte loads of the NHWC activation tiles.

No GPU is needed: ``benchmarks/offline_compile.py`` compiles with Triton's bundled ptxas through
a stand-in driver, in a subprocess because the interpreter (TRITON_INTERPRET=1) replaces the
compiler in the test process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hrfast.kernels.launch import HAS_TRITON

REPO = Path(__file__).resolve().parent.parent
SCRIPT = """
import json, sys
sys.path.insert(0, {bench!r})
from offline_compile import compile_unit, host_time
print(json.dumps(compile_unit([32, 64], 2, 16, 12)))
print(json.dumps(host_time([32, 64], 2, 16, 12, iters=2)))
"""


def _nvidia_backend() -> bool:
    try:
        import triton
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        return False
    return (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").is_file()


@pytest.mark.skipif(not HAS_TRITON or not _nvidia_backend(), reason="needs Triton with its NVIDIA backend (ptxas)")
def test_kernels_compile_for_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(bench=str(REPO / "benchmarks"))], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout.strip().splitlines()[-2])
    # what a call costs the host: the unit's Triton launches (3 for inference of two branches, as
    # the CPU dry run of exchange_gpu.py counts) and a time for each
    host = json.loads(r.stdout.strip().splitlines()[-1])
    assert [h["mode"] for h in host] == ["infer", "train"] and host[0]["launches"] == 3
    assert host[1]["launches"] > host[0]["launches"] and all(h["host_ms"] >= 0 for h in host)
    names = {row["kernel"] for row in rows}
    # inference and training of a 2-branch unit reach every kernel but the ReLU mask, which only
    # bilinear units launch (a nearest unit's masks are inside the terms' kernels), and the sum
    # of split-K partials: these GPU choices split no wgrad this small (the W32 report does)
    assert names == {"fused_gemm_fwd_kernel", "convs_fwd_kernel", "conv_backward_kernel", "pack_weights_kernel",
                     "bn_finalize_many_kernel", "sums_fwd_kernel", "terms_reduce_kernel", "terms_sum_rows_kernel",
                     "terms_bn_apply_kernel"}
    for row in rows:
        assert row["spills"] == 0 and row["local"] == 0, row
        gemm = row["kernel"].startswith("conv") or (row["kernel"] == "fused_gemm_fwd_kernel"
                                                    and "NS=0" not in row["variant"])
        if gemm:
            assert row["mma"] and all("BF16" in k for k in row["mma"]), row
    gemm_loads = [k for row in rows if row["mma"] for k in row["loads"]]
    assert any(k.endswith(".128") for k in gemm_loads)
