"""The import layering of aca, read from the source (every ``import`` statement, also those
inside functions): the core (solvers -> gradients -> odeint) imports nothing above it, the
trainer no task, model or reporting code, and the tasks not the trainer. A violation names
the module and the import that breaks the rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aca"
LEAVES = ("aca.errors", "aca.stats")  # imported by anything, import nothing of aca
# module prefix -> the aca modules it may import (a prefix allows its submodules)
ALLOWED = {
    "aca.solvers": ("aca.solvers", *LEAVES),
    "aca.gradients": ("aca.gradients", "aca.solvers", *LEAVES),
    "aca.options": ("aca.gradients", "aca.solvers", *LEAVES),
    "aca.odeint": ("aca.options", "aca.gradients", "aca.solvers", *LEAVES),
}
# module prefix -> the aca modules it must not import
FORBIDDEN = {
    "aca.train": ("aca.tasks", "aca.models", "aca.report", "aca.cli"),
    "aca.tasks": ("aca.train", "aca.cli"),
    "aca.models": ("aca.tasks", "aca.train", "aca.report", "aca.cli"),
    "aca.task": ("aca.tasks", "aca.train", "aca.models", "aca.report", "aca.cli"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def aca_imports(path: Path) -> list[str]:
    """Every aca module ``path`` imports at run time (``from aca import x`` counts as
    ``aca.x``); imports under ``if TYPE_CHECKING:`` are for type hints only."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "aca":
                found += [f"aca.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [name for name in found if name == "aca" or name.startswith("aca.")]


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_rules_name_existing_modules() -> None:
    """A renamed package must not make a rule vacuous."""
    for prefix in (*ALLOWED, *FORBIDDEN):
        assert any(within(name, (prefix,)) for name in MODULES), prefix


@pytest.mark.parametrize("prefix", ALLOWED)
def test_the_core_imports_nothing_above_it(prefix: str) -> None:
    wrong = [f"{name} imports {imported}" for name, path in MODULES.items()
             if within(name, (prefix,)) for imported in aca_imports(path)
             if not within(imported, ALLOWED[prefix])]
    assert not wrong, wrong


@pytest.mark.parametrize("prefix", FORBIDDEN)
def test_no_upward_or_sideways_import(prefix: str) -> None:
    wrong = [f"{name} imports {imported}" for name, path in MODULES.items()
             if within(name, (prefix,)) for imported in aca_imports(path)
             if within(imported, FORBIDDEN[prefix])]
    assert not wrong, wrong


def test_the_leaves_import_nothing_of_aca() -> None:
    wrong = [f"{name} imports {imported}" for name in LEAVES if name in MODULES
             for imported in aca_imports(MODULES[name])]
    assert not wrong, wrong


def test_scripts_import_no_private_module() -> None:
    """Scripts use aca's public modules (aca.report, aca.train ...), never a private
    ``_module`` of a package."""
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    wrong = [f"{path.name} imports {imported}" for path in sorted(scripts.glob("*.py"))
             for imported in aca_imports(path)
             if any(part.startswith("_") for part in imported.split("."))]
    assert not wrong, wrong
