"""Exchange-unit implementations by name ("backends"): a registry that knows only names.

``models/`` defines the hooks and nothing of any fused implementation:

- :class:`~hrfast.models.exchange.ExchangeUnit` calls ``unit.fused_impl(unit, xs)`` when that
  attribute is set and ``unit.fused_impl.applies(unit, xs)`` is true, else its reference
  forward;
- :class:`~hrfast.models.hrnet.HRNet` calls ``model.transition_impl(step, x)`` for each
  (conv, BN, ReLU) step of a transition when set and ``transition_impl.applies(x)`` is true.

An implementation registers an installer, ``install(model)``, that sets those attributes
(``hrfast/__init__.py`` calls ``hrfast.ops.exchange.register_fused_backends``, which
registers ``triton`` and ``auto``). Parameters
and state_dict keys never change with the backend.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

from torch import nn

Installer = Callable[[nn.Module], None]


def _reference(model: nn.Module) -> None:
    model.transition_impl = None
    for m in model.modules():
        if hasattr(m, "fused_impl"):
            m.fused_impl = None


_REGISTRY: Dict[str, Installer] = {"reference": _reference}


def register_backend(name: str, install: Installer) -> None:
    """Make ``name`` usable as ``HRNet(backend=name)`` / ``set_backend(name)``."""
    _REGISTRY[name] = install


def backend_names() -> Tuple[str, ...]:
    return tuple(_REGISTRY)


def install_backend(model: nn.Module, name: str) -> None:
    """Reset ``model`` to the reference path, then let backend ``name`` install its hooks."""
    if name not in _REGISTRY:
        raise ValueError(f"backend must be one of {backend_names()}, got {name!r}")
    _reference(model)
    _REGISTRY[name](model)
