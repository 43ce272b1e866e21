"""Packaging: the build's CUDA decisions, an sdist that builds a wheel which runs outside the
checkout, the torch-version check at import, the metadata, and the missing-extra messages."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch
from conftest import REPO

import hrfast
from hrfast.cli import main
from hrfast.extras import MissingExtra, require


def load_setup():
    """setup.py as a module: its functions, without running setup() (that runs as __main__)."""
    spec = importlib.util.spec_from_file_location("hrfast_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the build's CUDA decisions

@pytest.mark.parametrize("torch_cuda, home, nvcc, cudart, expected", [
    (None, "/usr/local/cuda", (13, 0), True, "the installed torch is a CPU build"),
    ("13.0", None, None, False, "no CUDA toolkit found"),
    ("13.0", "/opt/cuda", None, False, "/opt/cuda/bin/nvcc does not run"),
    ("12.8", "/opt/cuda", (13, 0), True, "nvcc is CUDA 13.0 but torch was built with CUDA 12.8"),
    ("13.0", "/usr/local", (13, 0), False, "the toolkit at /usr/local has no libcudart"),
    ("13.0", "/opt/cuda", (13, 0), True, None),
    ("13.0", "/opt/cuda", (13, 2), True, None),      # minor versions may differ, as torch allows
])
def test_cuda_problem_names_what_is_missing(torch_cuda, home, nvcc, cudart, expected):
    problem = load_setup().cuda_problem(torch_cuda, home, nvcc, cudart)
    assert problem == expected if expected is None else problem.startswith(expected), problem


def fake_toolkit(root: Path) -> Path:
    """A CUDA 13.0 toolkit under root/cuda-13.0 (an nvcc that answers --version and -dryrun,
    and a libcudart), and root/bin/nvcc, a wrapper script like /usr/local/bin/nvcc here."""
    home = root / "cuda-13.0"
    (home / "bin").mkdir(parents=True)
    (home / "lib64").mkdir()
    (home / "lib64" / "libcudart.so").write_bytes(b"")
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n"
                    f"echo '#$ TOP={home}/bin/..' >&2\n")
    (root / "bin").mkdir()
    wrapper = root / "bin" / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {nvcc} "$@"\n')
    for f in (nvcc, wrapper):
        f.chmod(0o755)
    return home


def test_toolkit_home_follows_an_nvcc_wrapper(tmp_path, monkeypatch):
    """torch guesses CUDA_HOME = dirname(dirname(which nvcc)); for a wrapper in /usr/local/bin
    that is /usr/local, which has no libcudart (the 'cannot find -lcudart' failure). The build
    asks nvcc where its toolkit is."""
    setup = load_setup()
    home = fake_toolkit(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    assert setup.nvcc_version(str(home)) == (13, 0)
    assert setup.toolkit_home(str(tmp_path)) == str(home)
    assert setup.toolkit_home(str(home)) == str(home)          # a guess that works is kept
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))              # the user's word is kept too
    assert setup.toolkit_home(str(tmp_path)) == str(tmp_path)


def fake_cuda_torch(gpus: int):
    return types.SimpleNamespace(version=types.SimpleNamespace(cuda="13.0"),
                                 cuda=types.SimpleNamespace(device_count=lambda: gpus))


@pytest.mark.parametrize("gpus, archs", [(0, "8.0;9.0"), (1, None)])
def test_without_a_visible_gpu_the_arch_list_defaults(tmp_path, monkeypatch, gpus, archs):
    from torch.utils import cpp_extension
    setup = load_setup()
    home = fake_toolkit(tmp_path)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(home))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "")      # recorded, so the test's change is undone
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.delenv("HRFAST_CUDA", raising=False)
    assert setup.want_cuda(fake_cuda_torch(gpus)) is True
    assert os.environ.get("TORCH_CUDA_ARCH_LIST") == archs


def test_a_broken_toolkit_builds_cpu_only_or_stops_when_cuda_is_forced(tmp_path, monkeypatch, capsys):
    from torch.utils import cpp_extension
    setup = load_setup()
    home = fake_toolkit(tmp_path)
    (home / "lib64" / "libcudart.so").unlink()
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(home))
    monkeypatch.setenv("CUDA_HOME", str(home))          # the user's choice: no other toolkit is looked for
    monkeypatch.delenv("HRFAST_CUDA", raising=False)
    assert setup.want_cuda(fake_cuda_torch(1)) is False
    assert "building the C++ ops without CUDA kernels: the toolkit at" in capsys.readouterr().err
    monkeypatch.setenv("HRFAST_CUDA", "1")
    with pytest.raises(SystemExit, match="HRFAST_CUDA=1 but the CUDA ops cannot be built: the toolkit at"):
        setup.want_cuda(fake_cuda_torch(1))
    monkeypatch.setenv("HRFAST_CUDA", "yes")
    with pytest.raises(SystemExit, match="HRFAST_CUDA must be 0 or 1, got 'yes'"):
        setup.want_cuda(fake_cuda_torch(1))


def test_forcing_cuda_with_a_cpu_torch_stops_before_compiling(tmp_path):
    """`pip install .` with HRFAST_CUDA=1 on this machine (nvcc, CPU torch): one line, and no
    compiler has run."""
    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build")
    env = dict(os.environ, HRFAST_CUDA="1")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-v", "--no-build-isolation", "--no-deps",
                        "--target", str(tmp_path / "site"), str(REPO)], capture_output=True, text=True,
                       timeout=300, env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "hrfast build: error: HRFAST_CUDA=1 but the CUDA ops cannot be built: the installed torch is a CPU " \
           "build" in out
    assert "c++ -MMD" not in out and not (tmp_path / "site").exists()


def test_long_description_links_are_absolute():
    setup = load_setup()
    text = setup.long_description()
    assert not re.findall(r"\]\((?!https?://|#|mailto:)[^)]+\)", text)
    assert f"]({setup.HOME}/blob/main/benchmarks/RESULTS.md#gpu)" in text


def test_the_version_is_written_once():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version", "readme"]' in pyproject and "\nversion =" not in pyproject.split("[tool")[0]
    assert f"version: {hrfast.__version__}" in (REPO / "CITATION.cff").read_text()


# ---------------------------------------------------------------- the torch-version check

def test_a_torch_mismatch_is_one_line_not_a_crash():
    from hrfast._extension import built_against, torch_mismatch
    assert torch_mismatch(None, "2.13.0") is None and torch_mismatch("2.13.0", "2.13.0") is None
    line = torch_mismatch("2.11.0+cu130", "2.13.0+cpu")
    assert line.startswith("hrfast._C was compiled against torch 2.11.0+cu130 but torch 2.13.0+cpu is installed")
    assert "\n" not in line
    if hrfast.HAS_EXTENSION and built_against() is not None:
        assert built_against() == torch.__version__


# ---------------------------------------------------------------- sdist -> wheel -> any folder

SDIST_MUST_HOLD = ["setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "CITATION.cff", "CHANGELOG.md",
                   "build_backend/hrfast_build.py", "csrc/common.h", "csrc/decode.h", "csrc/hrfast.cpp",
                   "csrc/rules.h", "csrc/cuda/decode.cu", "csrc/cuda/targets.cu",
                   "csrc/cuda/launch.h", "csrc/cuda/fronts.cpp", "hrfast/configs/w32_256x192.yaml",
                   "kernels/fused_gemm.py", "data/__init__.py", "data/coco-mini/annotations/person_keypoints.json",
                   "data/coco-mini/images/000000000785.jpg", "tests/conftest.py", "tests/official_numpy.py",
                   "tests/data/official_style_w32.yaml"]


def run_outside(args, python: Path, cwd: Path, timeout: int = 600):
    """``python args`` in ``cwd``, a folder outside the checkout."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HRFAST_DEBUG")}
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def user_environment(root: Path) -> Path:
    """A fresh virtual environment whose other packages (torch among them) are this one's,
    through a .pth file, as if the user had installed them before hrfast; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = Path(torch.__file__).resolve().parent.parent
    (Path(purelib) / "user-packages.pth").write_text(f"{ours}\n")
    return python


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """hrfast installed as the README says, from an sdist: `pip install "<sdist>[cpu-runtimes]"`
    into an environment that has torch, with pip's isolated build, which builds a wheel from
    the sdist. The checkout is not on the path of anything run from it."""
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("packaging")
    r = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp / "dist"),
                        str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    sdist = next((tmp / "dist").glob("hrfast-*.tar.gz"))
    python = user_environment(tmp / "venv")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    r = subprocess.run(pip + ["install", "-v", f"{sdist}[cpu-runtimes]"], capture_output=True, text=True,
                       timeout=900, env=dict(os.environ, HRFAST_CUDA="0"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    return types.SimpleNamespace(sdist=sdist, python=python, site=site, tmp=tmp, log=r.stdout + r.stderr)


@pytest.mark.slow
def test_the_sdist_holds_what_a_build_needs(installed_wheel):
    with tarfile.open(installed_wheel.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert not [n for n in SDIST_MUST_HOLD if n not in names]
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "_build_info" in n]


@pytest.mark.slow
def test_the_isolated_build_uses_the_installed_torch(installed_wheel):
    assert f"hrfast build: compiling against the installed torch {torch.__version__}" in installed_wheel.log
    assert not list(installed_wheel.site.glob("torch*"))       # torch stays the user's, once
    assert "Requirement already satisfied: openvino" in installed_wheel.log
    info = json.loads((installed_wheel.site / "hrfast" / "_build_info.json").read_text())
    assert info == {"torch": torch.__version__, "cuda": False}
    so = next((installed_wheel.site / "hrfast").glob("_C*.so"))
    assert so.stat().st_size < 2 * 2**20        # no debug info (7.6 MB with it)


@pytest.mark.slow
def test_check_runs_from_the_wheel_in_any_folder_and_writes_nothing(installed_wheel):
    work = installed_wheel.tmp / "work"
    r = run_outside(["-c", "import hrfast; print(hrfast.__file__, hrfast.HAS_EXTENSION)"], installed_wheel.python, work)
    assert r.stdout.split() == [str(installed_wheel.site / "hrfast" / "__init__.py"), "True"], r.stderr
    hrfast_script = installed_wheel.python.parent / "hrfast"
    r = run_outside([str(hrfast_script), "check", "--config", "w18_small_128x96", "--batch", "2"],
                    installed_wheel.python, work)
    assert r.returncode == 0, r.stderr
    assert "reloaded model gives identical heatmaps: True" in r.stdout
    assert list(work.iterdir()) == []


@pytest.mark.slow
def test_the_readme_quick_start_runs_from_the_wheel(installed_wheel):
    code = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    assert "sample_images" in code          # the first Python block is the quick start
    work = installed_wheel.tmp / "quick"
    r = run_outside(["-c", code], installed_wheel.python, work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(1, 17, 3) -> pose.png" in r.stdout
    assert (work / "pose.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_metadata_is_complete(installed_wheel):
    dist = next(installed_wheel.site.glob("hrfast-*.dist-info"))
    meta = (dist / "METADATA").read_text()
    head, _, description = meta.partition("\n\n")
    fields = [line.split(": ", 1) for line in head.splitlines() if ": " in line]
    values = {}
    for k, v in fields:
        values.setdefault(k, []).append(v)
    assert values["Version"] == [hrfast.__version__]
    assert values["License-Expression"] == ["MIT"]
    assert values["Requires-Python"] == [">=3.10"]
    assert values["Author"] or values["Author-email"]
    assert len(values["Classifier"]) >= 8 and "Keywords" in values
    assert any(u.startswith("Homepage, https://") for u in values["Project-URL"])
    assert any(e.startswith("cpu-runtimes") for e in values["Provides-Extra"])
    assert (dist / "licenses" / "LICENSE").is_file()
    assert not re.findall(r"\]\((?!https?://|#|mailto:)[^)]+\)", description)


@pytest.mark.slow
def test_a_wheel_on_another_torch_warns_once_and_runs_the_reference_ops(installed_wheel):
    info = installed_wheel.site / "hrfast" / "_build_info.json"
    good = info.read_text()
    info.write_text(json.dumps({"torch": "2.0.0", "cuda": False}))
    code = ("import torch, hrfast\nfrom hrfast.ops import decode_heatmaps\n"
            "c, m = decode_heatmaps(torch.rand(1, 2, 8, 6))\nprint(hrfast.HAS_EXTENSION, tuple(c.shape))")
    try:
        r = run_outside(["-c", code], installed_wheel.python, installed_wheel.tmp / "w3")
    finally:
        info.write_text(good)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "(1,", "2,", "2)"]
    warned = [line for line in r.stderr.splitlines() if "compiled against torch 2.0.0" in line]
    assert len(warned) == 1 and f"but torch {torch.__version__} is installed" in warned[0]


# ---------------------------------------------------------------- missing extras

def hide(monkeypatch, *modules):
    """Make ``import m`` fail for each module, as if its package were not installed."""
    for m in modules:
        for name in [n for n in sys.modules if n == m or n.startswith(m + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, m, None)


def test_require_names_the_extra(monkeypatch):
    hide(monkeypatch, "scipy")
    with pytest.raises(MissingExtra, match=r"^MPII evaluation needs the scipy package: pip install 'hrfast\[mpii\]'"):
        require("scipy.io", "MPII evaluation")


def test_mpii_without_scipy_is_one_line(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "scipy")
    assert main(["train", "--config", "w18_small_128x96", "--synthetic", "--dataset", "mpii", "--epochs", "1",
                 "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'hrfast[mpii]'" in err[0], err


def test_openvino_and_onnxruntime_name_cpu_runtimes(monkeypatch):
    from hrfast.detect import build_detector
    model = hrfast.HRNet.from_config("w18_small_128x96").eval()
    hide(monkeypatch, "openvino", "onnxruntime")
    with pytest.raises(MissingExtra, match=r"pip install 'hrfast\[cpu-runtimes\]'"):
        hrfast.optimize(model, dtype="fp32", runtime="openvino")
    with pytest.raises(MissingExtra, match=r"pip install 'hrfast\[cpu-runtimes\]'"):
        hrfast.optimize(model, dtype="fp32", runtime="onnxruntime")
    with pytest.raises(MissingExtra, match=r"an ONNX person detector needs the onnxruntime package"):
        build_detector(str(REPO / "nothing.onnx"))
    assert hrfast.deploy.make_plan(dtype="fp32").runtime == "torch"     # auto falls back, as documented


def test_int8_without_its_packages_names_the_extra(monkeypatch):
    model = hrfast.HRNet.from_config("w18_small_128x96").eval()
    hide(monkeypatch, "torchao")
    with pytest.raises(MissingExtra, match=r"optimize\(dtype='int8'\) needs the torchao package: pip install "
                                           r"'hrfast\[int8\]'"):
        hrfast.optimize(model, dtype="int8", calibration=torch.randn(2, 3, 128, 96), runtime="torch")
    hide(monkeypatch, "nncf")
    with pytest.raises(MissingExtra, match=r"optimize\(dtype='int8'\) on OpenVINO needs the nncf package: pip "
                                           r"install 'hrfast\[int8-openvino\]'"):
        hrfast.optimize(model, dtype="int8", calibration=torch.randn(2, 3, 128, 96), runtime="openvino")


def test_the_chart_without_matplotlib_names_plot(monkeypatch, tmp_path):
    from hrfast.benchmarking import bar_chart
    hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtra, match=r"pip install 'hrfast\[plot\]'"):
        bar_chart([{"variant": "eager fp32", "ratio": 1.0}], tmp_path / "x.png", "t")


def test_triton_backend_without_triton_names_the_extra():
    code = ("import sys; sys.modules['triton'] = None\nimport hrfast\n"
            "m = hrfast.HRNet.from_config('w18_small_128x96')\n"
            "try:\n    m.set_backend('triton')\nexcept RuntimeError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "backend='triton' needs Triton 3.6 or newer (pip install 'hrfast[triton]')", r.stderr
