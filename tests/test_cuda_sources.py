"""Every CUDA source compiles, also on machines without a GPU or a CUDA PyTorch: the kernels
(csrc/cuda/*.cu) with nvcc, as the build does, and their at::Tensor fronts (csrc/cuda/*.cpp)
with the host compiler against torch's headers and the toolkit's.

The CPU wheel of PyTorch ships the c10/ATen CUDA headers but not the header CMake generates
for a CUDA build (c10/cuda/impl/cuda_cmake_macros.h); the test writes that one-line header
into a temporary include directory. Compiling, not running: GPU parity lives in the op tests.
"""
import os
import re
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KERNELS = sorted((REPO / "csrc" / "cuda").glob("*.cu"))
FRONTS = sorted((REPO / "csrc" / "cuda").glob("*.cpp"))


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    cand = Path(home) / "bin" / "nvcc"
    return str(cand) if cand.is_file() else shutil.which("nvcc")


NVCC = find_nvcc()


def cuda_include(nvcc: str) -> str:
    """The toolkit's include folder, as nvcc reports it (``TOP`` of a dry run sees through
    wrapper scripts)."""
    out = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True)
    top = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
    home = Path(top.group(1).strip()) if top else Path(nvcc).resolve().parent.parent
    return str((home / "include").resolve())


def test_the_kernels_include_no_torch_header():
    """nvcc parsing torch's headers is what made a .cu file take ~25 s to compile; the kernels
    see launch.h, the rules and the CUDA runtime only."""
    assert KERNELS and FRONTS
    for src in KERNELS + [REPO / "csrc" / "cuda" / "launch.h", REPO / "csrc" / "rules.h",
                          REPO / "csrc" / "decode.h", REPO / "csrc" / "joints_mse.h"]:
        includes = re.findall(r'^#include [<"](.+)[>"]', src.read_text(), re.M)
        assert not [i for i in includes if i.split("/")[0] in ("ATen", "c10", "torch")], (src.name, includes)


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (set CUDA_HOME)")
def test_cuda_sources_compile(tmp_path):
    from torch.utils.cpp_extension import include_paths
    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    torch_includes = ["-I", str(tmp_path / "shim"), "-I", sysconfig.get_paths()["include"]]
    for p in include_paths():
        torch_includes += ["-I", p]
    nvcc = [NVCC, "-c", "-std=c++20", "-arch=sm_90", "-I", str(REPO / "csrc")]
    host = [os.environ.get("CXX", "g++"), "-fsyntax-only", "-std=c++20", "-DHRFAST_WITH_CUDA",
            "-I", cuda_include(NVCC), *torch_includes]

    def compile_one(src):
        cmd = nvcc + [str(src), "-o", str(tmp_path / (src.stem + ".o"))] if src.suffix == ".cu" else host + [str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        return src.name, r.returncode, r.stderr[-4000:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, FRONTS + KERNELS))    # the slow front first
    failed = [f"{name}:\n{err}" for name, rc, err in results if rc != 0]
    assert not failed, "compilation failed:\n" + "\n".join(failed)
