"""Fresh chunks of a file → stored objects, pipelined, resumable, pausable, throttled.

The one upload path of the client: the mount's `Uploader` and `mountfs cp` both hand it the
spans to send and a way to read their bytes. Three stages run at once, so that one 2-core
machine keeps the network busy:

    producer      read a batch of spans (≤ BATCH_CHUNKS chunks, ≤ BATCH_BYTES), hash them
                  on the pipeline's worker threads
    consumers ×2  `prepare` the batch (keys; which chunks this account already has or
                  holds), seal the rest (zstd + AES-GCM, worker threads), offer them to
                  `hold` first (a PUT that completed just before an interruption, whose
                  hold never got through, is confirmed by the store and not sent again),
                  get upload URLs, PUT them (`Transfers.slots` in flight across every
                  file; each PUT under the pause gate, the upload bandwidth limit and the
                  retry policy, with its URL renewed if it expired)
    holder        after each PUT, `POST /chunks/hold` (batched): the backend then answers
                  the chunk as present for this account, so an upload cut off by a network
                  drop, a restart or `kill -9` resumes with only the chunks it lacks

Memory is bounded by the batches in flight (the producer's and each consumer's: about
3 × BATCH_BYTES of plaintext plus its ciphertext), never by the file's size.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from mountfs.chunks import cdc
from mountfs.chunks.pipeline import ChunkPipeline, SealedChunk
from mountfs.sync.tasks import run_all
from mountfs.sync.transfers import Transfer, Transfers
from mountfs.transport.api import ApiClient, PreparedChunk, Presigned
from mountfs.transport.blocks import BlockClient
from mountfs.transport.retry import is_temp_failure, with_fresh_url, with_retry
from mountfs.types import ChunkHash, ChunkKey, ChunkRef, ObjectName

__all__ = ["BATCH_BYTES", "BATCH_CHUNKS", "ChunkSender", "Reader", "SendStats"]

log = logging.getLogger(__name__)

BATCH_CHUNKS = 16
"""Chunks per `prepare` round trip."""
BATCH_BYTES = 8 << 20
"""Plaintext bytes per batch at most: bounds memory whatever the chunk sizes."""
CONSUMERS = 2
"""Batches being prepared, sealed and sent at once: one seals while the other's PUTs run."""
HOLD_BATCH = 256

Reader = Callable[[cdc.Span], Awaitable[bytes]]
"""Reads the plaintext of one span (may fetch it first)."""


@dataclass(slots=True)
class SendStats:
    """Counters for status and benchmarks (plaintext `bytes_*` except `bytes_uploaded`,
    which is what went over the wire)."""

    chunks_uploaded: int = 0
    bytes_uploaded: int = 0
    chunks_reused: int = 0
    chunks_skipped: int = 0
    torn_skips: dict[int, int] = field(default_factory=dict)
    revisions: int = 0


@dataclass(slots=True)
class _Batch:
    items: list[tuple[int, cdc.Span]]
    datas: list[bytes | None]
    hashes: list[ChunkHash]


Results = dict[int, tuple[ChunkRef, ChunkKey]]


