"""The project files a stage runs, derived from its imports: the code dependencies of each DVC stage (and inputs of
each Snakemake rule), so a change to any module a stage executes reruns the stages whose outputs it can change.

Read statically (`ast`): every `import` and `from ... import` anywhere in a module (function-level imports too),
followed transitively within the project's packages; a package's `__init__.py` counts, as Python runs it.
tests/test_codedeps.py checks the result against what a stage really imports at run time.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGES = ("var", "eval", "pipeline")
ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (a module file or a package's __init__.py), or None."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imported(module: str, root: Path) -> set[str]:
    """Project modules named by the import statements of `module` (and the packages above each of them)."""
    f = module_file(module, root)
    tree = ast.parse(f.read_text(), str(f))
    pkg = module if f.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                      # relative: from .x import y
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)     # `from pkg import submodule`
    out = set()
    for n in names:
        parts = n.split(".")
        for i in range(1, len(parts) + 1):                       # importing a.b.c runs a, a.b and a.b.c
            m = ".".join(parts[:i])
            if module_file(m, root) is not None:
                out.add(m)
    return out


@lru_cache(maxsize=None)
def module_closure(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """Every project module that running `module` can import, itself included, sorted."""
    if module_file(module, root) is None:
        raise ModuleNotFoundError(f"{module} is not a module of the project ({', '.join(PACKAGES)})")
    seen, todo = set(), [module]
    parts = module.split(".")
    todo += [".".join(parts[:i]) for i in range(1, len(parts))]         # its packages' __init__ run first
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_imported(m, root) - seen)
    return tuple(sorted(seen))


def code_files(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """The files of `module_closure(module)`, as repository-relative paths (the module's own file first)."""
    files = [module_file(m, root).relative_to(root).as_posix() for m in module_closure(module, root)]
    own = module_file(module, root).relative_to(root).as_posix()
    return (own, *sorted(f for f in files if f != own))
