"""The import graph of ``hrfast/``: no cycles (imports inside functions included) and the
layers of the package (tools -> engine/deploy -> models/ops -> kernels/csrc)."""
import ast
from pathlib import Path

import pytest

import hrfast
import hrfast.kernels

PKG = Path(hrfast.__file__).resolve().parent
KERNELS = Path(hrfast.kernels.__file__).resolve().parent    # kernels/ at the root, shipped as hrfast.kernels


def _module_name(path: Path, top: Path, prefix: str) -> str:
    parts = (prefix,) + path.relative_to(top).parts
    parts = parts[:-1] + (parts[-1].split(".")[0],)     # x.py, x.cpython-311-....so -> x
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    """module name -> source file (None for the compiled extension)."""
    found = {_module_name(p, PKG, "hrfast"): p for p in PKG.rglob("*.py")}
    found.update({_module_name(p, KERNELS, "hrfast.kernels"): p for p in KERNELS.rglob("*.py")})
    found["hrfast._C"] = None      # the compiled extension (wherever the build put it)
    return found


def _resolve(module: str, path: Path, level: int, name: str) -> str:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{name}".strip(".") if level else name


def import_graph() -> dict:
    """module -> the hrfast modules it imports anywhere in its body. ``from pkg import name``
    counts as an import of ``pkg.name`` when that is a module, else of ``pkg``."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        if path is None:
            graph[module] = edges
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path, node.level, node.module or "")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges |= {t for t in targets if t in modules and t != module}
        graph[module] = edges
    return graph


def _cycle(graph: dict):
    """A cycle of ``graph`` as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_sees_function_local_imports():
    graph = import_graph()
    assert "hrfast.kernels.fused_gemm" in graph["hrfast.ops.conv"]    # imported under an if
    assert "hrfast.deploy.plan" in graph["hrfast.deploy"]


def test_no_import_cycles():
    assert _cycle(import_graph()) is None, " -> ".join(_cycle(import_graph()))


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


LAYERS = {    # a module may import its own layer and those below it
    "kernels": 0, "_C": 0, "_extension": 0, "device": 0, "config": 0, "safe_load": 0, "tables": 0, "timing": 0,
    "extras": 0, "samples": 0, "config_keys": 0, "outputs": 0, "weights": 2, "settings": 2, "tasks": 5,
    "ops": 1, "models": 1, "data": 2, "inference": 2, "profile": 2, "visualize": 2, "detect": 2, "tracking": 2,
    "video": 4,
    "deploy": 3, "engine": 3, "predictor": 4,
    "benchmarking": 5, "check": 5, "demo": 5, "cli": 6, "__main__": 7,
}


def test_dependencies_point_one_way():
    graph = import_graph()
    wrong = []
    for module, edges in graph.items():
        top = module.split(".")[1] if "." in module else None
        if top is None:
            continue           # the package itself re-exports the public names
        for target in edges:
            other = target.split(".")[1] if "." in target else None
            if other is None:
                continue
            if LAYERS[other] > LAYERS[top]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_every_function_fits_on_a_screen():
    """The package and its kernels stay readable: no function over 60 lines."""
    kernels = Path(hrfast.kernels.__file__).resolve().parent
    paths = sorted(set(PKG.rglob("*.py")) | set(kernels.rglob("*.py")))
    long = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert len(paths) > 60 and not long, long


def test_a_triton_older_than_3_6_counts_as_none():
    """The kernels take tuple arguments and constexpr tuples (checked from Triton 3.6 on): with
    an older Triton the fused backend is unavailable and says what it needs, rather than
    failing inside a launch."""
    import subprocess
    import sys
    pytest.importorskip("triton")
    code = ("import torch, triton; triton.__version__ = '3.5.1'; "
            "from hrfast.kernels import launch; import hrfast; m = hrfast.HRNet.from_config('w18_small_128x96')\n"
            "try:\n    m.set_backend('triton')\nexcept RuntimeError as e:\n    print(launch.HAS_TRITON, e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    expected = "False backend='triton' needs Triton 3.6 or newer (pip install 'hrfast[triton]')"
    assert r.stdout.strip() == expected, r.stderr


def test_import_hrfast_leaves_dynamo_and_inductor_unimported():
    """`import hrfast` (and so `hrfast --help`) is the first thing a user waits for: Dynamo and
    Inductor add about two seconds to it on a small CPU, and only compiling needs them."""
    import subprocess
    import sys
    code = ("import sys, hrfast, hrfast.cli\n"
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
