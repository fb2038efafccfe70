"""``switchboard``: the command-line tool.

::

    switchboard dev                      the embedded default: broker + worker, sandbox channels
    switchboard worker                   a worker (settings from SWITCHBOARD_* variables)
    switchboard kafka start|stop|status  a local single-node Kafka broker from Maven Central jars
    switchboard clients apply FILE       write clients.yaml to the clients topic
    switchboard clients add-key CLIENT   make an API key; print it once, store its digest
    switchboard clients list|show [CLIENT]
                                         the clients of a clients.yaml, secrets masked
    switchboard calls checksum --client C --campaign X NUMBER
                                         the target_checksum of a manual call target
    switchboard send ...                 send a message through the Send API
    switchboard status SESSION           a session's state (--watch: a live progress bar;
                                         --status deferred,failed: those deliveries and why)
    switchboard tail [--client ID]       follow the status topic, one line per event
    switchboard config                   the settings reference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cli import send_options
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.settings import Settings

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:6066"
EMBEDDED_RUN_DIR = Path(".switchboard")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
        return result
    except (SwitchboardError, ConfigError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="switchboard", description="Kafka-native communication service."
    )
    sub = p.add_subparsers(metavar="COMMAND")

    dev = sub.add_parser(
        "dev", help="run the embedded default: a local broker and a sandbox worker"
    )
    dev.add_argument("--clients", type=Path, default=Path("config/clients.yaml"))
    dev.set_defaults(run=_dev)

    worker = sub.add_parser("worker", help="run a worker")
    worker.add_argument("--web-port", type=int)
    worker.add_argument("--data-dir", type=Path)
    worker.set_defaults(run=_worker)

    kafka = sub.add_parser(
        "kafka", help="a local single-node Kafka broker (KRaft) from Maven Central"
    )
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch"])
    kafka.add_argument("--run-dir", type=Path, default=EMBEDDED_RUN_DIR / "kafka")
    kafka.add_argument("--port", type=int, default=19092)
    kafka.add_argument("--kafka-version", default=None)
    kafka.set_defaults(run=_kafka)

    clients = sub.add_parser("clients", help="client configuration")
    csub = clients.add_subparsers(metavar="ACTION", required=True)
    apply = csub.add_parser(
        "apply", help="validate a clients.yaml and write it to the clients topic"
    )
    apply.add_argument("file", type=Path)
    apply.set_defaults(run=_clients_apply)
    add_key = csub.add_parser("add-key", help="make a new API key for a client in a clients.yaml")
    add_key.add_argument("client")
    add_key.add_argument("--file", type=Path, default=Path("config/clients.yaml"))
    add_key.set_defaults(run=_clients_add_key)
    listing = csub.add_parser("list", help="the clients of a clients.yaml, one line each")
    listing.add_argument("--file", type=Path, default=Path("config/clients.yaml"))
    listing.set_defaults(run=_clients_list)
    show = csub.add_parser("show", help="a client's configuration, every secret masked")
    show.add_argument("client")
    show.add_argument("--file", type=Path, default=Path("config/clients.yaml"))
    show.set_defaults(run=_clients_show)

    calls = sub.add_parser("calls", help="the call tool")
    calls_sub = calls.add_subparsers(metavar="ACTION", required=True)
    checksum = calls_sub.add_parser(
        "checksum",
        help="print the target_checksum of a manual target (POST /api/call) for a campaign",
        description="Prints the target_checksum POST /api/call accepts with target_phone_number "
        "NUMBER for the campaign, keyed with the secret in the variable its checksum_secret_env "
        "names (which must be set here).",
    )
    checksum.add_argument("number", help="the target's number, international (+ and country code)")
    checksum.add_argument("--client", required=True)
    checksum.add_argument("--campaign", required=True)
    checksum.add_argument("--file", type=Path, default=Path("config/clients.yaml"))
    checksum.set_defaults(run=_calls_checksum)

    send = sub.add_parser("send", help="send a message through the Send API (or straight to Kafka)")
    whom = send.add_mutually_exclusive_group(required=True)
    whom.add_argument("--to", action="append", help="an address (repeat for more)")
    whom.add_argument(
        "--audience",
        type=Path,
        help="a file: one address per line, .jsonl profiles, or .csv with a header",
    )
    send.add_argument(
        "--via-kafka",
        action="store_true",
        help="produce the instruction (Avro) to the instructions topic instead of calling the API",
    )
    send.add_argument(
        "--client", help="the client id (needed with --via-kafka; the API key implies it otherwise)"
    )
    send.add_argument("--channel", choices=["sms", "email", "push", "voice", "whatsapp", "slack"])
    send.add_argument("--message", "-m", required=True)
    send.add_argument("--subject")
    send.add_argument("--file-url")
    send.add_argument("--idempotency-key")
    send_options.add_arguments(send)
    _api_options(send)
    send.set_defaults(run=_send)

    status = sub.add_parser("status", help="show a session")
    status.add_argument("session_id")
    status.add_argument(
        "--watch", action="store_true", help="a live progress bar until the session completes"
    )
    status.add_argument(
        "--interval", type=float, default=1.0, help="seconds between two polls with --watch"
    )
    status.add_argument(
        "--status",
        dest="statuses",
        action="append",
        default=[],
        metavar="STATUS[,STATUS]",
        help="only the deliveries in these statuses (repeatable, or a comma list), with why",
    )
    status.add_argument("--json", action="store_true", help="with --status: the deliveries as JSON")
    _api_options(status)
    status.set_defaults(run=_status)

    tail = sub.add_parser(
        "tail", help="follow the status topic (every worker's events), one line per event"
    )
    tail.add_argument("--client", help="only this client's events")
    tail.add_argument("--session", help="only this session's events")
    tail.add_argument(
        "--status", action="append", default=[], help="only events with this status (repeatable)"
    )
    tail.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest retained event instead of now",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line (for jq)")
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without an event"
    )
    tail.set_defaults(run=_tail)

    config = sub.add_parser("config", help="print the settings reference")
    config.add_argument("--markdown", action="store_true")
    config.add_argument(
        "--readme", type=Path, help="rewrite the settings table of this README in place"
    )
    config.set_defaults(run=_config)
    return p


def _kafka_settings() -> Settings:
    """The settings of a command that talks to Kafka, after the connection check: a refused
    password or an untrusted certificate is reported as such, not as a timed-out write."""
    from streams.kafka_security import check_kafka

    settings = Settings.from_env()
    check_kafka(settings)
    return settings


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", DEFAULT_URL))
    p.add_argument("--api-key", default=os.environ.get("SWITCHBOARD_API_KEY", "demo-key"))


# -- running ---------------------------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    overrides: dict[str, Any] = {}
    if args.web_port:
        overrides["web_port"] = args.web_port
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    run_worker(Settings.from_env(**overrides))
    return 0


def _dev(args: argparse.Namespace) -> int:
    """The embedded default of ``make run``: needs nothing but Java, Maven and this package."""
    from cli.kafka.local import LocalBroker
    from streams.worker import run_worker

    overrides: dict[str, Any] = {
        "sandbox": True,
        "clients_file": args.clients,
        "data_dir": EMBEDDED_RUN_DIR / "data",
        "sandbox_outbox": EMBEDDED_RUN_DIR / "outbox.jsonl",
    }
    if not os.environ.get("SWITCHBOARD_LOG_FORMAT"):
        overrides["log_format"] = "text"
    settings = Settings.from_env(**overrides)
    broker = LocalBroker(
        EMBEDDED_RUN_DIR / "kafka", port=int(settings.bootstrap_servers.rsplit(":", 1)[1])
    )
    print(
        f"Starting Kafka {broker.distribution.version} on {broker.bootstrap_servers} "
        f"(first run fetches its jars from Maven Central)...",
        flush=True,
    )
    started_here = broker.running_pid() is None
    if started_here:
        broker.start()
    try:
        run_worker(settings, on_ready=lambda: _announce(settings))
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if started_here:
            print("Stopping Kafka...", flush=True)
            broker.stop()
    return 0


def _announce(settings: Settings) -> None:
    url = settings.web_url
    body = json.dumps(
        {
            "transport": {"type": "email", "subject": "Hello", "message": "Hello {{name}}!"},
            "audience": [{"email": "ana@example.com", "name": "Ana"}],
        }
    )
    print(
        f"""
