"""The package's import graph: acyclic at any depth, and in the tier order its docstring states.

Every module's imports are read from its syntax tree (module level and inside functions alike),
so an import deferred into a function cannot hide a cycle. Run: `python -m pytest tests/test_imports.py -q`.
"""

import ast
import re
from pathlib import Path

import minimoe

PACKAGE = Path(minimoe.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The minimoe modules a file imports anywhere in it (`minimoe.x` and `from minimoe import x`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "minimoe":
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minimoe."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("minimoe.")}
    return names


def graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    return {name: (imports_of(path) & modules.keys()) - {name} for name, path in modules.items()}


def tiers() -> dict[str, int]:
    """Module → tier number, from the 'Import order' block of minimoe/__init__.py's docstring."""
    block = minimoe.__doc__.split("Import order", 1)[1]
    tier, found = 0, {}
    for line in block.splitlines():
        head = re.match(r"\s+(\d) \w+:(.*)", line)
        if head:
            tier, line = int(head.group(1)), head.group(2)
        elif not line.startswith("    " * 4):
            continue
        for name in line.split():
            assert name not in found, f"{name} is listed twice in the package docstring"
            found[name] = tier
    return found


def test_no_import_cycles():
    deps, state = graph(), {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(deps[name]):
            assert state.get(dep) != "open", "import cycle: " + " → ".join(path + [name, dep])
            if dep not in state:
                visit(dep, path + [name])
        state[name] = "done"

    for name in sorted(deps):
        if name not in state:
            visit(name, [])


def test_every_module_has_a_tier_and_imports_only_its_own_or_earlier_tiers():
    deps, tier = graph(), tiers()
    assert set(tier) == set(deps) - {"__init__"}, "list every module once in the package docstring"
    upward = [f"{name} (tier {tier[name]}) imports {dep} (tier {tier[dep]})"
              for name in sorted(tier) for dep in sorted(deps[name]) if tier[dep] > tier[name]]
    assert upward == []


def test_no_module_reexports_through_getattr():
    """A name lives in one module: no module-level __getattr__ forwarding to another."""
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), path.name
