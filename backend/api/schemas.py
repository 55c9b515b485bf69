"""Pydantic wire models: exactly the JSON of docs/protocol.md, nothing else.

Input models reject wrong types, unknown shapes and out-of-range numbers (→ 400
`bad_request` via `backend.api.errors`); rules that need the database or more than one
value live in the services. Output models are built from service dataclasses with their
`of()` constructors, which are the only place wire and domain shapes meet.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backend.security import Keyring
from backend.services.errors import BadRequest, InvalidName
from backend.services.revisions import NewRevision
from backend.services.tree import NewNode, NodeChange
from backend.services.types import (
    ChunkRef,
    Device,
    JournalEntry,
    JournalOp,
    Me,
    Node,
    NodeId,
    NodeKind,
    ObjectName,
    PlainHash,
    PreparedChunk,
    Revision,
    RevisionId,
    RevisionKind,
)
from backend.services.validation import (
    MAX_BLOCK_BYTES,
    MAX_MODE,
    MAX_TARGET_BYTES,
    check_name,
    check_target,
)
from backend.store.base import PresignedRequest

MAX_BATCH = 1000
INT64 = 2**63 - 1024
"""Bound of 64-bit integer fields: the largest int64 a double holds exactly, so that JSON
tools that parse numbers as doubles agree with us on where the range ends."""


def _no_surrogates(value: str) -> str:
    """JSON escapes can carry lone surrogates, which no database can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("not valid UTF-8 (lone surrogate)") from exc
    return value


Text = Annotated[str, AfterValidator(_no_surrogates)]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A lower-case hex SHA-256 (plaintext hash or object name)."""


def _json_number(value: object) -> object:
    """Integers in bodies must be JSON numbers: `"0644"` or `true` are refused, never
    coerced (`1.0` is a JSON integer and accepted; `1.5` is refused by the int type)."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number, not a string or boolean")
    return value


_JSON_NUMBER = BeforeValidator(_json_number)
Int64 = Annotated[int, Field(ge=-INT64, le=INT64), _JSON_NUMBER]
Size = Annotated[int, Field(ge=0, le=INT64), _JSON_NUMBER]
Mode = Annotated[int, Field(ge=0, le=MAX_MODE), _JSON_NUMBER]
StoredSize = Annotated[int, Field(ge=1, le=MAX_BLOCK_BYTES), _JSON_NUMBER]


def _valid_name(value: str) -> str:
    """The service's name rule, applied at the edge too so that a batch with a bad name is
    refused as a whole; the error type makes the answer `invalid_name` (api/errors.py)."""
    try:
        check_name(value)
    except InvalidName as exc:
        raise PydanticCustomError("invalid_name", exc.detail) from exc
    return value


NodeName = Annotated[
    Text,
    AfterValidator(_valid_name),
    Field(
        description="1..255 bytes of UTF-8; not '.' or '..'; no '/' or NUL "
        "(else 400 `invalid_name`).",
        json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": r"^(?!\.{1,2}$)[^/\x00]+$"},
    ),
]
"""The JSON schema can only say 255 *characters*; the rule is 255 bytes of UTF-8."""
AccountName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Password = Annotated[Text, StringConstraints(min_length=8, max_length=1024)]


def compact(model: BaseModel) -> dict[str, Any]:
    """JSON of `model` without its top-level null fields (`current?`, `missing?`, ...);
    nested objects keep their nulls (a node's `parent_id: null` is information)."""
    return {k: v for k, v in model.model_dump(mode="json").items() if v is not None}


