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
