"""The import structure docs/ARCHITECTURE.md promises, checked on the source (imports inside functions
included, since a cycle hidden in a function is still a cycle):

- the packages are layers, ptvl_io < translation < training < eval < pipeline: no module imports a layer
  above its own;
- no import cycle between modules;
- an import inside a function only defers a heavy dependency, and says so (`# deferred: ...`);
- no source file over 700 lines, and the CLI stays a thin layer (<= 500 lines).
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("ptvl_io", "translation", "training", "eval", "pipeline")
MAX_LINES = 700
MAX_CLI_LINES = 500


def _modules() -> dict[str, Path]:
    """Every project module by dotted name (packages by their __init__)."""
    out = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lands in (longest known prefix), or None for third parties."""
    parts = name.split(".")
    while parts:
        dotted = ".".join(parts)
        if dotted in MODULES:
            return dotted
        parts.pop()
    return None


def _imports(module: str) -> list[tuple[str, int, bool, str]]:
    """(imported project module, line, inside a function, the source line) for each import of `module`."""
    path = MODULES[module]
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines()
    tree = ast.parse(src)
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] if base else []
        for t in targets:
            mod = _resolve(t)
            if mod is not None and mod != module:
                out.append((mod, node.lineno, id(node) in in_function, lines[node.lineno - 1]))
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m}:{line} imports {target}" for m, edges in GRAPH.items() for target, line, _, _ in edges
              if _layer(target) > _layer(m)]
    assert not upward, "imports from a higher layer (ARCHITECTURE.md):\n" + "\n".join(upward)


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first walk of `edges` meets (each as a closed path)."""
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycle():
    # A package importing its own submodules (re-exports in __init__) is not a cycle of the code.
    edges = {m: {t for t, _, _, _ in GRAPH[m] if not t.startswith(m + ".")} for m in MODULES}
    cycles = find_cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _function_imports_without_reason() -> list[str]:
    bad = []
    for path in MODULES.values():
        src = path.read_text(encoding="utf-8")
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    # the statement's own lines (a long one is wrapped) and the line above it
                    said = " ".join(lines[max(sub.lineno - 2, 0):sub.end_lineno])
                    if "deferred" not in said:
                        bad.append(f"{path.relative_to(REPO)}:{sub.lineno}: {lines[sub.lineno - 1].strip()}")
    return bad


def test_imports_inside_functions_say_what_they_defer():
    bad = _function_imports_without_reason()
    assert not bad, ("an import inside a function defers a heavy dependency and says so with "
                     "`# deferred: <why>`; otherwise it belongs at the top:\n" + "\n".join(sorted(set(bad))))


@pytest.mark.parametrize("layer", LAYERS)
def test_no_file_over_700_lines(layer):
    long = {str(p.relative_to(REPO)): n for p in (REPO / layer).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_cli_is_thin():
    n = len((REPO / "pipeline" / "cli.py").read_text(encoding="utf-8").splitlines())
    assert n <= MAX_CLI_LINES, f"pipeline/cli.py has {n} lines: move the work into a library module"


def test_the_checks_can_fail():
    """The checks find what they are meant to find: a made-up cycle, a made-up upward arrow, a function
    import without its reason."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    assert _resolve("pipeline.cli.app") == "pipeline.cli" and _resolve("numpy.linalg") is None
    assert _layer("pipeline.cli") > _layer("eval.tables") > _layer("training.model") > _layer("ptvl_io")


def test_the_main_module_is_light():
    """Every process multiprocessing spawns (img2dataset's workers and logger) imports the parent's main
    module again: `ptvl` and `python -m pipeline` start from pipeline/__main__.py, which imports no CLI."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["ptvl"] == "pipeline.__main__:main"
    code = "import sys, pipeline.__main__; print(sorted({'pipeline.cli', 'luigi', 'polars'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert res.stdout.strip() == "[]"
