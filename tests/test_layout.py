"""Package boundaries of DESIGN.md, checked by importing for real in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import forecaster


def test_the_core_imports_neither_fastapi_apscheduler_nor_torch() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(forecaster.__path__, "forecaster."))
    assert "forecaster.cli" in modules and "forecaster.pipeline" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('fastapi', 'apscheduler', 'api', 'jobs', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # torch too: it loads only when a model trains or predicts
