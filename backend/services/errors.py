"""The domain errors a service raises when a request cannot be applied.

Every one of them means "nothing changed" (the transaction is rolled back). They carry no
HTTP knowledge: `backend.api.errors` is the one table that turns each class into a status
and a wire code. The tree:

    ServiceError
    ├── BadRequest            malformed in a way the wire schema could not see
    │   └── InvalidName
    ├── Unauthorized          no valid credentials
    ├── Forbidden             authenticated but not allowed (e.g. moving the root)
    │   └── RegistrationClosed
    ├── NotFound              absent, or belongs to someone else (never reveal which)
    ├── FileTooLarge
    └── Refused               a rule of the current state says no (409 family)
        ├── Conflict          precondition (base_version/base_revision) is stale
        ├── CrossShare        a move into or out of a shared folder (another namespace)
        ├── NestedShare       sharing inside (or around) an already shared folder
        ├── NameTaken         a live sibling has the name
        ├── Cycle, NotEmpty, NotADirectory, IdTaken, NameExists, QuotaExceeded
        └── MissingChunks     objects not durably uploaded by this account
"""

from __future__ import annotations

from collections.abc import Sequence

from backend.services.types import Node, ObjectName

__all__ = [
    "BadRequest",
    "Conflict",
    "CrossShare",
    "Cycle",
    "FileTooLarge",
    "Forbidden",
    "IdTaken",
    "InvalidName",
    "MissingChunks",
    "NameExists",
    "NameTaken",
    "NotADirectory",
    "NotEmpty",
    "NestedShare",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "Refused",
    "RegistrationClosed",
    "ServiceError",
    "Unauthorized",
]


class ServiceError(Exception):
    """Base class; `detail` is one human sentence for the answer's `detail` field."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServiceError):
    pass


class InvalidName(BadRequest):
    pass


class Unauthorized(ServiceError):
    pass


class Forbidden(ServiceError):
    pass


class RegistrationClosed(Forbidden):
    pass


class NotFound(ServiceError):
    pass


class FileTooLarge(ServiceError):
    pass


class Refused(ServiceError):
    """The request is well formed but the current state refuses it.

    Attributes:
        current: the node the client should look at (the node now, or the sibling that
            holds the name), when there is one.
    """

    def __init__(self, detail: str, current: Node | None = None) -> None:
        super().__init__(detail)
        self.current = current


class Conflict(Refused):
    pass


class NameTaken(Refused):
    pass


class CrossShare(Refused):
    pass


class NestedShare(Refused):
    pass


class RateLimited(ServiceError):
    """Too many failed password attempts; `retry_after` is in whole seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Cycle(Refused):
    pass


class NotEmpty(Refused):
    pass


class NotADirectory(Refused):
    pass


class IdTaken(Refused):
    pass


class NameExists(Refused):
    pass


class QuotaExceeded(Refused):
    pass


class MissingChunks(Refused):
    """Attributes: missing — the objects to upload, in manifest order, without repeats."""

    def __init__(self, missing: Sequence[ObjectName]) -> None:
        super().__init__(f"{len(missing)} chunk object(s) not uploaded by this account")
        self.missing = tuple(missing)
