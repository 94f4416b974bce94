"""Operator options of the scheduler process, read from the environment.

``FORECASTER_SCHEDULER__RUN_ON_START`` (default 0)
    1: when this process first leads, run every ingest job once, then every
    retrain job, without waiting for their cron times (a fresh deployment
    gets data and models at once).
``FORECASTER_SCHEDULER__LEADER_RETRY_S`` (5)
    a follower tries to take the leader lock this often: the bound on
    failover after a leader dies.
``FORECASTER_SCHEDULER__LEASE_CHECK_S`` (5)
    the leader checks that it still holds the lock this often.
``FORECASTER_SCHEDULER__LEASE_TIMEOUT_S`` (30)
    PostgreSQL ends a leader's lock session after this long without a check
    (a frozen or cut-off leader); at least twice LEASE_CHECK_S.
``FORECASTER_SCHEDULER__INGEST_TRIES`` (3)
    attempts per series when its source is unavailable (network, 429, 5xx).
``FORECASTER_SCHEDULER__RETRY_BACKOFF_S`` (2)
    the wait after the first failed attempt, doubled after each further one.

The names follow the settings' ``__`` nesting so that they keep working if these
move into a ``[scheduler]`` table of ``forecaster.toml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from forecaster.errors import ConfigError
from forecaster.ingest import RetryPolicy

PREFIX = "FORECASTER_SCHEDULER__"


@dataclass(frozen=True)
class SchedulerOptions:
    """How the scheduler process leads, follows and retries (see the module docstring)."""

    run_on_start: bool = False
    leader_retry_s: float = 5.0
    lease_check_s: float = 5.0
    lease_timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SchedulerOptions:
        """Read the ``FORECASTER_SCHEDULER__*`` variables; unset ones keep their defaults.

        Raises:
            ConfigError: a variable holds something that is not a valid value, named with it.
        """
        env = os.environ if environ is None else environ
        base = cls()
        check_s = _number(env, "LEASE_CHECK_S", base.lease_check_s, minimum=0.1)
        timeout_s = _number(env, "LEASE_TIMEOUT_S", base.lease_timeout_s, minimum=1.0)
        if timeout_s < 2 * check_s:
            raise ConfigError(
                f"{PREFIX}LEASE_TIMEOUT_S = {timeout_s:g} must be at least twice {PREFIX}LEASE_CHECK_S "
                f"({check_s:g}), or a healthy leader would lose its lock between two checks"
            )
        return cls(
            run_on_start=_flag(env, "RUN_ON_START"),
            leader_retry_s=_number(env, "LEADER_RETRY_S", base.leader_retry_s, minimum=0.1),
            lease_check_s=check_s,
            lease_timeout_s=timeout_s,
            retry=RetryPolicy(
                tries=int(_number(env, "INGEST_TRIES", base.retry.tries, minimum=1, integer=True)),
                backoff_s=_number(env, "RETRY_BACKOFF_S", base.retry.backoff_s, minimum=0.0),
            ),
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(PREFIX + name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{PREFIX}{name} = {raw!r} is not a boolean (use 1 or 0)")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    raw = env.get(PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise ConfigError(f"{PREFIX}{name} = {raw!r} is not {kind}") from None
    if value < minimum:
        raise ConfigError(f"{PREFIX}{name} = {raw!r} is below the minimum {minimum:g}")
    return value