class Model(BaseModel):
    """Input: unknown fields are refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- errors and health -----------------------------------------------------------------


class NodeOut(Out):
    id: str
    parent_id: str | None
    name: str
    kind: NodeKind
    mode: int
    mtime_ns: int
    size: int
    version: int
    head_revision: str | None
    target: str | None
    deleted: bool
    namespace_id: str

    @classmethod
    def of(cls, node: Node) -> NodeOut:
        return cls(
            id=node.id,
            parent_id=node.parent_id,
            name=node.name,
            kind=node.kind,
            mode=node.mode,
            mtime_ns=node.mtime_ns,
            size=node.size,
            version=node.version,
            head_revision=node.head_revision,
            target=node.target,
            deleted=node.deleted,
            namespace_id=node.namespace_id,
        )


class ErrorOut(Out):
    """Every 4xx/5xx body. `current` and `missing` appear only where protocol.md says."""

    error: str
    detail: str
    current: NodeOut | None = None
    missing: list[str] | None = None


class HealthOut(Out):
    status: Literal["ok"] = "ok"


# ---- accounts and devices --------------------------------------------------------------


class AccountIn(Model):
    name: AccountName
    password: Password


class AccountOut(Out):
    account_id: str
    name: str


class LoginIn(Model):
    name: Annotated[Text, StringConstraints(max_length=64)]
    password: Annotated[Text, StringConstraints(max_length=1024)]
    device_label: Annotated[Text, StringConstraints(min_length=1, max_length=200)]


class LoginOut(Out):
    account_id: str
    device_id: str
    token: str


class MeOut(Out):
    account_id: str
    name: str
    device_id: str
    device_label: str
    root_id: str
    namespace_id: str
    quota_bytes: int | None
    used_bytes: int
    max_file_bytes: int

    @classmethod
    def of(cls, me: Me, max_file_bytes: int) -> MeOut:
        return cls(
            account_id=me.account_id,
            name=me.name,
            device_id=me.device_id,
            device_label=me.device_label,
            root_id=me.root_id,
            namespace_id=me.namespace_id,
            quota_bytes=me.quota_bytes,
            used_bytes=me.used_bytes,
            max_file_bytes=max_file_bytes,
        )


class DeviceOut(Out):
    id: str
    label: str
    created_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None
    current: bool

    @classmethod
    def of(cls, device: Device, current: bool) -> DeviceOut:
        return cls(
            id=device.id,
            label=device.label,
            created_at=device.created_at,
            last_seen_at=device.last_seen_at,
            revoked_at=device.revoked_at,
            current=current,
        )


class DevicesOut(Out):
    devices: list[DeviceOut]


# ---- nodes -----------------------------------------------------------------------------


class NodeIn(Model):
    """`POST /nodes`. A symlink needs a `target` (1..4096 bytes); other kinds have none."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "symlink"}}},
            "then": {
                "required": ["target"],
                "properties": {
                    "target": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_TARGET_BYTES,
                        "pattern": r"^[^\x00]+$",
                    }
                },
            },
            "else": {"properties": {"target": {"type": "null"}}},
        },
    )

    id: uuid.UUID
    parent_id: uuid.UUID
    name: NodeName
    kind: NodeKind
    mode: Mode
    mtime_ns: Int64
    target: Text | None = None

    @model_validator(mode="after")
    def _target_matches_kind(self) -> Self:
        try:
            check_target(self.kind, self.target)
        except BadRequest as exc:
            raise PydanticCustomError("target", exc.detail) from exc
        return self

    def to_new(self) -> NewNode:
        return NewNode(
            id=NodeId(str(self.id)),
            parent_id=NodeId(str(self.parent_id)),
            name=self.name,
            kind=self.kind,
            mode=self.mode,
            mtime_ns=self.mtime_ns,
            target=self.target,
        )


class NodePatch(Model):
    """`PATCH /nodes/{id}`: absent (or null) fields stay as they are."""

    base_version: Size
    parent_id: uuid.UUID | None = None
    name: NodeName | None = None
    mode: Mode | None = None
    mtime_ns: Int64 | None = None
    replace_id: uuid.UUID | None = None
    replace_version: Size | None = None

    def to_change(self) -> NodeChange:
        return NodeChange(
            base_version=self.base_version,
            parent_id=NodeId(str(self.parent_id)) if self.parent_id else None,
            name=self.name,
            mode=self.mode,
            mtime_ns=self.mtime_ns,
            replace_id=NodeId(str(self.replace_id)) if self.replace_id else None,
            replace_version=self.replace_version,
        )


