"""A lean stand-in for Twilio's Messages API, for the benchmark: ``python -m bench.twilio_responder``.

It answers every ``POST .../Messages.json`` after a fixed latency with ``201`` and a
MessageInstance JSON body (what the official SDK parses), over HTTP/1.1 keep-alive, and does
nothing else: no checks, no recording. The real Twilio spends no CPU on the worker's machine,
so the benchmark's provider should spend as little as it can; the test suite's full fake
(``tests/fakes/twilio_server.py``) checks requests and records them, and costs as much CPU as a
small part of the worker it is measuring.

It runs in a process of its own (no GIL shared with the benchmark's Kafka consumer) and prints
its port on the first line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys

_HEAD_END = b"\r\n\r\n"
_counter = itertools.count()


def _answer() -> bytes:
    sid = f"SM{next(_counter):032x}"
    body = json.dumps(
        {
            "sid": sid,
            "status": "queued",
            "num_segments": "1",
            "num_media": "0",
            "from": "+14155550100",
            "to": "+14155550199",
            "body": "",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "account_sid": "AC" + "0" * 32,
            "uri": f"/2010-04-01/Accounts/AC/Messages/{sid}.json",
        }
    ).encode()
    head = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n"
    )
    return head + body


class _Responder(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + len(_HEAD_END) + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            asyncio.get_running_loop().call_later(self.latency, self._reply)

    def _reply(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_answer())


async def _serve(latency_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Responder(latency_ms / 1000), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    try:
        asyncio.run(_serve(args.latency_ms))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
