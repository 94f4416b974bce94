"""``serve(settings, host, port, workers)``: the ``api`` plugin that ``forecaster serve`` and ``up`` call."""

from __future__ import annotations

import os

import uvicorn

from forecaster.config import Settings
from forecaster.logs import configure_logging, log_event

FACTORY = "api.app:app_from_env"


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API under uvicorn until stopped (Ctrl-C / SIGTERM).

    With one worker the app is built here from ``settings``. With several,
    each worker process builds its own from the factory ``api.app:app_from_env``,
    which reads the config file named by ``FORECASTER_CONFIG`` (set here from
    ``settings.config_path``) and the ``FORECASTER_*`` environment; settings
    made in code and not in the file or environment do not reach those workers.
    """
    configure_logging(settings.log_level)
    log_level = settings.log_level.lower()
    if workers > 1:
        if settings.config_path:
            os.environ["FORECASTER_CONFIG"] = settings.config_path
        log_event("api.serve", host=host, port=port, workers=workers, config=settings.config_path)
        uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level)
        return
    from api.app import create_app

    log_event("api.serve", host=host, port=port, workers=1, config=settings.config_path)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
