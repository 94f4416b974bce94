"""The ``forecaster`` command line (console script ``forecaster = "forecaster.cli:main"``).

    app.py           the Typer app, the consoles and what every command shares
    runs.py          ingest, train (one job run executed here, shown as a table)
    observations.py  observations delete
    models.py        models list, promote, baseline, rollback
    holdout.py       a version's holdout figures as the train and models tables show them
    processes.py     migrate, serve, scheduler, worker, up
"""

from forecaster.cli import models, observations, processes, runs  # noqa: F401 - importing registers the commands
from forecaster.cli.app import app, main

__all__ = ["app", "main"]
