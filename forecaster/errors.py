"""The exception tree. Every error a user can cause or meet names the bad value.

    ForecasterError
    ├── ConfigError (ValueError)          bad forecaster.toml / environment
    ├── InvalidInput (ValueError)         bad data from a client or a file
    │   └── NotEnoughData                 a series too short to train on
    ├── SeriesNotFound (LookupError)
    ├── ModelNotFound (LookupError)
    ├── RunNotFound (LookupError)         no job run with that id
    ├── Conflict                          a state change that cannot happen now
    ├── StorageUnavailable                the database cannot be reached
    ├── SourceError                       an upstream could not give us data
    │   ├── SourceUnavailable             network, HTTP 429/5xx, timeouts: worth a retry
    │   └── SourceDataError               the upstream answered, but not with data
    └── TrainingError
        └── TrainingDiverged              NaN loss

The API maps these to HTTP statuses in one table (api/problems.py); the CLI
prints ``str(exc)`` and exits 2.
"""

from __future__ import annotations


class ForecasterError(Exception):
    """Base of every error the forecaster raises on purpose."""


class ConfigError(ForecasterError, ValueError):
    """The configuration is invalid; the message names the key and value."""


class InvalidInput(ForecasterError, ValueError):
    """Input data (a request body, a file, a frame) is unusable as given."""


class NotEnoughData(InvalidInput):
    """A series has fewer observations than training needs."""


class SeriesNotFound(ForecasterError, LookupError):
    """No series with that key."""


class ModelNotFound(ForecasterError, LookupError):
    """No model version with that id or number."""


class RunNotFound(ForecasterError, LookupError):
    """No job run with that id."""


class Conflict(ForecasterError):
    """The request is valid but conflicts with the current state."""


class StorageUnavailable(ForecasterError):
    """The database cannot be reached."""


class SourceError(ForecasterError):
    """An upstream source could not provide data."""


class SourceUnavailable(SourceError):
    """The upstream could not be reached or refused for now (retryable)."""


class SourceDataError(SourceError):
    """The upstream answered but the answer holds no usable data."""


class TrainingError(ForecasterError):
    """Training could not produce a model."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite."""
