"""The package's layering: no import cycle, every module importable on its own, family modules that
build only on the shared blocks, and a training step that stays a short sum of family and terms."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import stackgan2

PACKAGE = Path(stackgan2.__file__).parent
# Deprecated import paths kept for one release: re-exports only, used by nothing inside the package.
SHIMS = {"stackgan2.networks", "stackgan2.attention", "stackgan2.stackgan1"}
FAMILY_MODULES = ["stackgan2.models.stackgan2", "stackgan2.models.attngan", "stackgan2.models.stackgan1"]


def _modules() -> dict[str, Path]:
    """Every module of the library (``stackgan2/``; the CLI is a separate layer on top)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, at module level or inside functions (a lazy import that
    closes a cycle is still a cycle: it only moves the failure to run time)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    result = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            result.add(target)
    return result


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of module imports, ignoring the edge from a package to its own submodules (``__init__``
    listing or lazily exporting them is not a dependency of theirs on it)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert _find_cycle(_graph()) is None, " -> ".join(_find_cycle(_graph()) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"p": {"p.x"}, "p.x": {"p"}}) is None  # a package and its own submodule


def test_family_modules_build_only_on_the_shared_blocks():
    graph = _graph()
    for family in FAMILY_MODULES:
        assert graph[family] <= {"stackgan2.models.blocks", "stackgan2.config"}, (family, graph[family])
    assert graph["stackgan2.models.blocks"] <= {"stackgan2.config"}


def test_nothing_inside_the_package_uses_the_old_import_paths():
    users = {name: deps & SHIMS for name, deps in _graph().items() if deps & SHIMS and name not in SHIMS}
    assert not users, users


def test_every_module_imports_on_its_own():
    """Each module imported first, in a process where no other module of the package is loaded yet
    (one interpreter: torch is imported once, the package's modules are dropped between imports)."""
    script = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "stackgan2" or m.startswith("stackgan2.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().splitlines()[-1])
print("\\n".join(failed))
"""
    names = [n for n in _modules() if not n.startswith("stackgan2.cli")]
    result = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_the_training_step_is_short():
    from stackgan2.training import trainer

    assert len(inspect.getsource(trainer).splitlines()) < 550
    assert len(inspect.getsource(trainer.Trainer._train_step).splitlines()) < 40


def test_old_import_paths_still_work_and_say_where_to_go():
    import importlib
    import sys

    import pytest

    from stackgan2.models.attngan import AttnGANGenerator
    from stackgan2.models.stackgan2 import Generator
    from stackgan2.training.objectives import stackgan1_generator_loss

    expected = {"stackgan2.networks": ("Generator", Generator), "stackgan2.attention": ("AttnGANGenerator", AttnGANGenerator),
                "stackgan2.stackgan1": ("generator_loss", stackgan1_generator_loss)}
    for name, (attribute, value) in expected.items():
        sys.modules.pop(name, None)
        with pytest.warns(DeprecationWarning, match=f"{name} is deprecated"):
            module = importlib.import_module(name)
        assert getattr(module, attribute) is value
