"""``serve(settings, host, port, workers)``: the ``api`` plugin that ``forecaster serve`` and ``up`` call."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import uvicorn

from api.protocol import server_options
from forecaster.config.settings import Settings
from forecaster.errors import InvalidInput
from forecaster.logs import configure_logging, log_event, log_to_file, uvicorn_log_config

FACTORY = "api.app:app_from_env"


class _Stopped(Exception):
    """Raised by our signal handler after uvicorn has shut down gracefully."""


def _stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _run_until_signal(run: Callable[[], None]) -> None:
    """Run uvicorn; a Ctrl-C or SIGTERM ends in a clean return (exit code 0).

    uvicorn shuts down on the signal, then re-raises it to the handler that was
    there before it; ours turns that into a normal return instead of the
    process dying by the signal (exit 143) or a KeyboardInterrupt (130).
    """
    if threading.current_thread() is not threading.main_thread():
        run()
        return
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run()
    except _Stopped as exc:
        log_event("api.stopped", signal=str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API under uvicorn until stopped (Ctrl-C / SIGTERM).

    With one worker the app is built here from ``settings``. With several,
    each worker process builds its own from the factory ``api.app:app_from_env``,
    which reads the config file named by ``FORECASTER_CONFIG`` (set here from
    ``settings.config_path``) and the ``FORECASTER_*`` environment; settings
    made in code and not in the file or environment do not reach those workers.
    The database is not needed to start: while it is away, ``/healthz`` answers
    200 and ``/readyz`` and the data routes 503. Request heads are bounded in size
    and time, idle connections closed (api/protocol.py).

    Raises:
        InvalidInput: ``port`` outside 1-65535 or ``workers`` below 1 (the CLI exits 2).
    """
    if not 1 <= port <= 65535:
        raise InvalidInput(f"--port {port} is not a TCP port: use 1-65535")
    if workers < 1:
        raise InvalidInput(f"--workers {workers}: at least 1 worker process is needed")
    configure_logging(settings.log_level)
    log_to_file(settings.log_file)
    log_level = settings.log_level.lower()
    log_config = uvicorn_log_config(settings.log_level, settings.log_file)  # uvicorn's lines in our format
    if workers > 1:
        if settings.config_path:
            os.environ["FORECASTER_CONFIG"] = settings.config_path
        if settings.log_file:
            os.environ["FORECASTER_LOG_FILE"] = settings.log_file
        log_event("api.serve", host=host, port=port, workers=workers, config=settings.config_path)
        _run_until_signal(lambda: uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers,
                                              log_level=log_level, log_config=log_config, **server_options()))
        return
    from api.app import create_app

    log_event("api.serve", host=host, port=port, workers=1, config=settings.config_path)
    app = create_app(settings)
    _run_until_signal(lambda: uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config,
                                          **server_options()))