Switchboard is running on {url} (sandbox: nothing leaves this machine). Ctrl-C stops everything.

Send a first message:
  curl -s -X POST {url}/v1/messages -H 'Authorization: Bearer demo-key' \\
       -H 'Content-Type: application/json' -d '{body}'
  .venv/bin/switchboard send --channel sms --to +14155550100 -m 'Hello from Switchboard'

Then: .venv/bin/switchboard status <session_id>    (sandbox sends: {settings.sandbox_outbox})
      Console: {url}/console    (sign in with the API key demo-key)
      API document: {url}/openapi.json    metrics: {url}/metrics
""",
        flush=True,
    )


def _kafka(args: argparse.Namespace) -> int:
    from cli.kafka.local import DEFAULT_KAFKA_VERSION, KafkaDistribution, LocalBroker

    dist = KafkaDistribution(version=args.kafka_version or DEFAULT_KAFKA_VERSION)
    if args.action == "fetch":
        print(dist.ensure())
        return 0
    broker = LocalBroker(args.run_dir, distribution=dist, port=args.port)
    if args.action == "start":
        broker.start()
        print(
            f"Kafka {dist.version} running on {broker.bootstrap_servers} (pid {broker.running_pid()}, logs {broker.log_file})"
        )
    elif args.action == "stop":
        broker.stop()
        print("stopped")
    else:
        pid = broker.running_pid()
        print(f"running (pid {pid}) on {broker.bootstrap_servers}" if pid else "not running")
        return 0 if pid else 3
    return 0


# -- clients ---------------------------------------------------------------------------------


def _clients_apply(args: argparse.Namespace) -> int:
    from streams.worker import apply_clients_file

    applied = apply_clients_file(_kafka_settings(), args.file)
    print(f"applied {len(applied)} client(s): {', '.join(applied)}")
    return 0


def _clients_add_key(args: argparse.Namespace) -> int:
    import yaml

    from switchboard.clients import api_key_digest, new_api_key

    document = yaml.safe_load(args.file.read_text())
    client = (document or {}).get("clients", {}).get(args.client)
    if client is None:
        raise ConfigError(f"{args.file} has no client {args.client!r}")
    key = new_api_key(args.client)
    client.setdefault("api_keys", []).append(api_key_digest(key))
    args.file.write_text(yaml.safe_dump(document, sort_keys=False))
    print(key)
    print(
        f"# its digest was added to {args.file}; run `switchboard clients apply {args.file}`. "
        "The key is shown only now.",
        file=sys.stderr,
    )
    return 0


def _clients_document(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _clients_list(args: argparse.Namespace) -> int:
    from cli.clients_view import client_rows
    from cli.table import render_rows

    rows = client_rows(_clients_document(args.file))
    if not rows:
        print(f"{args.file} has no clients", file=sys.stderr)
        return 1
    print(render_rows(rows, list(rows[0])))
    return 0


def _clients_show(args: argparse.Namespace) -> int:
    import yaml

    from cli.clients_view import masked_client

    client = masked_client(_clients_document(args.file), args.client)
    if client is None:
        raise ConfigError(f"{args.file} has no client {args.client!r}")
    print(yaml.safe_dump({args.client: client}, sort_keys=False, allow_unicode=True), end="")
    return 0


def _calls_checksum(args: argparse.Namespace) -> int:
    """Print the checksum :func:`switchboard.calltool.calls.verify_target_checksum` accepts: the worker's
    own function over the worker's own secret lookup, so the two cannot disagree."""
    import yaml

    from switchboard.calltool.calls import InvalidMemberNumber, target_checksum
    from switchboard.calltool.campaigns import checksum_secret, parse_campaigns, secret_from

    try:
        document = yaml.safe_load(args.file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {args.file}: {exc}") from exc
    clients = (document or {}).get("clients") if isinstance(document, dict) else None
    client = clients.get(args.client) if isinstance(clients, dict) else None
    if not isinstance(client, dict):
        raise ConfigError(f"{args.file} has no client {args.client!r}")
    where = f"clients.{args.client}.campaigns"
    campaign = parse_campaigns(client.get("campaigns"), where).get(args.campaign)
    if campaign is None:
        raise ConfigError(f"client {args.client!r} has no campaign {args.campaign!r}")
    try:
        key = checksum_secret(campaign, secret_from(os.environ))
    except ConfigError as exc:
        raise ConfigError(f"client {args.client}, campaign {args.campaign}: {exc}") from None
    try:
        print(target_checksum(args.number, key))
    except InvalidMemberNumber as exc:
        print(f"switchboard: {args.number!r}: {exc}", file=sys.stderr)
        return 2
    return 0


# -- the Send API ----------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    from cli.audience_file import AudienceFileError, read_audience

    transport: dict[str, Any] = {"message": args.message}
    if args.channel:
        transport["type"] = args.channel
    if args.subject:
        transport["subject"] = args.subject
    if args.file_url:
        transport["fileUrl"] = args.file_url
    try:
        audience = list(read_audience(args.audience)) if args.audience else list(args.to)
    except (OSError, AudienceFileError) as exc:
        raise SwitchboardError(f"{args.audience}: {exc}") from None
    body: dict[str, Any] = {"transport": transport, "audience": audience}
    if args.idempotency_key:
        body["idempotency_key"] = args.idempotency_key
    options = send_options.options_from(args)
    if options:
        body["options"] = options
    if args.via_kafka:
        return _send_via_kafka(args, body)
    data = json.dumps(body, separators=(",", ":")).encode()
    status, answer = _http(
        args, "POST", "/v1/messages", body, upload=data if len(data) > 1_000_000 else None
    )
    print(json.dumps(answer, indent=2))
    return 0 if status == 202 else 1


def _send_via_kafka(args: argparse.Namespace, body: dict[str, Any]) -> int:
    """Produce the instruction as schemaless Avro with the bundled schema: what any producer
    outside the service does. The answer comes on the status topic (or the rejected one)."""
    from confluent_kafka import Producer

    from streams.kafka_security import librdkafka_config
    from switchboard.wire import encode_record

    if not args.client:
        raise SwitchboardError("--via-kafka needs --client (a producer names its client)")
    settings = _kafka_settings()
    transport = {
        "type": None,
        "subject": None,
        "message": None,
        "fileUrl": None,
        "extras": None,
    } | body["transport"]
    record = {
        "client_id": args.client,
        "idempotency_key": body.get("idempotency_key"),
        "options": body.get("options"),
        "transport": transport,
        "audience": [a if isinstance(a, str) else _avro_profile(a) for a in body["audience"]],
    }
    value, headers = encode_record("instruction", record)
    producer = Producer({**librdkafka_config(settings), "message.max.bytes": 64 * 1024 * 1024})
    failures: list[str] = []
    kafka_headers: list[tuple[str, str | bytes | None]] = [(k, v) for k, v in headers]
    producer.produce(
        settings.topic("instructions"),
        value,
        key=args.client.encode(),
        headers=kafka_headers,
        on_delivery=lambda err, msg: failures.append(str(err)) if err else None,
    )
    if producer.flush(60) or failures:
        raise SwitchboardError(
            f"the instruction was not confirmed by Kafka: {failures or 'timed out'}"
        )
    print(
        f"produced {len(body['audience']):,} recipients ({len(value):,} bytes) to {settings.topic('instructions')}; "
        f"follow {settings.topic('status')} for the session"
    )
    return 0


def _avro_profile(profile: dict[str, Any]) -> dict[str, Any]:
    fields = ("phone", "email", "push_token", "slack", "name", "timezone", "locale", "vars")
    return {f: profile.get(f) for f in fields}


def _status(args: argparse.Namespace) -> int:
    if args.watch:
        from cli.watch import watch

        def fetch() -> tuple[int, Any]:
            try:  # the counts only: one recipient of the page
                return _http(args, "GET", f"/v1/sessions/{args.session_id}?limit=1")
            except SwitchboardError:
                return 0, None  # unreachable for a moment (a restart): polled again

        return watch(fetch, sys.stdout, interval=max(0.1, args.interval))
    if args.statuses:
        return _status_recipients(args)
    status, answer = _http(args, "GET", f"/v1/sessions/{args.session_id}")
    print(json.dumps(answer, indent=2))
    return 0 if status == 200 else 1


def _status_recipients(args: argparse.Namespace) -> int:
    """``status --status ...``: every delivery of the session in those statuses, with why."""
    from cli.recipients import collect, render_table
    from switchboard.console import parse_statuses

    statuses, unknown = parse_statuses(",".join(args.statuses))
    if unknown or not statuses:
        print(
            f"switchboard status: not a delivery status: {', '.join(unknown) or '(none given)'}",
            file=sys.stderr,
        )
        return 2
    status, document, found = collect(
        lambda path: _http(args, "GET", path), args.session_id, statuses
    )
    if status != 200:
        print(json.dumps(document, indent=2))
        return 1
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in sorted((document.get("counts") or {}).items()))
    print(
        f"session {document.get('session_id')}: {document.get('status')}"
        f" ({counts or 'no final deliveries yet'}); {len(found)} {'/'.join(sorted(statuses))}"
    )
    if found:
        print(render_table(found))
    return 0


