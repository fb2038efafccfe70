"""Channel adapters: one small interface (:class:`Transport`), one module per provider."""

from transports.base import OutboundMessage, SendResult, Transport
from transports.errors import PermanentError, RetryableError, SuppressedError, TransportError

__all__ = [
    "OutboundMessage",
    "PermanentError",
    "RetryableError",
    "SendResult",
    "SuppressedError",
    "Transport",
    "TransportError",
]
