"""Loading the real series bundled with the package (forecaster/snapshots/), for the offline default and for tests."""

from __future__ import annotations

from importlib import resources

import pandas as pd

from forecaster.data.sources.base import tidy_frame
from forecaster.errors import InvalidInput
from forecaster.snapshots import SNAPSHOTS


def load_snapshot(name: str) -> pd.DataFrame:
    """The bundled series ``name`` as a frame of ``ts`` (UTC) and ``value``.

    Raises:
        InvalidInput: ``name`` is not a bundled snapshot (the message lists them).
    """
    if name not in SNAPSHOTS:
        known = ", ".join(sorted(SNAPSHOTS))
        raise InvalidInput(f"snapshot {name!r} is not bundled (known: {known})")
    resource = resources.files("forecaster.snapshots") / f"{name}.csv"
    with resources.as_file(resource) as path:
        raw = pd.read_csv(path, dtype={"ts": "string"})
    return tidy_frame(raw, label=f"snapshot {name}").frame
