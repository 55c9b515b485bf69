"""The parts every transfer shares (`mountfs.sync.transfers`), without a network: the
bandwidth parser and limiter, the pause gate and its flag file, the progress registry,
and the retry policy's handling of expired presigned URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from mountfs.sync.transfers import (
    PAUSE_FLAG,
    Bandwidth,
    PauseGate,
    Progress,
    RateLimit,
    parse_bwlimit,
)
from mountfs.transport.api import ApiError, Offline
from mountfs.transport.retry import RetryPolicy, is_temp_failure, with_fresh_url

MIB = 1 << 20


def test_bwlimit_forms() -> None:
    assert parse_bwlimit(None) == Bandwidth()
    assert parse_bwlimit("off") == Bandwidth()
    assert parse_bwlimit("10M") == Bandwidth(10 * MIB, 10 * MIB)
    assert parse_bwlimit("10M:512K") == Bandwidth(10 * MIB, 512 * 1024)
    assert parse_bwlimit("1.5MiB") == Bandwidth(1.5 * MIB, 1.5 * MIB)
    assert parse_bwlimit("0:2M") == Bandwidth(None, 2 * MIB)
    for bad in ("fast", "1:2:3", "-5M", "10X"):
        with pytest.raises(ValueError, match="--bwlimit"):
            parse_bwlimit(bad)


@pytest.mark.trio
async def test_rate_limit_holds_the_rate() -> None:
    limit = RateLimit(4 * MIB, burst=0.0)
    start = trio.current_time()
    for _ in range(8):
        await limit.take(MIB)  # 8 MiB at 4 MiB/s: about 2 s (less the first piece)
    elapsed = trio.current_time() - start
    assert 1.6 <= elapsed <= 4.0


@pytest.mark.trio
async def test_unlimited_never_waits() -> None:
    limit = RateLimit(None)
    with trio.fail_after(1):
        for _ in range(1000):
            await limit.take(MIB)


@pytest.mark.trio
async def test_pause_cancels_a_running_transfer_and_reruns_it_after_resume(
    tmp_path: Path,
) -> None:
    gate = PauseGate(tmp_path)
    attempts: list[int] = []

    async def transfer() -> str:
        attempts.append(1)
        await trio.sleep(1 if len(attempts) == 1 else 0)  # the first is cut by the pause
        return "done"

    result: list[str] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            result.append(await gate.run(transfer))

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        gate.pause()
        assert (tmp_path / PAUSE_FLAG).exists()
        await trio.sleep(0.2)
        assert result == []
        assert len(attempts) == 1
        gate.resume()
    assert result == ["done"]
    assert len(attempts) == 2
    assert not (tmp_path / PAUSE_FLAG).exists()


def test_pause_persists_in_the_state_directory(tmp_path: Path) -> None:
    PauseGate(tmp_path).pause()
    assert PauseGate(tmp_path).paused
    other = PauseGate(tmp_path)
    (tmp_path / PAUSE_FLAG).unlink()
    other.refresh()  # what `watch` does for a process that was not told
    assert not other.paused


def test_progress_snapshot_is_the_json_form() -> None:
    progress = Progress()
    with progress.track("a/b.bin", "upload", 10 * MIB) as transfer:
        transfer.add(4 * MIB)
        (info,) = progress.snapshot()
        assert info.to_json().keys() == {
            "path",
            "direction",
            "bytes_done",
            "bytes_total",
            "rate_bps",
            "eta_s",
            "state",
        }
        assert (info.path, info.bytes_done, info.bytes_total) == ("a/b.bin", 4 * MIB, 10 * MIB)
        transfer.add(-5 * MIB)  # a failed attempt gives its bytes back, never below zero
        assert progress.snapshot()[0].bytes_done == 0
    assert progress.snapshot() == []


def test_retry_is_for_network_errors_and_5xx_never_4xx() -> None:
    assert is_temp_failure(Offline("cut"))
    assert is_temp_failure(ApiError(503, "x", "x", {}))
    assert not is_temp_failure(ApiError(409, "conflict", "x", {}))
    assert not is_temp_failure(ApiError(403, "bad_signature", "x", {}))


@pytest.mark.trio
async def test_an_expired_url_is_renewed_not_reported() -> None:
    used: list[str] = []

    async def use(url: str) -> str:
        used.append(url)
        if url == "old":
            raise ApiError(403, "bad_signature", "expired", {})
        return f"sent with {url}"

    async def renew() -> str:
        return "new"

    policy = RetryPolicy(attempts=2, base=0.01)
    assert await with_fresh_url("old", use, renew, policy) == "sent with new"
    assert used == ["old", "new"]
