"""Scheduling: the APScheduler process (scheduler.py), what its jobs do (tasks.py) and the
lease that lets one scheduler lead among several (lease.py). Imports ``forecaster``, never ``api``."""
