"""Every CUDA source compiles with nvcc, also on machines without a GPU or a CUDA PyTorch.

The CPU wheel of PyTorch ships the c10/ATen CUDA headers but not the header CMake generates
for a CUDA build (c10/cuda/impl/cuda_cmake_macros.h); the test writes that one-line header
into a temporary include directory. Compiling, not running: GPU parity lives in the op tests.
"""
import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "csrc" / "cuda").glob("*.cu"))


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    cand = Path(home) / "bin" / "nvcc"
    return str(cand) if cand.is_file() else shutil.which("nvcc")


NVCC = find_nvcc()


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (set CUDA_HOME)")
def test_cuda_sources_compile(tmp_path):
    from torch.utils.cpp_extension import include_paths
    assert SOURCES, "no csrc/cuda/*.cu found"
    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    flags = ["-std=c++20", "--expt-relaxed-constexpr", "-DHRFAST_WITH_CUDA", "-arch=sm_90",
             "-I", str(REPO / "csrc"), "-I", str(tmp_path / "shim"), "-I", sysconfig.get_paths()["include"]]
    for p in include_paths():
        flags += ["-I", p]

    def compile_one(src):
        out = tmp_path / (src.stem + ".o")
        r = subprocess.run([NVCC, "-c", str(src), "-o", str(out), *flags], capture_output=True, text=True)
        return src.name, r.returncode, r.stderr[-4000:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, SOURCES))
    failed = [f"{name}:\n{err}" for name, rc, err in results if rc != 0]
    assert not failed, "nvcc failed:\n" + "\n".join(failed)
