"""Extension points that the API and the scheduler plug into.

The core never imports ``api/`` or ``jobs/``: those packages register their
entry functions under the ``forecaster.plugins`` entry-point group
(pyproject.toml), and the CLI looks them up by name when a command needs one.

| name | signature |
|---|---|
| ``api`` | ``serve(settings, *, host, port, workers=1) -> None`` (blocks until stopped) |
| ``scheduler`` | ``run_scheduler(settings) -> int`` (blocks; exit code) |
| ``worker`` | ``run_worker(settings, *, concurrency=None, queues=None) -> int`` (blocks; exit code) |
| ``scheduler_background`` | ``start_in_background(settings) -> handle`` with ``handle.shutdown()`` |
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from forecaster.errors import ConfigError

GROUP = "forecaster.plugins"


def load(name: str) -> Any:
    """The callable registered as ``name``.

    Raises:
        ConfigError: nothing registered under that name (the package is not installed).
    """
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise ConfigError(
            f"no {name!r} plugin installed: reinstall the project (`pip install -e .`) so its entry points register"
        )
    return next(iter(found)).load()
