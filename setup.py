"""Build hrfast and its ``hrfast._C`` extension.

The C++ sources (csrc/*.cpp) are always built. The CUDA sources (csrc/cuda/: the *.cu kernels and
the *.cpp fronts) are added when torch is a CUDA build and a working CUDA toolkit is found;
``HRFAST_CUDA=1`` insists on them (the build stops with one line when the toolkit cannot build
them) and ``HRFAST_CUDA=0`` leaves them out. ``TORCH_CUDA_ARCH_LIST`` picks the GPU
architectures; without it and without a visible GPU (Docker, CI), the build targets
``DEFAULT_ARCHS``. ``HRFAST_DEBUG=1`` keeps debug info in ``_C``.
The torch version ``_C`` is compiled against goes into ``hrfast/_build_info.json``, which
``hrfast._extension`` checks before loading ``_C``.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
HOME = "https://github.com/hrfast/hrfast"     # [project.urls] Homepage; README links are made absolute to it
DEFAULT_ARCHS = "8.0;9.0"                      # A100 and H100/H200, when no GPU is there to ask
METADATA_COMMANDS = {"egg_info", "dist_info", "sdist", "--version", "--name"}


def note(text: str) -> None:
    print(f"hrfast build: {text}", file=sys.stderr)


def stop(text: str):
    raise SystemExit(f"hrfast build: error: {text}")


def nvcc_version(cuda_home: str):
    """(major, minor) of ``cuda_home``/bin/nvcc, or None when it does not run."""
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def has_cudart(cuda_home: str) -> bool:
    """The toolkit holds the CUDA runtime library that ``_C`` links against."""
    patterns = ["lib64/libcudart.so*", "lib/libcudart.so*", "targets/*/lib/libcudart.so*", "lib/x64/cudart.lib"]
    return any(glob.glob(os.path.join(cuda_home, p)) for p in patterns)


def cuda_problem(torch_cuda, cuda_home, nvcc, cudart: bool):
    """Why the CUDA sources cannot be built here (one line), or None when they can.

    ``torch_cuda``: ``torch.version.cuda``; ``cuda_home``: the toolkit torch found; ``nvcc``:
    its (major, minor); ``cudart``: whether its runtime library is there."""
    if torch_cuda is None:
        return "the installed torch is a CPU build"
    if cuda_home is None:
        return "no CUDA toolkit found (set CUDA_HOME)"
    if nvcc is None:
        return f"{cuda_home}/bin/nvcc does not run"
    if nvcc[0] != int(str(torch_cuda).split(".")[0]):
        return (f"nvcc is CUDA {nvcc[0]}.{nvcc[1]} but torch was built with CUDA {torch_cuda}: the major "
                f"versions must agree")
    if not cudart:
        return f"the toolkit at {cuda_home} has no libcudart (set CUDA_HOME to the toolkit's folder)"
    return None


def nvcc_top(nvcc: str):
    """The toolkit folder of ``nvcc`` as nvcc itself reports it (``TOP`` of a dry run), which
    sees through links and wrapper scripts; None when it does not say."""
    try:
        out = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
    return os.path.normpath(m.group(1).strip()) if m else None


def toolkit_home(found):
    """The toolkit folder to build with: ``found`` (torch's guess), or, when that holds no
    libcudart and CUDA_HOME is unset, the folder that the nvcc on PATH belongs to (torch takes
    /usr/local for a /usr/local/bin/nvcc that is a wrapper of /usr/local/cuda-13.0/bin/nvcc)."""
    if found is None or has_cudart(found) or os.environ.get("CUDA_HOME") or not shutil.which("nvcc"):
        return found
    real = nvcc_top(shutil.which("nvcc"))
    return real if real and has_cudart(real) else found


def want_cuda(torch) -> bool:
    """Whether to build the CUDA sources: HRFAST_CUDA=0/1, or whether the toolkit can."""
    flag = os.environ.get("HRFAST_CUDA", "").strip()
    if flag == "0":
        return False
    if flag not in ("", "1"):
        stop(f"HRFAST_CUDA must be 0 or 1, got {flag!r}")
    from torch.utils import cpp_extension
    home = toolkit_home(cpp_extension.CUDA_HOME)
    problem = cuda_problem(torch.version.cuda, home, home and nvcc_version(home), bool(home) and has_cudart(home))
    if problem and flag == "1":
        stop(f"HRFAST_CUDA=1 but the CUDA ops cannot be built: {problem}")
    if problem:
        if torch.version.cuda is not None or shutil.which("nvcc"):   # say why only where CUDA was in reach
            note(f"building the C++ ops without CUDA kernels: {problem}")
        return False
    if home != cpp_extension.CUDA_HOME:
        note(f"using the CUDA toolkit at {home} (where nvcc on PATH leads)")
        cpp_extension.CUDA_HOME = home    # read by CUDAExtension and the build's nvcc calls
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.device_count() == 0:
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS
        note(f"no GPU visible: compiling the CUDA kernels for TORCH_CUDA_ARCH_LIST={DEFAULT_ARCHS}")
    return True


def extension(torch):
    from torch.utils import cpp_extension
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    # Release builds carry no debug info (7.4 of the 7.6 MB otherwise). No -std flag: torch's
    # BuildExtension adds the standard its own headers need.
    debug = os.environ.get("HRFAST_DEBUG") == "1"
    cxx = ["-O3", "-fopenmp"] + ([] if debug else ["-g0"])
    link = ["-fopenmp"] + ([] if debug else ["-Wl,--strip-debug"])
    if want_cuda(torch):
        # the kernels (nvcc, no torch headers) and their at::Tensor fronts (the host compiler)
        cuda = os.path.join("csrc", "cuda")
        sources += sorted(glob.glob(os.path.join(cuda, "*.cu")) + glob.glob(os.path.join(cuda, "*.cpp")))
        nvcc = ["-O3"] + (["-lineinfo"] if debug else [])  # no fast math: decode relies on exact NaN/log
        return cpp_extension.CUDAExtension("hrfast._C", sources, define_macros=[("HRFAST_WITH_CUDA", None)],
                                           extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)
    return cpp_extension.CppExtension("hrfast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)


def build_ext_class(torch):
    """torch's BuildExtension, writing ``_build_info.json`` beside ``_C``."""
    from torch.utils import cpp_extension

    class BuildExt(cpp_extension.BuildExtension.with_options(use_ninja=True)):
        def run(self):
            super().run()
            so = Path(self.get_ext_fullpath("hrfast._C"))
            info = {"torch": torch.__version__, "cuda": any(s.endswith(".cu") for s in self.extensions[0].sources)}
            (so.parent / "_build_info.json").write_text(json.dumps(info) + "\n")

    return BuildExt


def long_description() -> str:
    """The README with its relative links made absolute, for the package index page."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)", lambda m: f"]({HOME}/blob/main/{m.group(1)})", text)


def main() -> None:
    try:
        import torch
    except ImportError:
        torch = None
    metadata_only = bool(METADATA_COMMANDS.intersection(sys.argv[1:]))
    if torch is None and not metadata_only:
        stop("compiling hrfast._C needs torch: install it first (CPU: pip install torch --index-url "
             "https://download.pytorch.org/whl/cpu), then pip install --no-build-isolation .")
    setup(
        packages=find_packages(include=["hrfast", "hrfast.*"]) + ["hrfast.configs", "hrfast.kernels",
                                                                  "hrfast.sample_data"],
        package_dir={"hrfast.kernels": "kernels", "hrfast.sample_data": "data"},
        package_data={"hrfast.configs": ["*.yaml", "family/*.yaml"],
                      "hrfast.sample_data": ["coco-mini/README.md", "coco-mini/annotations/*.json",
                                             "coco-mini/images/*.jpg"]},
        long_description=long_description(),
        long_description_content_type="text/markdown",
        ext_modules=[] if torch is None else [extension(torch)],
        cmdclass={} if torch is None else {"build_ext": build_ext_class(torch)},
    )


if __name__ == "__main__":
    main()