def _tail(args: argparse.Namespace) -> int:
    """Follow ``<prefix>.status`` with a consumer that joins no group (it takes every
    partition, commits nothing, and so disturbs no worker). Events are printed in arrival
    order, which is the order per session (the topic is keyed by session)."""
    import time

    from confluent_kafka import (
        OFFSET_BEGINNING,
        OFFSET_END,
        Consumer,
        KafkaException,
        TopicPartition,
    )

    from cli.tail import Filter, decode_status, render
    from streams.kafka_security import explain_kafka_error, librdkafka_config
    from switchboard.errors import DecodeFailed

    settings = _kafka_settings()
    topic = settings.topic("status")
    wanted = Filter(args.client, args.session, frozenset(args.status))
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": "switchboard-tail",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=15)
        except KafkaException as exc:
            error = exc.args[0]
            raise SwitchboardError(
                explain_kafka_error(settings, error.name(), error.str())
            ) from None
        partitions = metadata.topics.get(topic)
        if partitions is None or partitions.error is not None or not partitions.partitions:
            raise SwitchboardError(
                f"no topic {topic} at {settings.bootstrap_servers}: has a worker run?"
            )
        start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
        # assign(), not subscribe(): no group membership, so no rebalance and no commits.
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(partitions.partitions)])
        writer = _writer_lookup(settings)
        shown, last = 0, time.monotonic()
        while args.count is None or shown < args.count:
            if args.idle_timeout is not None and time.monotonic() - last > args.idle_timeout:
                break
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                print(f"switchboard tail: {message.error()}", file=sys.stderr)
                continue
            try:
                event = decode_status(message.value(), message.headers(), writer)
            except DecodeFailed as exc:
                print(
                    f"? partition {message.partition()} offset {message.offset()}: {exc}",
                    flush=True,
                )
                continue
            if wanted(event):
                print(render(event, as_json=args.json), flush=True)
                shown, last = shown + 1, time.monotonic()
    finally:
        consumer.close()
    return 0


