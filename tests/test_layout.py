"""Package boundaries of DESIGN.md, checked by importing for real in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import forecaster

TORCH_MODULES = {  # the modules that build and fit networks
    "forecaster.modelling.network", "forecaster.modelling.training", "forecaster.modelling.fleet.recurrence",
    "forecaster.modelling.fleet.sizing", "forecaster.modelling.fleet.training",
}


def loaded_after_importing(modules: list[str]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('fastapi', 'apscheduler', 'api', 'jobs', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout)  # noqa: S307 - our own printed list


def test_the_core_never_imports_fastapi_apscheduler_api_or_jobs() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(forecaster.__path__, "forecaster."))
    assert "forecaster.cli" in modules and "forecaster.modelling.fitting" in modules
    assert loaded_after_importing(modules) == ["torch"]
    # torch loads only with the modules that train or predict, not with the CLI, ingest, registry, ...
    assert loaded_after_importing([m for m in modules if m not in TORCH_MODULES]) == []


def test_no_sql_in_the_api_package() -> None:
    """Routes call the use-case layer: no query builders imported, no session queried, in api/."""
    import ast
    from pathlib import Path

    api = Path(__file__).resolve().parents[1] / "api"
    found = []
    for path in sorted(api.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                bad = {a.name for a in node.names} & {"select", "text", "insert", "update", "delete", "func"}
                found += [f"{path.name}:{node.lineno} imports {name}" for name in sorted(bad)]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in {"execute", "scalar", "scalars", "get", "query"} \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "session":
                found.append(f"{path.name}:{node.lineno} session.{node.func.attr}(...)")
    assert found == [], found


# The layers of the code, bottom up: a module may import a lower layer, or its own package, never a higher one or
# a sibling at its own layer (data and modelling know nothing of each other; api, jobs and the CLI neither).
LAYERS = {
    "forecaster.errors": 0, "forecaster.logs": 0, "forecaster.snapshots": 0,
    "forecaster.plugins": 1, "forecaster.calendar": 1,
    "forecaster.config": 2,
    "forecaster.data": 3, "forecaster.modelling": 3,
    "forecaster.store": 4,
    "forecaster.usecases": 5,
    "forecaster.cli": 6, "api": 6, "jobs": 6,
}
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _unit(module: str) -> str:
    """The layered package a module belongs to (its longest prefix in LAYERS)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def _imports() -> dict[str, set[str]]:
    """Every import of our own code, module -> modules, function-local imports included."""
    import ast

    graph: dict[str, set[str]] = {}
    for top in ("forecaster", "api", "jobs"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            graph[module] = {m for m in found if m.split(".")[0] in ("forecaster", "api", "jobs")
                             and m not in ("forecaster", "forecaster.__version__", "api", "jobs")}
    return graph


def test_imports_run_down_the_layers() -> None:
    graph = _imports()
    assert "forecaster.store.tables" in graph and "api.app" in graph
    upward = sorted({f"{a} -> {b if b in graph else b.rsplit('.', 1)[0]}" for a, targets in graph.items()
                     for b in targets if _unit(a) != _unit(b) and LAYERS[_unit(b)] >= LAYERS[_unit(a)]})
    assert upward == [], upward


def test_no_import_cycles_between_modules() -> None:
    graph = _imports()
    modules = set(graph)
    edges = {a: {b if b in modules else b.rsplit(".", 1)[0] for b in targets} & modules - {a}
             for a, targets in graph.items()}
    edges = {a: {b for b in targets if not a.startswith(b + ".")} for a, targets in edges.items()}  # a package's face
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert cycles == [], cycles


ADAPTERS = ("api", "jobs", "forecaster.cli")
ADAPTER_MAY_IMPORT = ("forecaster.usecases", "forecaster.config", "forecaster.calendar", "forecaster.errors",
                      "forecaster.logs", "forecaster.plugins")


def test_adapters_call_use_cases_only() -> None:
    """Routes, CLI commands, jobs and tasks reach the core through the use cases (plus settings and errors)."""
    graph = _imports()
    past = sorted({f"{a} -> {b}" for a, targets in graph.items() if a.startswith(ADAPTERS) for b in targets
                   if b.startswith("forecaster.") and not b.startswith(ADAPTERS) and not b.startswith(ADAPTER_MAY_IMPORT)})
    assert past == [], past
