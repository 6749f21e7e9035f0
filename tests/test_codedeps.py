"""Code dependencies are derived from imports: every project module a stage runs is among its DVC deps (and its
Snakemake rule's inputs), the packages import downward only (pipeline -> eval -> var), there are no import cycles,
no stage imports another, and validating params imports no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.codedeps import PACKAGES, _imported, code_files, module_closure, module_file
from pipeline.params import load_params
from pipeline.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]


def project_modules() -> list[str]:
    out = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out.append(".".join(parts))
    return out


STAGE_MODULES = sorted({j.module for j in build_plan(load_params(ROOT / "params.yaml",
                                                                 [ROOT / "configs/ci.yaml"])).jobs})


# Import each stage module in a forked child of one interpreter that has already imported the heavy third-party
# libraries (a fresh interpreter per module costs ~15 s each on a 2-core CPU); a child starts with no project module.
_PROBE = """
import json, os, sys
import numpy, scipy, torch, torchvision, torch_fidelity, PIL, yaml, rich, pandas  # noqa: F401
out = {}
for m in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        __import__(m)
        got = sorted(k for k in sys.modules if k.split(".")[0] in ("var", "eval", "pipeline"))
        os.write(w, json.dumps(got).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    out[m] = json.loads(data)
print(json.dumps(out))
"""


def imported_at_runtime(modules: list[str]) -> dict[str, set[str]]:
    """Project modules in sys.modules after importing each of `modules` (each in a process of its own)."""
    res = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return {m: set(v) for m, v in json.loads(res.stdout).items()}


def test_stage_deps_cover_what_each_stage_imports():
    for module, got in imported_at_runtime(STAGE_MODULES).items():
        assert module in got
        missing = sorted(got - set(module_closure(module)))
        assert not missing, f"{module} imports {missing}, which its derived code deps lack"


def test_dvc_yaml_lists_every_derived_code_dep():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    plan = build_plan(load_params(ROOT / "params.yaml"))
    for job in plan.jobs:
        deps = set(stages[job.name]["deps"])
        missing = [f for f in code_files(job.module) if f not in deps]
        assert not missing, f"dvc.yaml stage {job.name} lacks code deps {missing}"


def test_closure_follows_relative_and_function_level_imports():
    # var/config/train.py imports `..schedule` relatively; pipeline/stages/tokenizer.py imports var.checkpoint
    # inside a function
    assert "var.schedule" in module_closure("var.config.train")
    assert "var.checkpoint" in module_closure("pipeline.stages.tokenizer")
    assert "var.config" in module_closure("var.config.train")          # the package runs before its modules
    assert module_file("numpy") is None and "numpy" not in module_closure("var.config")


def test_no_stage_imports_another_stage():
    for m in STAGE_MODULES:
        others = {x for x in _imported(m, ROOT) if x.startswith("pipeline.stages.") and x != m}
        assert not others, f"{m} imports the stage(s) {sorted(others)}"


LAYER = {"var": 0, "eval": 1, "pipeline": 2}


def test_packages_import_downward_only():
    for m in project_modules():
        up = {x for x in _imported(m, ROOT) if LAYER[x.split(".")[0]] > LAYER[m.split(".")[0]]}
        assert not up, f"{m} imports {sorted(up)} from a layer above it (pipeline -> eval -> var)"


def test_no_import_cycles_among_project_modules():
    graph = {m: {x for x in _imported(m, ROOT) if x != m and not m.startswith(x + ".")} for m in project_modules()}
    # a package's __init__ importing its own submodules is a package re-export, not a cycle of the design
    for m in list(graph):
        graph[m] = {x for x in graph[m] if not x.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for x in graph.get(m, ()):
            if state.get(x) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path + [m, x])}")
            if not state.get(x):
                visit(x, path + [m])
        state[m] = 2
    for m in graph:
        if not state.get(m):
            visit(m, [])


def test_lazy_package_attributes_are_not_imported_by_project_code():
    """var/__init__.py resolves VAR, VQVAE, ... lazily (importlib), which static analysis cannot follow: project
    code imports them from their modules instead (`from var import data` names a submodule and is fine)."""
    import ast
    offenders = []
    for m in project_modules():
        for node in ast.walk(ast.parse(module_file(m).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in PACKAGES:
                offenders += [f"{m}: {a.name}" for a in node.names if module_file(f"{node.module}.{a.name}") is None]
    assert not offenders, offenders


def test_validating_params_imports_no_torch():
    res = subprocess.run([sys.executable, "-c", "import sys, pipeline.params as P, pipeline.render; "
                          "P.load_params('params.yaml', ['configs/imagenet256.yaml']); "
                          "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
