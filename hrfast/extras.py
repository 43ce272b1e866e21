"""Optional packages, each behind an extra of ``pip install hrfast[...]``.

``require(module)`` imports an optional module, or raises :class:`MissingExtra`: one line that
names the package, what needed it and the extra that installs it. The CLI prints it as
``hrfast: error: ...`` with exit status 2.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

# top-level module -> (pip package, extra)
EXTRAS = {
    "scipy": ("scipy", "mpii"),
    "openvino": ("openvino", "cpu-runtimes"),
    "onnx": ("onnx", "cpu-runtimes"),
    "onnxruntime": ("onnxruntime", "cpu-runtimes"),
    "torchao": ("torchao", "int8"),
    "nncf": ("nncf", "int8-openvino"),
    "triton": ("triton", "triton"),
    "matplotlib": ("matplotlib", "plot"),
}


class MissingExtra(ImportError):
    """An optional package that a feature needs is not installed."""


def missing_extra_message(module: str, purpose: str) -> str:
    top = module.split(".")[0]
    package, extra = EXTRAS[top]
    return f"{purpose} needs the {package} package: pip install 'hrfast[{extra}]' (or pip install {package})"


def require(module: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``; :class:`MissingExtra` naming the extra when the
    package is not installed. ``purpose`` says what needs it ("MPII evaluation"). An installed
    package that fails to import (a version that lacks ``module``) keeps its own ImportError."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if installed(module.split(".")[0]):
            raise
        raise MissingExtra(missing_extra_message(module, purpose)) from None


def installed(top: str) -> bool:
    """Whether the top-level module ``top`` can be found (a test hides one by setting
    ``sys.modules[top] = None``)."""
    if top in sys.modules:
        return sys.modules[top] is not None
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False
