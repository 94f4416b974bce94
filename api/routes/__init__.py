"""One router per noun (forecasts, series, models, jobs, health) and the shared OpenAPI error entries."""

from __future__ import annotations

from typing import Any

from api.schemas import ProblemOut

PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}}

DESCRIPTIONS = {
    401: "No API key sent (header X-API-Key).",
    403: "Wrong API key, or no api_keys configured.",
    404: "No such series, model version or job run (the detail names it).",
    409: "The change cannot happen now (e.g. nothing to roll back to).",
    413: "The body is too large, or holds more windows than api.max_predict_batch.",
    415: "A body in a format this endpoint does not read.",
    422: "A bad body or parameter; the detail names the field and the value sent.",
    503: "The database is unavailable.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses (problem+json bodies)."""
    return {s: {"model": ProblemOut, "description": DESCRIPTIONS.get(s, "Error"), "content": PROBLEM_CONTENT}
            for s in (*statuses, 503)}
