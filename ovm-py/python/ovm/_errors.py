"""The exceptions of ovm: one base, one subclass per error of the Rust core.

Every exception carries the structured fields of its Rust variant as attributes (for
example ``NotFound.kind`` and ``NotFound.id``), and ``code``, a short stable name for
scripts. Where a builtin exception means the same thing, the class also derives from it:
``NotFound`` is a ``LookupError``, ``InvalidSpec`` a ``ValueError`` and ``TimeoutError``
the builtin ``TimeoutError``, so generic handlers keep working.
"""

from __future__ import annotations

import builtins
from typing import Any, ClassVar, Dict, Tuple, Type

__all__ = [
    "OvmError",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "InvalidSpec",
    "InvalidState",
    "Capacity",
    "Unsupported",
    "BackendError",
    "TimeoutError",
    "Timeout",
    "Aborted",
]


def _rebuild(cls: Type[OvmError], message: str, fields: Dict[str, Any]) -> OvmError:
    return cls(message, **fields)


class OvmError(Exception):
    """Base of every error raised by ovm."""

    #: Short stable name of the error, the same as the Rust ``Error::code()``.
    code: ClassVar[str] = "error"
    #: Names of the structured fields this class carries.
    fields: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, message: str, /, **fields: Any) -> None:
        super().__init__(message)
        unknown = set(fields) - set(type(self).fields)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no field(s) {', '.join(sorted(unknown))}"
            )
        for name in type(self).fields:
            setattr(self, name, fields.get(name))

    def to_dict(self) -> Dict[str, Any]:
        """The error as plain data: ``code``, ``message`` and the structured fields."""
        d: Dict[str, Any] = {"code": self.code, "message": str(self)}
        for name in type(self).fields:
            d[name] = getattr(self, name)
        return d

    def __reduce__(self) -> Tuple[Any, ...]:
        fields = {name: getattr(self, name) for name in type(self).fields}
        return (_rebuild, (type(self), str(self), fields))


class NotFound(OvmError, LookupError):
    """The object does not exist."""

    code = "not_found"
    fields = ("kind", "id")
    #: What kind of object (``vm``, ``server``, ``pool``, ...).
    kind: str
    #: The id or name that was looked up.
    id: str


class AlreadyExists(OvmError):
    """The object already exists (usually: a name is taken)."""

    code = "already_exists"
    fields = ("kind", "id")
    kind: str
    id: str


class Conflict(OvmError):
    """An update was based on a stale revision: someone else changed the object first."""

    code = "conflict"
    fields = ("kind", "id", "expected", "found")
    kind: str
    id: str
    #: The revision the writer based its change on (0: expected the object to be absent).
    expected: int
    #: The revision actually stored (0: absent).
    found: int


class InvalidSpec(OvmError, ValueError):
    """A specification or argument is invalid."""

    code = "invalid_spec"
    fields = ("field", "reason")
    #: The offending field, e.g. ``vm.memory_mib``.
    field: str
    #: Why it is refused.
    reason: str


class InvalidState(OvmError):
    """The operation is not allowed in the object's current state."""

    code = "invalid_state"
    fields = ("kind", "id", "state", "op")
    kind: str
    id: str
    #: The object's current state.
    state: str
    #: What was attempted.
    op: str


class Capacity(OvmError):
    """Not enough capacity (memory, CPU, servers, space) to do what was asked."""

    code = "capacity"
    fields = ("reason",)
    reason: str


class Unsupported(OvmError):
    """The backend does not support this operation."""

    code = "unsupported"
    fields = ("op", "backend")
    op: str
    backend: str


class BackendError(OvmError):
    """A backend (hypervisor, storage plugin, network, store) failed."""

    code = "backend"
    fields = ("backend", "message")
    #: Which backend failed.
    backend: str
    #: What it said.
    message: str


class TimeoutError(OvmError, builtins.TimeoutError):
    """A wait ran out of time. The operation itself goes on (abort it to stop it)."""

    code = "timeout"
    fields = ("what", "after")
    #: What was waited for.
    what: str
    #: How long was waited, in seconds.
    after: float


#: Alias of :class:`TimeoutError` named like the Rust variant.
Timeout = TimeoutError


class Aborted(OvmError):
    """The operation was aborted on request (and what it had done was undone)."""

    code = "aborted"
    fields = ("what",)
    what: str
