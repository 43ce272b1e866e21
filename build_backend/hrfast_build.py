"""hrfast's build backend: setuptools', except that an isolated build uses the torch that is
already installed where hrfast is going.

``pip install .`` builds in a fresh environment of its own. With torch as a static build
requirement, pip would install the newest torch from the index there (a CUDA build of several GB)
and compile ``hrfast._C`` against it, even when the environment hrfast goes into already holds
another torch, which is the one ``_C`` later runs with. So torch is not a static requirement:
when the interpreter that runs the build has a torch in its own site-packages (pip runs its
build hooks with the target environment's interpreter, hiding that environment's packages),
the build adds that torch's folder to ``sys.path``, and nothing more is installed. Without one,
torch is asked for like any build requirement. ``HRFAST_BUILD_TORCH=isolated`` always asks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from setuptools import build_meta as _setuptools
from setuptools.build_meta import build_sdist, get_requires_for_build_sdist  # noqa: F401  (the PEP 517 hooks)

TORCH_REQUIREMENT = "torch>=2.4"


def _importable_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def installed_torch():
    """(version, site-packages folder) of the torch that this interpreter sees outside pip's
    build isolation (``python -I``: no PYTHONPATH, no user site), or None."""
    probe = ("import importlib.metadata as m, json, os\n"
             "d = m.distribution('torch')\n"
             "print(json.dumps([d.version, os.fspath(d.locate_file(''))]))")
    try:
        out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    version, folder = json.loads(out.stdout.strip().splitlines()[-1])
    return version, folder


def _use_installed_torch() -> bool:
    """Put the installed torch on ``sys.path`` when the build cannot import one; True when
    the build has a torch to compile against without installing one."""
    if _importable_torch():
        return True
    if os.environ.get("HRFAST_BUILD_TORCH") == "isolated":
        return False
    found = installed_torch()
    if found is None:
        return False
    version, folder = found
    sys.path.append(folder)   # after the build environment's own packages
    print(f"hrfast build: compiling against the installed torch {version} ({folder}); no second torch "
          "is installed for the build", file=sys.stderr)
    return True


def _requires(config_settings, hook):
    extra = [] if _use_installed_torch() else [TORCH_REQUIREMENT]
    return hook(config_settings) + extra


def get_requires_for_build_wheel(config_settings=None):
    return _requires(config_settings, _setuptools.get_requires_for_build_wheel)


def get_requires_for_build_editable(config_settings=None):
    return _requires(config_settings, _setuptools.get_requires_for_build_editable)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _use_installed_torch()
    return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    _use_installed_torch()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _use_installed_torch()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _use_installed_torch()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
