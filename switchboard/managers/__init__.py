"""Service managers: Spoke-style extensions that hook into sending (README: "Service managers"). Pure.

* :mod:`switchboard.managers.hooks`: what a manager is (:class:`ServiceManager`,
  :class:`ServiceManagerBase`) and what its hooks receive and answer (the contexts).
* :mod:`switchboard.managers.state`: the :class:`ManagerState` protocol, with
  :class:`MemoryState` and :class:`KeyValueState`.
* :mod:`switchboard.managers.registry`: the :class:`Registry` of built-ins and entry points
  (group ``switchboard.service_managers``), and the checks of manager lists.
* :mod:`switchboard.managers.runner`: :class:`ServiceManagers`, which picks a client's
  managers and runs their hooks in order, merging what they return and containing their
  failures.
* :mod:`switchboard.managers.builtin`: ``numpicker-basic``, ``sticky-sender``,
  ``mms-when-cheaper``, ``scrub-bad-mobilenums``, ``carrier-lookup`` and
  ``per-client-messageservices``.
* :mod:`switchboard.managers.lookup`: line type lookups, and Twilio Lookup v2 as a pure
  request builder and answer parser around an injected HTTP call.

Nothing here imports Kafka, Faust or an HTTP client: the stream processor supplies the state
(a replicated table) and the HTTP call.
"""

from __future__ import annotations

from switchboard.managers.builtin import BUILTINS
from switchboard.managers.hooks import (
    HOOKS,
    CarrierInfo,
    HookName,
    ManagerFactory,
    OptOutContext,
    ReportContext,
    Scrub,
    SendContext,
    SendMessage,
    ServiceManager,
    ServiceManagerBase,
    SessionCompleteContext,
    SessionStartContext,
    SessionStartResult,
    carrier_from_detail,
    channel_options,
    hooks_of,
)
from switchboard.managers.lookup import (
    HttpRequest,
    HttpResponse,
    LineType,
    LineTypeLookup,
    LookupFailed,
    TwilioLineTypeLookup,
)
from switchboard.managers.registry import (
    ENTRY_POINT_GROUP,
    Registry,
    UnknownServiceManager,
    check_names,
    parse_manager_list,
)
from switchboard.managers.runner import (
    DETAIL_KEY,
    Block,
    HookOutcome,
    ManagerError,
    Scrubbed,
    SendOutcome,
    ServiceManagers,
    SessionStartOutcome,
)
from switchboard.managers.state import BytesTable, KeyValueState, ManagerState, MemoryState

__all__ = [
    "BUILTINS",
    "DETAIL_KEY",
    "ENTRY_POINT_GROUP",
    "HOOKS",
    "Block",
    "BytesTable",
    "CarrierInfo",
    "HookName",
    "HookOutcome",
    "HttpRequest",
    "HttpResponse",
    "KeyValueState",
    "LineType",
    "LineTypeLookup",
    "LookupFailed",
    "ManagerError",
    "ManagerFactory",
    "ManagerState",
    "MemoryState",
    "OptOutContext",
    "Registry",
    "ReportContext",
    "Scrub",
    "Scrubbed",
    "SendContext",
    "SendMessage",
    "SendOutcome",
    "ServiceManager",
    "ServiceManagerBase",
    "ServiceManagers",
    "SessionCompleteContext",
    "SessionStartContext",
    "SessionStartOutcome",
    "SessionStartResult",
    "TwilioLineTypeLookup",
    "UnknownServiceManager",
    "carrier_from_detail",
    "channel_options",
    "check_names",
    "hooks_of",
    "parse_manager_list",
]