class ChunkSender:
    """Sends the fresh chunks of files (see the module docstring)."""

    def __init__(
        self,
        api: ApiClient,
        blocks: BlockClient,
        pipeline: ChunkPipeline,
        transfers: Transfers,
        stats: SendStats | None = None,
    ) -> None:
        self._api = api
        self._blocks = blocks
        self._pipeline = pipeline
        self._transfers = transfers
        self.stats = stats if stats is not None else SendStats()

    async def send(
        self,
        fresh: Sequence[tuple[int, cdc.Span]],
        read: Reader,
        transfer: Transfer | None = None,
    ) -> Results:
        """Store every `(index, span)`; answer `index → (ref, key)` for each.

        Raises:
            Offline / ApiError: after the retries; chunks already held stay held.
            StaleChunk: the bytes changed between hashing and sealing.
        """
        results: Results = {}
        batch_send, batch_recv = trio.open_memory_channel[_Batch](0)
        held_send, held_recv = trio.open_memory_channel[tuple[str, str, int]](math.inf)

        async def consume_all() -> None:
            async with held_send, batch_recv:
                await run_all(
                    functools.partial(
                        self._consume, batch_recv.clone(), held_send.clone(), results, transfer
                    )
                    for _ in range(CONSUMERS)
                )

        await run_all(
            [
                functools.partial(self._hold_loop, held_recv),
                functools.partial(self._produce, fresh, read, batch_send),
                consume_all,
            ]
        )
        return results

    async def _produce(
        self,
        fresh: Sequence[tuple[int, cdc.Span]],
        read: Reader,
        out: trio.MemorySendChannel[_Batch],
    ) -> None:
        async with out:
            start = 0
            while start < len(fresh):
                end, size = start, 0
                while end < len(fresh) and end - start < BATCH_CHUNKS:
                    if end > start and size + fresh[end][1].length > BATCH_BYTES:
                        break
                    size += fresh[end][1].length
                    end += 1
                items = list(fresh[start:end])
                start = end
                datas: list[bytes | None] = [await read(span) for _, span in items]
                batch = _Batch(items, datas, [ChunkHash("")] * len(items))
                await run_all(functools.partial(self._hash, batch, i) for i in range(len(items)))
                try:
                    await out.send(batch)
                except trio.BrokenResourceError:
                    return  # the consumers stopped on an error: theirs is the one to raise

    async def _hash(self, batch: _Batch, i: int) -> None:
        data = batch.datas[i]
        assert data is not None
        batch.hashes[i] = await self._pipeline.hash(data)

    async def _consume(
        self,
        batches: trio.MemoryReceiveChannel[_Batch],
        held: trio.MemorySendChannel[tuple[str, str, int]],
        results: Results,
        transfer: Transfer | None,
    ) -> None:
        async with batches, held:
            async for batch in batches:
                await self._send_batch(batch, held, results, transfer)

    async def _send_batch(
        self,
        batch: _Batch,
        held: trio.MemorySendChannel[tuple[str, str, int]],
        results: Results,
        transfer: Transfer | None,
    ) -> None:
        wanted = sorted(set(batch.hashes))
        prepared = await with_retry(lambda: self._api.prepare_chunks(wanted), what="prepare")
        by_hash = {p.hash: p for p in prepared}
        to_seal: dict[ChunkHash, int] = {}
        for i, ((index, span), digest) in enumerate(zip(batch.items, batch.hashes, strict=True)):
            answer = by_hash[digest]
            if _can_skip(answer):
                assert answer.object is not None
                assert answer.stored_size is not None
                ref = ChunkRef(
                    span.offset, span.length, digest, ObjectName(answer.object), answer.stored_size
                )
                results[index] = (ref, ChunkKey(answer.key))
                batch.datas[i] = None
                self.stats.chunks_skipped += 1
                if transfer is not None:
                    transfer.add(span.length)
            else:
                to_seal.setdefault(digest, i)
        sealed: dict[ChunkHash, SealedChunk] = {}

        async def seal(digest: ChunkHash, i: int) -> None:
            data = batch.datas[i]
            assert data is not None
            sealed[digest] = await self._pipeline.seal(
                data, by_hash[digest].key, expected_hash=digest
            )

        await run_all(functools.partial(seal, d, i) for d, i in to_seal.items())
        batch.datas = [None] * len(batch.items)  # the plaintext is not needed any more
        if sealed:
            await self._put_all(list(sealed.values()), held, batch, transfer)
        for (index, span), digest in zip(batch.items, batch.hashes, strict=True):
            chunk = sealed.get(digest)
            if chunk is not None:
                results[index] = (chunk.ref(span.offset), ChunkKey(by_hash[digest].key))

    async def _put_all(
        self,
        chunks: list[SealedChunk],
        held: trio.MemorySendChannel[tuple[str, str, int]],
        batch: _Batch,
        transfer: Transfer | None,
    ) -> None:
        sizes: dict[str, int] = {}
        for (_, span), digest in zip(batch.items, batch.hashes, strict=True):
            sizes[digest] = sizes.get(digest, 0) + span.length
        # A PUT that completed just before an interruption (the hold after it never got
        # through) is confirmed by the store now, and not sent again.
        claims = [(c.hash, c.object, c.size) for c in chunks]
        already = await with_retry(lambda: self._api.hold_chunks(claims), what="hold")
        if already:
            for chunk in chunks:
                if chunk.object in already and transfer is not None:
                    transfer.add(sizes.get(chunk.hash, chunk.size))
            self.stats.chunks_skipped += sum(1 for c in chunks if c.object in already)
            chunks = [c for c in chunks if c.object not in already]
            if not chunks:
                return
        wanted = [(c.object, c.stored_size) for c in chunks]
        urls = await with_retry(lambda: self._api.upload_urls(wanted), what="upload-urls")
        by_object = {u.object: u for u in urls}

        async def renew(chunk: SealedChunk) -> Presigned:
            (url,) = await self._api.upload_urls([(chunk.object, chunk.stored_size)])
            return url

        async def put_once(chunk: SealedChunk, url: Presigned) -> None:
            async with self._transfers.slots:
                await self._blocks.put(url, chunk.ciphertext, limit=self._transfers.up)

        async def put(chunk: SealedChunk) -> None:
            await self._transfers.gate.run(
                lambda: with_fresh_url(
                    by_object[chunk.object],
                    functools.partial(put_once, chunk),
                    functools.partial(renew, chunk),
                    what="chunk PUT",
                )
            )
            self.stats.chunks_uploaded += 1
            self.stats.bytes_uploaded += chunk.stored_size
            if transfer is not None:
                transfer.add(sizes.get(chunk.hash, chunk.size))
            held.send_nowait((chunk.hash, chunk.object, chunk.size))

        await run_all(functools.partial(put, chunk) for chunk in chunks)

    async def _hold_loop(self, held: trio.MemoryReceiveChannel[tuple[str, str, int]]) -> None:
        """Record uploaded chunks as held, in batches of whatever arrived meanwhile.

        Holding only saves re-sending after an interruption: the commit would confirm
        the uploads anyway, so a failed hold is logged, not raised.
        """
        async with held:
            async for first in held:
                items = [first]
                while len(items) < HOLD_BATCH:
                    try:
                        items.append(held.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                try:
                    await with_retry(functools.partial(self._api.hold_chunks, items), what="hold")
                except Exception as exc:
                    if not is_temp_failure(exc):
                        raise
                    log.info("could not record %d uploaded chunks as held: %s", len(items), exc)


def _can_skip(answer: PreparedChunk) -> bool:
    """True if the chunk need not be uploaded: present already (owned or held by this
    account), and named with its size.

    A `readable` answer that lacks the object or its `stored_size` cannot make a `ChunkRef`;
    the chunk is then sealed and uploaded like a new one (the store dedups the identical
    object), which costs bandwidth but never correctness.
    """
    return answer.readable and answer.object is not None and answer.stored_size is not None
