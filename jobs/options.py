"""Operator options of the scheduler process: the ``[scheduler]`` table of the config.

Every key can come from the environment too, as ``FORECASTER_SCHEDULER__<KEY>``
(e.g. ``FORECASTER_SCHEDULER__RUN_ON_START=1``); see ``SchedulerSettings`` in
forecaster/config/settings.py for the keys, their defaults and why each exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forecaster.config.settings import SchedulerSettings
from forecaster.usecases.ingest import RetryPolicy


@dataclass(frozen=True)
class SchedulerOptions:
    """How the scheduler process leads, follows and retries (see the module docstring)."""

    run_on_start: bool = False
    leader_retry_s: float = 5.0
    lease_check_s: float = 5.0
    lease_timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_settings(cls, s: SchedulerSettings) -> SchedulerOptions:
        """The options in ``settings.scheduler`` (already validated at load)."""
        return cls(
            run_on_start=s.run_on_start,
            leader_retry_s=s.leader_retry_s,
            lease_check_s=s.lease_check_s,
            lease_timeout_s=s.lease_timeout_s,
            retry=RetryPolicy(tries=s.ingest_tries, backoff_s=s.retry_backoff_s),
        )
