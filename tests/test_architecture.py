"""The package's shape, checked on its source: no import cycles, no private name used outside its module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fusar_gpt"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(mods: dict[str, Path]):
    """``(module, imported module, imported name)`` for every ``from X import Y`` / ``import X`` of the package,
    at any depth (in-function imports too: a cycle through them still ties the modules together)."""
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] == "fusar_gpt":
                    for a in node.names:
                        yield mod, target, a.name
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "fusar_gpt":
                        yield mod, a.name, None


def test_no_private_name_is_imported_from_another_module():
    mods = _modules()
    leaks = [f"{mod} imports {target}.{name}" for mod, target, name in _imports(mods)
             if name and name.startswith("_") and not name.startswith("__") and f"{target}.{name}" not in mods]
    assert leaks == []


def test_the_import_graph_has_no_cycle():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, target, name in _imports(mods):
        dep = f"{target}.{name}" if name and f"{target}.{name}" in mods else target
        if dep in mods and dep != mod:
            graph[mod].add(dep)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_cli_parsers_and_the_manifest_reader_import_no_torch():
    """``fusar-gpt --help`` (and a mistyped option) builds every parser, and reading a manifest is all that
    ``score`` needs besides the scorer (and the demo's settings, read to check the committed base): none may pay
    the seconds torch and transformers take to import."""
    code = ("import sys; from fusar_gpt.__main__ import main; main([]); import fusar_gpt.data.manifest, "
            "fusar_gpt.data.tasks, fusar_gpt.report, fusar_gpt.scoring, fusar_gpt.demo_settings; "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: fusar-gpt" in out and out.strip().splitlines()[-1] == "[]"
