"""What starting a generation costs: units of the key's bucket, or of the client IP's on
public live URLs (cache/budget.py); a bucket holding too few is a 429 with its headers."""

from __future__ import annotations

from cache.budget import BudgetState
from cache.errors import RateLimitExceeded
from origin.services import Services


async def spend_key_budget(services: Services, key_id: str, cost: int = 1) -> BudgetState:
    """`cost` units (one per generation) of a key's bucket, all or none."""
    rate = services.settings.key_rate
    state = await services.budget.take(f"key:{key_id}", rate, cost)
    if not state.allowed:
        raise RateLimitExceeded(
            f"The generation budget of this key is spent; it refills at {rate.per_hour} an hour.",
            retry_after=state.retry_after,
            headers=state.headers(),
        )
    return state


async def spend_ip_budget(services: Services, project_id: str, client_ip: str) -> BudgetState:
    """One unit of the bucket of new public live images a client IP has in a project."""
    rate = services.settings.ip_rate
    state = await services.budget.take(f"ip:{project_id}:{client_ip}", rate)
    if not state.allowed:
        raise RateLimitExceeded(
            f"This address has used its {rate.burst} new images; "
            f"it gets {rate.per_hour} more an hour.",
            retry_after=state.retry_after,
            headers=state.headers(),
        )
    return state
