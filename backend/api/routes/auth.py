"""Accounts, login, `me`, devices and revocation; health (protocol.md § Auth)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from backend.api.answers import answer
from backend.api.deps import CurrentDevice, CurrentSettings, Db
from backend.api.errors import responses
from backend.api.schemas import (
    AccountIn,
    AccountOut,
    DeviceOut,
    DevicesOut,
    HealthOut,
    LoginIn,
    LoginOut,
    MeOut,
)
from backend.services import accounts, ratelimit
from backend.services.errors import RegistrationClosed, Unauthorized
from backend.services.types import DeviceId

__all__ = ["public", "router"]

public = APIRouter(tags=["auth"], responses=responses(400))
"""Routes that need no token."""
router = APIRouter(tags=["auth"], responses=responses(400, 401))


@public.get("/health")
def health() -> HealthOut:
    return HealthOut()


@public.post("/accounts", status_code=status.HTTP_201_CREATED, responses=responses(403, 409))
def create_account(body: AccountIn, db: Db, settings: CurrentSettings) -> AccountOut:
    """Register an account with an empty root directory (unless registration is closed)."""
    if settings.no_registration:
        raise RegistrationClosed("registration is closed on this server")
    made = accounts.create_account(db, body.name, body.password, settings.default_quota_bytes)
    return AccountOut(account_id=made.id, name=made.name)


@public.post("/login", responses=responses(401, 429))
def login(body: LoginIn, db: Db, settings: CurrentSettings, request: Request) -> LoginOut:
    """Make a new device for the account; its token is shown this once. Failed attempts
    are limited per account name and per source address (429 with `Retry-After`)."""
    limits = ratelimit.limits_of(settings)
    keys = [f"login:{body.name}", ratelimit.address_key(request)]
    ratelimit.check(db, keys, limits)
    try:
        made = accounts.login(db, body.name, body.password, body.device_label)
    except Unauthorized:
        ratelimit.record_failure(db, keys, limits)
        raise
    return LoginOut(account_id=made.account_id, device_id=made.device_id, token=made.token)


@router.get("/me", response_model=MeOut)
def me(who: CurrentDevice, db: Db, settings: CurrentSettings) -> Response:
    with db.read() as conn:
        found = accounts.me(conn, who)
    return answer(MeOut.of(found, settings.max_file_bytes))


@router.get("/devices", response_model=DevicesOut)
def devices(who: CurrentDevice, db: Db) -> Response:
    with db.read() as conn:
        listed = accounts.list_devices(conn, who)
    return answer(DevicesOut(devices=[DeviceOut.of(d, d.id == who.device_id) for d in listed]))


@router.delete(
    "/devices/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404),
)
def revoke_device(device_id: Annotated[uuid.UUID, Path()], who: CurrentDevice, db: Db) -> Response:
    """Revoke a device of this account (possibly the caller): its token stops working now."""
    with db.write() as conn:
        accounts.revoke_device(conn, who, DeviceId(str(device_id)))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
