"""forecaster: a self-hosted time-series forecasting service.

Importing this package loads neither torch, FastAPI nor APScheduler.
"""

__version__ = "0.1.0"
