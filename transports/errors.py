"""How a transport says a send failed, and whether trying again can help.

::

    TransportError            (switchboard.errors.SwitchboardError)
    ├── RetryableError        try again later: 429, 5xx, timeouts, dropped connections
    ├── PermanentError        trying again cannot help: invalid number, bad token, 4xx
    │   └── SuppressedError   the recipient opted out or is scrubbed: never send again
    └── Withdrawn             not sent at all: cancelled, or opted out, at the last moment

Callers decide by class (or by the ``retryable`` / ``suppressed`` flags), never by matching
messages. ``retry_after`` carries a provider's ``Retry-After`` in seconds. An exception that is
not a TransportError is a bug or an unknown provider behaviour: the dispatcher treats it as
retryable a bounded number of times (see ``streams/dispatch.py``).
"""

from __future__ import annotations

from typing import ClassVar

from switchboard.errors import SwitchboardError
from switchboard.status import Status

__all__ = ["PermanentError", "RetryableError", "SuppressedError", "TransportError", "Withdrawn"]


class TransportError(SwitchboardError):
    """A send failed. ``code`` is the provider's error code (or ours), as a string."""

    retryable: ClassVar[bool] = False
    suppressed: ClassVar[bool] = False

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after


class RetryableError(TransportError):
    retryable = True


class PermanentError(TransportError):
    pass


class SuppressedError(PermanentError):
    suppressed = True


class Withdrawn(TransportError):
    """The message was withdrawn before it reached the provider: nothing was sent. ``status``
    is what the delivery becomes (``cancelled``: its session was cancelled; ``suppressed``: its
    recipient opted out meanwhile)."""

    def __init__(self, message: str, *, status: Status, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
