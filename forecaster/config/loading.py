"""Loading the configuration: one TOML file, overridden by ``FORECASTER_*`` environment variables.

``load_settings(path)`` is called once by each entry point and the result passed down.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from forecaster.config.messages import ENV_PREFIX, describe_errors
from forecaster.config.settings import Settings
from forecaster.errors import ConfigError

DEFAULT_CONFIG = "forecaster.toml"


def config_path_from_env(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to read: ``path``, else ``$FORECASTER_CONFIG``, else ./forecaster.toml."""
    return Path(path or os.environ.get("FORECASTER_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: str | os.PathLike[str] | None = None, *, required: bool = False) -> Settings:
    """Read the TOML file (if present) and the environment into Settings.

    Raises:
        ConfigError: naming the file, the key and the bad value.
    """
    file = config_path_from_env(path)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot be read: {exc.strerror}") from None
    elif required or path is not None:
        raise ConfigError(f"{file}: no such config file")
    try:
        settings = Settings(**data, config_path=str(file.resolve()) if file.exists() else None)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, data=data, file=file)) from None
    except SettingsError as exc:  # an environment variable that should hold JSON does not
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        name = f"{ENV_PREFIX}{field.upper()}"
        var = next((n for n in os.environ if n.upper() == name), name)
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"environment variable {var} = {os.environ.get(var, '')!r} is not valid JSON "
                          f"for {field}{cause}") from None
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return settings
