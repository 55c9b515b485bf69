"""The one retry policy of the client.

A call is retried only when its failure is temporary (`is_temp_failure`): the backend or the
store was unreachable, timed out, or answered 408/429/5xx. 4xx answers are final, because a
retry would get the same answer. Waits grow exponentially with full jitter (so that many
devices coming back online do not stampede), are capped, and honour `Retry-After`. Each
attempt logs one level louder than the last, so a flapping link is visible in the log
without noise from a single blip.

Presigned URLs expire (`--url-ttl`, 300 s by default): a chunk that waited longer than that
(a paused or throttled upload, a long outage) gets a 403 from the store. `with_fresh_url`
renews the URL and tries again instead of reporting a failure.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from mountfs.transport.api import ApiError, Offline, request_id_scope

log = logging.getLogger(__name__)
T = TypeVar("T")

TEMPORARY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
URL_RENEWALS = 3
"""How many times one chunk transfer may get a fresh presigned URL."""


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

    All attempts send one request id (`request_id_scope`): the backend's logs show the
    retries of this call as one operation, and the logged failures name it.
    """
    with request_id_scope():
        return await _with_retry(call, policy, what)


async def _with_retry(call: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str) -> T:
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


def is_expired_url(exc: BaseException) -> bool:
    """True for a store's refusal of a presigned URL (expired or no longer valid): 403.

    The embedded store answers `bad_signature`; S3 answers XML (`AccessDenied`, "Request
    has expired"), which arrives here without a code, so any 403 counts.
    """
    return isinstance(exc, ApiError) and exc.status == 403


U = TypeVar("U")


async def with_fresh_url(
    url: U,
    use: Callable[[U], Awaitable[T]],
    renew: Callable[[], Awaitable[U]],
    policy: RetryPolicy = RetryPolicy(),
    what: str = "transfer",
) -> T:
    """`use(url)` with `with_retry`; when the store refuses the URL (`is_expired_url`),
    get a new one from `renew()` (retried too) and go on, at most `URL_RENEWALS` times."""
    renewals = 0
    while True:
        try:
            return await with_retry(functools.partial(use, url), policy, what)
        except ApiError as exc:
            if not is_expired_url(exc) or renewals >= URL_RENEWALS:
                raise
            renewals += 1
            log.info("%s: the presigned URL was refused (%s); renewing it", what, exc)
            url = await with_retry(renew, policy, f"{what} URL")