class ChildrenOut(Out):
    items: list[NodeOut]
    next_cursor: str | None


# ---- revisions -------------------------------------------------------------------------


class ChunkRefIn(Model):
    offset: Size
    size: Size
    hash: Hex64
    object: Hex64
    stored_size: StoredSize

    def to_ref(self) -> ChunkRef:
        return ChunkRef(
            offset=self.offset,
            size=self.size,
            hash=PlainHash(self.hash),
            object=ObjectName(self.object),
            stored_size=self.stored_size,
        )


class ChunkRefOut(Out):
    offset: int
    size: int
    hash: str
    object: str
    stored_size: int
    key: str


class CommitIn(Model):
    revision_id: uuid.UUID
    base_revision: uuid.UUID | None
    size: Size
    mtime_ns: Int64
    chunks: list[ChunkRefIn]

    def to_new(self) -> NewRevision:
        return NewRevision(
            revision_id=RevisionId(str(self.revision_id)),
            base_revision=RevisionId(str(self.base_revision)) if self.base_revision else None,
            size=self.size,
            mtime_ns=self.mtime_ns,
            chunks=tuple(r.to_ref() for r in self.chunks),
        )


class RevisionSummaryOut(Out):
    """A revision in a history listing (no manifest)."""

    id: str
    node_id: str
    base_revision: str | None
    device_id: str
    kind: RevisionKind
    size: int
    mtime_ns: int
    created_at: datetime

    @classmethod
    def of(cls, rev: Revision) -> RevisionSummaryOut:
        return cls(
            id=rev.id,
            node_id=rev.node_id,
            base_revision=rev.base_revision,
            device_id=rev.device_id,
            kind=rev.kind,
            size=rev.size,
            mtime_ns=rev.mtime_ns,
            created_at=rev.created_at,
        )


class RevisionOut(RevisionSummaryOut):
    """A revision with its manifest; every ref carries its chunk key."""

    chunks: list[ChunkRefOut]

    @classmethod
    def keyed(cls, rev: Revision, keys: Keyring) -> RevisionOut:
        refs = [
            ChunkRefOut(
                offset=r.offset,
                size=r.size,
                hash=r.hash,
                object=r.object,
                stored_size=r.stored_size,
                key=keys.key_b64(r.hash),
            )
            for r in rev.chunks or ()
        ]
        return cls(
            id=rev.id,
            node_id=rev.node_id,
            base_revision=rev.base_revision,
            device_id=rev.device_id,
            kind=rev.kind,
            size=rev.size,
            mtime_ns=rev.mtime_ns,
            created_at=rev.created_at,
            chunks=refs,
        )


class RevisionsOut(Out):
    items: list[RevisionSummaryOut]


class CommitOut(Out):
    node: NodeOut
    revision: RevisionOut


# ---- batched changes -------------------------------------------------------------------


class CreateOp(NodeIn):
    op: Literal["create"]
    op_id: uuid.UUID


class UpdateOp(NodePatch):
    op: Literal["update"]
    op_id: uuid.UUID
    id: uuid.UUID


class DeleteOp(Model):
    op: Literal["delete"]
    op_id: uuid.UUID
    id: uuid.UUID
    base_version: Size


class CommitOp(CommitIn):
    op: Literal["commit"]
    op_id: uuid.UUID
    id: uuid.UUID


class RestoreOp(Model):
    """Bring a deleted node back in place, for a change that must survive a concurrent
    delete (`tree.restore_node`); `name` if its old name is taken now."""

    op: Literal["restore"]
    op_id: uuid.UUID
    id: uuid.UUID
    name: NodeName | None = None


Op = Annotated[CreateOp | UpdateOp | DeleteOp | CommitOp | RestoreOp, Field(discriminator="op")]


