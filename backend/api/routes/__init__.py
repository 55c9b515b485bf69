"""One APIRouter per resource; `routers()` lists what the app mounts under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.routes import auth, blocks, changes, chunks, journal, nodes, revisions, watch
from backend.api.routes import links as links_routes
from backend.api.routes import shares as shares_routes
from backend.api.routes import versions as versions_routes

__all__ = ["API_PREFIX", "routers"]

API_PREFIX = "/api/v1"


def routers(*, embedded_store: bool) -> list[APIRouter]:
    """The routers to mount; the block routes only serve the embedded store."""
    mounted = [
        auth.public,
        auth.router,
        nodes.router,
        revisions.router,
        changes.router,
        chunks.router,
        journal.router,
        watch.router,
        versions_routes.router,
        shares_routes.router,
        links_routes.router,
    ]
    return [*mounted, blocks.router] if embedded_store else mounted
