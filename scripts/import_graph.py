"""The import graph of ``runtime/`` as a Markdown table: module -> runtime modules it imports (maintainer tooling).

Usage: ``python scripts/import_graph.py [REPO]`` (default: this checkout). Reads the sources with ``ast``;
nothing is imported. Imports inside functions count too (marked ``*``), since they are dependencies all the same.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "(runtime)"


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Runtime modules named by one ``from ... import ...`` (relative or ``ocrnet_edge.runtime...``)."""
    if node.level:
        base = current.split(".") if current != "(runtime)" else []
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        mod = ".".join(base + (node.module.split(".") if node.module else []))
    elif node.module and node.module.startswith("ocrnet_edge.runtime"):
        mod = node.module[len("ocrnet_edge.runtime"):].lstrip(".")
    else:
        return []
    if node.module is None or not mod:  # ``from . import x``: x are modules
        return [".".join(filter(None, [mod, a.name])) for a in node.names]
    return [mod]


def graph(runtime: Path) -> dict[str, dict[str, bool]]:
    known = {module_name(runtime, p) for p in runtime.rglob("*.py")}
    out: dict[str, dict[str, bool]] = {}
    for path in sorted(runtime.rglob("*.py")):
        name = module_name(runtime, path)
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        deps: dict[str, bool] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for dep in resolve(name, path.name == "__init__.py", node):
                    while dep and dep not in known:  # ``from .decode import X`` names the package
                        dep = dep.rpartition(".")[0]
                    if dep and dep != name:
                        deps[dep] = deps.get(dep, False) or id(node) in top
        out[name] = deps
    return out


def main() -> None:
    repo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    g = graph(repo / "runtime")
    print(f"{len(g)} modules, {sum(len(d) for d in g.values())} edges\n")
    print("| module | imports (runtime modules; * = inside a function) |\n| --- | --- |")
    for mod, deps in g.items():
        print(f"| {mod} | {', '.join(d + ('' if top else '*') for d, top in sorted(deps.items())) or '-'} |")


if __name__ == "__main__":
    main()
