"""Build hrfast and its ``hrfast._C`` extension.

C++ sources (csrc/*.cpp) are always built. CUDA sources (csrc/cuda/*.cu) are added when PyTorch
was built with CUDA (``torch.version.cuda``) and a CUDA toolkit is found (``CUDA_HOME``);
``HRFAST_CUDA=1`` forces them, ``HRFAST_CUDA=0`` disables them. Build with
``pip install --no-build-isolation -e .`` so the installed torch is used.
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    flag = os.environ.get("HRFAST_CUDA", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    import torch
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def extension():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    # No -std flag: torch's BuildExtension adds the standard its headers need when none is
    # given (C++17 up to torch 2.11, C++20 from the releases whose ATen headers require it), so
    # one setup.py builds against the GPU image's torch and this machine's.
    cxx = ["-O3"]
    define = []
    if want_cuda():
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define.append(("HRFAST_WITH_CUDA", None))
        nvcc = ["-O3", "-lineinfo"]  # no fast math: decode relies on exact NaN/log
        # -fopenmp here too: the CPU ops of a CUDA build parallelize with at::parallel_for
        return cpp_extension.CUDAExtension("hrfast._C", sources, define_macros=define,
                                           extra_compile_args={"cxx": cxx + ["-fopenmp"], "nvcc": nvcc},
                                           extra_link_args=["-fopenmp"])
    return cpp_extension.CppExtension("hrfast._C", sources, define_macros=define,
                                      extra_compile_args={"cxx": cxx + ["-fopenmp"]},
                                      extra_link_args=["-fopenmp"])


setup(
    packages=find_packages(include=["hrfast", "hrfast.*"]) + ["hrfast.kernels"],
    package_dir={"hrfast.kernels": "kernels"},
    package_data={"hrfast": ["configs/*.yaml"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