class ChangesIn(Model):
    ops: Annotated[list[Op], Field(max_length=MAX_BATCH)]
    stop_at_refusal: bool = False
    """Stop at the first op that is not applied: the later ops are answered 424
    `not_attempted` and left untouched, so a batch never runs out of order."""


class ChangeResult(Out):
    """One op's answer: `status` is the HTTP status the single route would have given."""

    status: int
    node: NodeOut | None = None
    revision: RevisionOut | None = None
    error: str | None = None
    detail: str | None = None
    current: NodeOut | None = None
    missing: list[str] | None = None
    cursor: int | None = None


class ChangesOut(Out):
    results: list[ChangeResult]


# ---- chunks ----------------------------------------------------------------------------


class PrepareIn(Model):
    hashes: Annotated[list[Hex64], Field(max_length=MAX_BATCH)]


class PreparedOut(Out):
    hash: str
    key: str
    object: str | None
    stored_size: int | None
    readable: bool

    @classmethod
    def of(cls, prepared: PreparedChunk, keys: Keyring) -> PreparedOut:
        return cls(
            hash=prepared.hash,
            key=keys.key_b64(prepared.hash),
            object=prepared.object,
            stored_size=prepared.stored_size,
            readable=prepared.object is not None,
        )


class PrepareOut(Out):
    chunks: list[PreparedOut]


class UploadObjectIn(Model):
    object: Hex64
    size: StoredSize


class UploadUrlsIn(Model):
    objects: Annotated[list[UploadObjectIn], Field(max_length=MAX_BATCH)]


class ReadUrlsIn(Model):
    objects: Annotated[list[Hex64], Field(max_length=MAX_BATCH)]


class HoldChunkIn(Model):
    hash: Hex64
    object: Hex64
    size: Annotated[int, Field(ge=0, le=MAX_BLOCK_BYTES), _JSON_NUMBER]


class HoldIn(Model):
    chunks: Annotated[list[HoldChunkIn], Field(max_length=MAX_BATCH)]


class HeldOut(Out):
    object: str
    stored_size: int


class HoldOut(Out):
    held: list[HeldOut]
    missing: list[str]


class UrlOut(Out):
    object: str
    url: str
    method: Literal["PUT", "GET"]
    headers: dict[str, str]
    expires_at: datetime

    @classmethod
    def of(cls, object: str, request: PresignedRequest) -> UrlOut:
        method: Literal["PUT", "GET"] = "PUT" if request.method == "PUT" else "GET"
        return cls(
            object=object,
            url=request.url,
            method=method,
            headers=dict(request.headers),
            expires_at=request.expires_at,
        )


class UrlsOut(Out):
    urls: list[UrlOut]


class BlockOut(Out):
    """Answer to a block PUT (the same whether or not the object existed before)."""

    object: str
    size: int


# ---- journal ---------------------------------------------------------------------------


class EntryShareOut(Out):
    """What a `share` journal entry says about the share (docs/protocol.md § Shares)."""

    id: str
    owner: str
    by: str
    change: Literal["offered", "role", "ended"]
    role: Literal["viewer", "editor"]
    state: Literal["pending", "accepted", "revoked"]


class EntryOut(Out):
    seq: int
    op: JournalOp
    node: NodeOut
    revision: RevisionOut | None
    device_id: str | None  # None: made by the service for the account (a restore)
    at: datetime
    share: EntryShareOut | None = None

    @classmethod
    def of(cls, entry: JournalEntry, keys: Keyring) -> EntryOut:
        return cls(
            seq=entry.seq,
            op=entry.op,
            node=NodeOut.of(entry.node),
            revision=RevisionOut.keyed(entry.revision, keys) if entry.revision else None,
            device_id=entry.device_id,
            at=entry.at,
            share=EntryShareOut.model_validate(entry.share) if entry.share else None,
        )


class JournalOut(Out):
    entries: list[EntryOut]
    cursor: int
    has_more: bool
