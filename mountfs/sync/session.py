"""Wiring the sync parts of one device: transport, fetcher, uploader, pusher, applier, engine.

The composition root (`mountfs.mount`, or `mountfs sync` without a mount) builds these in two
steps because the vfs and the sync engine need each other: the vfs reads missing bytes
through the `Fetcher`, and the engine's applier notifies the vfs's kernel invalidator and
purges through its inode table. So: `Transport.open()` and a `Fetcher` first, then the vfs,
then `build_engine()` over both.

The HTTP clients are created without a running event loop and must be closed with
`await transport.aclose()` inside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from mountfs.cache.block_cache import BlockCache
from mountfs.chunks.pipeline import ChunkPipeline
from mountfs.state import nodes
from mountfs.state.db import StateDb
from mountfs.sync.apply import Invalidator, RemoteApplier
from mountfs.sync.engine import SyncEngine
from mountfs.sync.fetch import Fetcher
from mountfs.sync.push import Pusher
from mountfs.sync.upload import Uploader
from mountfs.transport.api import ApiClient, api_http
from mountfs.transport.auth import DeviceInfo
from mountfs.transport.blocks import BlockClient, blocks_http
from mountfs.types import InodeNo, NodeId

BLOCK_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class Transport:
    """The device's API client, block client and chunk pipeline."""

    device: DeviceInfo
    api: ApiClient
    blocks: BlockClient
    pipeline: ChunkPipeline
    _clients: tuple[httpx.AsyncClient, ...]

    @classmethod
    def open(cls, device: DeviceInfo) -> Transport:
        api_client = api_http(device.server, device.token)
        block_client = blocks_http(BLOCK_CONNECTIONS)
        return cls(
            device,
            ApiClient(api_client),
            BlockClient(block_client),
            ChunkPipeline(),
            (api_client, block_client),
        )

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def build_fetcher(transport: Transport, db: StateDb, cache: BlockCache) -> Fetcher:
    return Fetcher(db, cache, transport.api, transport.blocks, transport.pipeline)


def build_engine(
    transport: Transport,
    db: StateDb,
    cache: BlockCache,
    fetcher: Fetcher,
    *,
    invalidator: Invalidator,
    purge_if_unused: Callable[[InodeNo], object],
    is_open_for_write: Callable[[InodeNo], bool],
) -> SyncEngine:
    """The engine over a built vfs (or, without a mount, over no-op hooks)."""

    def on_deleted(node_id: NodeId) -> None:
        node = nodes.by_node_id(db.conn, node_id)
        if node is not None and not node.linked:
            purge_if_unused(node.ino)

    device = transport.device
    return SyncEngine(
        db,
        transport.api,
        Pusher(db, transport.api, on_deleted),
        Uploader(db, cache, transport.api, transport.blocks, transport.pipeline, fetcher),
        RemoteApplier(
            db,
            cache,
            invalidator,
            purge_if_unused,
            owner=(os.getuid(), os.getgid()),
            device_label=device.device_label,
            device_id=device.device_id,
        ),
        device.namespace_id,
        is_open_for_write,
    )
