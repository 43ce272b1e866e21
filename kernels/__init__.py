"""Triton kernels of hrfast (shipped as ``hrfast.kernels``): ``@triton.jit`` functions and
their launch helpers only; the ops that use them live in ``hrfast.ops``."""
