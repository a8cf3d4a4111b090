"""The asyncio future behind every ``*_async`` awaitable of the native module."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional


class OvmFuture(asyncio.Future):  # type: ignore[type-arg]
    """An asyncio future that the ovm runtime completes.

    Cancelling it also drops the Rust future that would have completed it (the wait
    stops; a job it waited for goes on). That is done here, in ``cancel``, rather than
    by a done-callback: every way asyncio cancels an awaited future (``Task.cancel``,
    ``gather``, ``wait_for``) calls this method, and a callback would cost a call on
    the event loop for every future that completes normally.
    """

    __slots__ = ("_ovm_abort",)

    _ovm_abort: Optional[Callable[[], None]]

    def cancel(self, msg: Optional[Any] = None) -> bool:
        if not super().cancel(msg):
            return False
        abort = getattr(self, "_ovm_abort", None)
        if abort is not None:
            self._ovm_abort = None
            abort()
        return True
