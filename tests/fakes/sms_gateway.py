"""A local HTTP SMS gateway that records each request: the other side of ``provider: http``.

Every request (any method, any path) is recorded as a :class:`GatewayRequest`, in arrival order,
with its method, path, query, headers, raw body, the fields it carried (a JSON body as parsed, or
the form and query fields as lists) and the addresses found in them: a ``to`` that is a string
(split at commas) or a list, or the ``to`` of each item of ``destinations``.

By default it answers ``200`` with a JSON body that names each address::

    {"status": "ok", "data": {"message_id": "gw-7",
     "messages": [{"to": "<address>", "id": "gw-7-0", "status": "queued"}, ...]}}

and an address in :attr:`FakeSmsGateway.refused` gets ``"status": "rejected"`` in that list
(a gateway that accepts a bulk request but refuses one of its numbers). While
:attr:`FakeSmsGateway.outage` is set, every request gets that answer. Scripted answers, per
address (matched against any address of the request), come first, in order::

    gateway.script("9812345678", GatewayReply(status=500))          # once, then the default
    gateway.script("9812345679", GatewayReply(status=400, body={"error": "invalid number"}, times=None))

It runs in a test's loop (``async with FakeSmsGateway() as gateway``) or in a thread of its own
(``tests.fakes.background.BackgroundServer``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.local_http import serve, take_scripted

__all__ = ["FakeSmsGateway", "GatewayReply", "GatewayRequest"]


@dataclass
class GatewayReply:
    """One scripted answer, given ``times`` times (``None``: forever). ``body`` is JSON, or
    the default answer when None."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    retry_after: str | None = None
    times: int | None = 1


@dataclass(frozen=True)
class GatewayRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    #: The JSON body as parsed, or the form and query fields (``{name: [values]}``).
    fields: Any
    addresses: list[str]
    status: int
    #: The JSON answered (the default answer's ids are in it).
    answer: Any


@dataclass
class FakeSmsGateway:
    requests: list[GatewayRequest] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    url: str = ""
    #: While set, every request gets this answer (an outage), before any scripted one.
    outage: GatewayReply | None = None
    _scripts: dict[str, list[GatewayReply]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def __aenter__(self) -> FakeSmsGateway:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._receive)
        self._runner, self.url = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def script(self, address: str, *replies: GatewayReply) -> None:
        self._scripts.setdefault(address, []).extend(replies)

    def refuse(self, address: str) -> None:
        self.refused.add(address)

    def to(self, address: str) -> list[GatewayRequest]:
        """The requests that carried ``address``."""
        return [r for r in self.requests if address in r.addresses]

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        fields = _fields(request, body)
        addresses = _addresses(fields)
        reply = self.outage or next(
            (r for a in addresses if (r := take_scripted(self._scripts, a)) is not None), None
        )
        status = reply.status if reply is not None else 200
        if reply is not None and reply.body is not None:
            answer = reply.body
        else:
            n = next(self._ids)
            messages = [
                {
                    "to": a,
                    "id": f"gw-{n}-{i}",
                    "status": "rejected" if a in self.refused else "queued",
                }
                for i, a in enumerate(addresses)
            ]
            answer = {"status": "ok", "data": {"message_id": f"gw-{n}", "messages": messages}}
        self.requests.append(
            GatewayRequest(
                method=request.method,
                path=request.path,
                query=list(request.query.items()),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                fields=fields,
                addresses=addresses,
                status=status,
                answer=answer,
            )
        )
        if reply is not None and reply.delay:
            await asyncio.sleep(reply.delay)
        headers = {"Retry-After": reply.retry_after} if reply and reply.retry_after else {}
        return web.json_response(answer, status=status, headers=headers)


def _fields(request: web.Request, body: bytes) -> Any:
    if request.content_type == "application/json":
        return json.loads(body)
    out: dict[str, list[str]] = {}
    for key, value in request.query.items():
        out.setdefault(key, []).append(value)
    if request.content_type == "application/x-www-form-urlencoded":
        for key, value in parse_qsl(body.decode(), keep_blank_values=True):
            out.setdefault(key, []).append(value)
    return out


def _addresses(fields: Any) -> list[str]:
    if not isinstance(fields, dict):
        return []
    to = fields.get("to")
    if isinstance(to, str):
        return [a for a in to.split(",") if a]
    if isinstance(to, list):
        return [a for item in to for a in str(item).split(",") if a]
    destinations = fields.get("destinations")
    if isinstance(destinations, list):
        return [str(d.get("to")) for d in destinations if isinstance(d, dict)]
    return []