def _writer_lookup(settings: Settings) -> Any:
    """A cached ``schema id -> parsed writer schema`` lookup, or None without a registry."""
    if not settings.schema_registry_url:
        return None
    import functools

    import fastavro

    from streams.schema_registry import registry_client

    client = registry_client(
        settings.schema_registry_url,
        settings.schema_registry_user_info,
        settings.schema_registry_ca_file,
    )

    @functools.cache
    def lookup(schema_id: int) -> Any:
        try:
            return fastavro.parse_schema(
                json.loads(client.get_schema(schema_id).schema_str or "null")
            )
        except Exception:  # noqa: BLE001 - unknown id or registry down: read with the bundled schema
            return None

    return lookup


def _http(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    *,
    upload: bytes | None = None,
) -> tuple[int, Any]:
    """Call the Send API. ``upload`` (a large body) is sent with a progress bar."""
    from cli.progress import Progress

    data: Any = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {args.api_key}", "Content-Type": "application/json"}
    if upload is not None:
        headers["Content-Length"] = str(len(upload))
        data = _Upload(upload, Progress(len(upload), "uploading", unit=" B"))
    url = args.url.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise SwitchboardError(f"--url must be http(s): {args.url}")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload)
        except ValueError:
            return exc.code, {"error": payload.decode(errors="replace")}
    except urllib.error.URLError as exc:
        raise SwitchboardError(
            f"cannot reach {args.url}: {exc.reason} (is `make run` running?)"
        ) from None
    finally:
        if isinstance(data, _Upload):
            data.progress.finish()


class _Upload:
    """A request body read in blocks, advancing a progress bar as urllib sends it."""

    def __init__(self, data: bytes, progress: Any) -> None:
        self._data = memoryview(data)
        self._at = 0
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else min(len(self._data), self._at + size)
        block = bytes(self._data[self._at : end])
        self._at = end
        self.progress.advance(len(block))
        return block


def _config(args: argparse.Namespace) -> int:
    rows = Settings.reference()
    table = "\n".join(
        ["| variable | default | meaning |", "|---|---|---|"]
        + [
            f"| `{env}` | {f'`{default}`' if default else ''} | {doc} |"
            for env, default, doc in rows
        ]
    )
    if args.readme:
        text = args.readme.read_text()
        start, end = "<!-- settings:start -->\n", "\n<!-- settings:end -->"
        if start not in text or end not in text:
            raise SwitchboardError(f"{args.readme} has no settings table markers")
        before, rest = text.split(start, 1)
        args.readme.write_text(before + start + table + end + rest.split(end, 1)[1])
        print(f"rewrote the settings table of {args.readme}")
    elif args.markdown:
        print(table)
    else:
        for env, default, doc in rows:
            print(f"{env}={default}\n    {doc}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
