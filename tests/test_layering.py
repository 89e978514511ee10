"""clip_har/ is the library: it never imports prefect or bentoml, and its modules form no import cycle."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import clip_har


def test_library_imports_neither_prefect_nor_bentoml() -> None:
    modules = [m.name for m in pkgutil.walk_packages(clip_har.__path__, "clip_har.")]
    assert len(modules) > 15
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('prefect', 'bentoml'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"clip_har pulled in: {out.stdout.strip()}"


def _imports(path: Path) -> set[str]:
    """Every clip_har module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clip_har"):
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("clip_har")}
    return found


def test_no_library_module_imports_one_that_imports_it_back() -> None:
    root = Path(clip_har.__file__).parent
    files = {
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    graph = {m: {t for t in _imports(p) if t in files and t != m} for m, p in files.items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        """A path of imports from `start` to `goal`, if any."""
        seen, stack = {start}, [[start]]
        while stack:
            path = stack.pop()
            for nxt in graph[path[-1]]:
                if nxt == goal:
                    return [*path, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append([*path, nxt])
        return None

    cycles = [c for m in graph if (c := reaches(m, m))]
    assert not cycles, " ; ".join(" → ".join(c) for c in cycles[:3])
