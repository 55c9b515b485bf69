"""The one retry policy of the client.

A call is retried only when its failure is temporary (`is_temp_failure`): the backend or the
store was unreachable, timed out, or answered 408/429/5xx. 4xx answers are final, because a
retry would get the same answer. Waits grow exponentially with full jitter (so that many
devices coming back online do not stampede), are capped, and honour `Retry-After`. Each
attempt logs one level louder than the last, so a flapping link is visible in the log
without noise from a single blip.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from mountfs.transport.api import ApiError, Offline

log = logging.getLogger(__name__)
T = TypeVar("T")

TEMPORARY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to keep trying.

    Attributes:
        attempts: total tries, the first included (None = until cancelled).
        base: first wait in seconds; doubles each attempt.
        cap: longest single wait in seconds.
    """

    attempts: int | None = 6
    base: float = 0.2
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 1)."""
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        wait = random.uniform(0, ceiling)
        return max(wait, min(retry_after, self.cap)) if retry_after is not None else wait


def is_temp_failure(exc: BaseException) -> bool:
    """True when trying the same call again later may succeed."""
    if isinstance(exc, Offline):
        return True
    return isinstance(exc, ApiError) and exc.status in TEMPORARY_STATUSES


async def with_retry(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy = RetryPolicy(), what: str = "call"
) -> T:
    """Run `call` until it succeeds, fails for good, or the policy's attempts run out.

    Cancellation is never swallowed: a cancelled wait or call raises `trio.Cancelled` at once.
    The last error is re-raised unchanged when the attempts run out.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except (Offline, ApiError) as exc:
            if not is_temp_failure(exc) or (
                policy.attempts is not None and attempt >= policy.attempts
            ):
                raise
            wait = policy.delay(attempt, exc.retry_after if isinstance(exc, ApiError) else None)
            level = (
                logging.DEBUG if attempt == 1 else logging.INFO if attempt < 4 else logging.WARNING
            )
            log.log(level, "%s failed (%s); retry %d in %.2fs", what, exc, attempt, wait)
            await trio.sleep(wait)
