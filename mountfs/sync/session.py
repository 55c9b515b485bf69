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
from mountfs.sync.carry import Carry
from mountfs.sync.conflicts import Resolver
from mountfs.sync.engine import SyncEngine
from mountfs.sync.fetch import Fetcher
from mountfs.sync.push import Pusher
from mountfs.sync.transfers import Transfers
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
    transfers: Transfers

    @classmethod
    def open(cls, device: DeviceInfo, transfers: Transfers | None = None) -> Transport:
        """`transfers`: the pause gate, bandwidth limits and progress (default: none)."""
        transfers = transfers if transfers is not None else Transfers()
        api_client = api_http(device.server, device.token, device.ca_file)
        block_client = blocks_http(max(BLOCK_CONNECTIONS, 2 * transfers.in_flight), device.ca_file)
        return cls(
            device,
            ApiClient(api_client),
            BlockClient(block_client),
            ChunkPipeline(),
            (api_client, block_client),
            transfers,
        )

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def build_fetcher(transport: Transport, db: StateDb, cache: BlockCache) -> Fetcher:
    return Fetcher(
        db,
        cache,
        transport.api,
        transport.blocks,
        transport.pipeline,
        transfers=transport.transfers,
    )


def build_engine(
    transport: Transport,
    db: StateDb,
    cache: BlockCache,
    fetcher: Fetcher,
    *,
    invalidator: Invalidator,
    purge_if_unused: Callable[[InodeNo], object],
    is_open_for_write: Callable[[InodeNo], bool],
    in_use: Callable[[InodeNo], bool] = lambda ino: False,
    on_content: Callable[[InodeNo], object] = lambda ino: None,
    carry: Callable[[Carry], object] | None = None,
) -> SyncEngine:
    """The engine over a built vfs (or, without a mount, over no-op hooks).

    `in_use`: whether the kernel or a handle references an inode (`Inodes.in_use`).
    `on_content`: told of each file whose remote content changed (`Pinner.kick`).
    `carry`: takes cached chunks over to a file's new revision (`Carrier.submit`).
    """

    def on_deleted(node_id: NodeId) -> None:
        node = nodes.by_node_id(db.conn, node_id)
        if node is not None and not node.linked:
            purge_if_unused(node.ino)

    device = transport.device
    uploader = Uploader(
        db,
        cache,
        transport.api,
        transport.blocks,
        transport.pipeline,
        fetcher,
        transport.transfers,
    )
    applier = RemoteApplier(
        db,
        cache,
        invalidator,
        purge_if_unused,
        owner=(os.getuid(), os.getgid()),
        device_label=device.device_label,
        device_id=device.device_id,
        in_use=in_use,
        is_open_for_write=is_open_for_write,
        on_content=on_content,
        carry=carry,
    )
    resolver = Resolver(db, transport.api, applier, uploader, device.device_label, device.device_id)
    engine = SyncEngine(
        db,
        transport.api,
        Pusher(db, transport.api, on_deleted, resolver),
        uploader,
        applier,
        device.namespace_id,
        is_open_for_write,
    )
    engine.resolver = resolver
    return engine
