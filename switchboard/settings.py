"""Operator settings, read from the environment. One typed, immutable object.

Every setting is a field with its environment variable and its documentation; the README's
configuration table is generated from these (``switchboard config --markdown``) and a test keeps
the two equal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from switchboard.errors import ConfigError

__all__ = ["SASL_PROTOCOLS", "TLS_PROTOCOLS", "Secret", "Settings"]

LogFormat = Literal["json", "text"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: The security protocols that authenticate with SASL, and those that speak TLS.
SASL_PROTOCOLS: frozenset[str] = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS: frozenset[str] = frozenset({"SSL", "SASL_SSL"})


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential read from a setting. Its ``str`` and ``repr`` are ``***``, so a settings
    object, a log line or an exception that formats it never shows the value; only
    :meth:`reveal`, called where the credential is handed to a client library, does."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _s(env: str, doc: str) -> dict[str, str]:
    return {"env": env, "doc": doc}


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = field(
        default="127.0.0.1:19092",
        metadata=_s("SWITCHBOARD_BOOTSTRAP_SERVERS", "Kafka bootstrap servers, comma separated."),
    )
    topic_prefix: str = field(
        default="comms",
        metadata=_s(
            "SWITCHBOARD_TOPIC_PREFIX",
            "Prefix of every topic: `<prefix>.instructions`, `<prefix>.status`, ...",
        ),
    )
    app_id: str = field(
        default="switchboard",
        metadata=_s(
            "SWITCHBOARD_APP_ID",
            "Consumer group and prefix of the changelog topics. Workers of one deployment share it.",
        ),
    )
    partitions: int = field(
        default=8,
        metadata=_s(
            "SWITCHBOARD_PARTITIONS",
            "Partitions of every topic Switchboard creates: the most workers that share the load.",
        ),
    )
    replication_factor: int = field(
        default=1,
        metadata=_s(
            "SWITCHBOARD_REPLICATION_FACTOR",
            "Replication factor of the topics Switchboard creates (3 in production).",
        ),
    )
    data_dir: Path = field(
        default=Path(".switchboard/data"),
        metadata=_s(
            "SWITCHBOARD_DATA_DIR",
            "Where the worker keeps its RocksDB tables (a cache: rebuilt from Kafka when lost). One per worker.",
        ),
    )
    table_memory_mb: int = field(
        default=64,
        metadata=_s(
            "SWITCHBOARD_TABLE_MEMORY_MB",
            "RocksDB memory of the worker's tables, shared by all of them: half for write buffers, half for a cache of read blocks. Rows beyond it stay on disk; more makes large sessions' reads cheaper.",
        ),
    )
    web_host: str = field(
        default="127.0.0.1", metadata=_s("SWITCHBOARD_WEB_HOST", "Address the HTTP server binds.")
    )
    web_port: int = field(
        default=6066,
        metadata=_s(
            "SWITCHBOARD_WEB_PORT", "Port of the HTTP server (Send API, callbacks, metrics)."
        ),
    )
    advertised_url: str | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_ADVERTISED_URL",
            "URL other workers use to reach this one (requests for a session are routed to the worker that owns it). Default: http://<web host>:<web port>.",
        ),
    )
    public_url: str | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_PUBLIC_URL",
            "The public base URL providers call back (Twilio status callbacks and call steps); Twilio's signatures are checked against it, so it must be the same on every worker. Also the base of bulk email's one-click unsubscribe links (with SWITCHBOARD_UNSUBSCRIBE_SECRET).",
        ),
    )
    unsubscribe_secret: Secret | None = field(
        default=None,
        repr=False,
        metadata=_s(
            "SWITCHBOARD_UNSUBSCRIBE_SECRET",
            "The key (at least 16 characters, random; the same on every worker) that signs bulk email's `List-Unsubscribe` links. With SWITCHBOARD_PUBLIC_URL set, every email not sent with `options.transactional` carries a one-click unsubscribe (RFC 8058); without either, none does. Changing it revokes the links already sent. Never printed or logged.",
        ),
    )
    schema_registry_url: str | None = field(
        default=None,
        metadata=_s(
            "SCHEMA_REGISTRY_URL",
            "Confluent-compatible Schema Registry. Set: Avro in the Confluent wire format. Unset: schemaless Avro with a content-type header.",
        ),
    )
    clients_file: Path | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_CLIENTS_FILE",
            "A clients.yaml applied to the clients topic when the worker starts (the embedded default uses config/clients.yaml).",
        ),
    )
    sandbox: bool = field(
        default=False,
        metadata=_s(
            "SWITCHBOARD_SANDBOX",
            "Send every channel of every client in sandbox mode: rendered, validated, recorded, reported delivered; nothing leaves the machine.",
        ),
    )
    sandbox_outbox: Path | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_SANDBOX_OUTBOX", "A JSON-lines file where sandbox sends are recorded."
        ),
    )
    max_in_flight: int = field(
        default=100,
        metadata=_s(
            "SWITCHBOARD_MAX_IN_FLIGHT", "Provider requests in flight per channel and worker."
        ),
    )
    paused_channels: str = field(
        default="",
        metadata=_s(
            "SWITCHBOARD_PAUSED_CHANNELS",
            "Channels whose dispatch this worker does not start (comma list), e.g. during a provider outage: their jobs wait in Kafka, and go out when a worker starts without the pause. Time windows, retries and status keep working.",
        ),
    )
    report_timeout: float = field(
        default=86_400.0,
        metadata=_s(
            "SWITCHBOARD_REPORT_TIMEOUT",
            "Seconds a message reported `sent` may wait for its final report (a provider's delivery callback) before it is marked `expired`.",
        ),
    )
    retention: float = field(
        default=2_592_000.0,
        metadata=_s(
            "SWITCHBOARD_RETENTION",
            "Seconds a completed session is kept (30 days): then its rows (the session, its audience, every delivery and send, its progress) are deleted with tombstones on every changelog, and its id answers 410 Gone. Counted from the session's completion; a session that never completes (a manual one never triggered) is kept. 0 keeps every session forever.",
        ),
    )
    gone_for: float = field(
        default=2_592_000.0,
        metadata=_s(
            "SWITCHBOARD_GONE_FOR",
            "Seconds a deleted session's id answers 410 Gone (from a small marker row), after which it answers 404 like an id never seen. 0: 404 at once.",
        ),
    )
    idempotency_window: float = field(
        default=86_400.0,
        metadata=_s(
            "SWITCHBOARD_IDEMPOTENCY_WINDOW",
            "Seconds an idempotency key names its session (24 hours); then its record is deleted and the key opens a new session.",
        ),
    )
    send_deadline: float = field(
        default=600.0,
        metadata=_s(
            "SWITCHBOARD_SEND_DEADLINE",
            "Seconds one send may take in all, waiting for its sender's rate-limit slot included, before it counts as stuck (a retryable failure). Each provider request has its own shorter timeout (the channel's `timeout` option). Keep it above max in flight / the slowest sender's rate.",
        ),
    )
    circuit_failures: int = field(
        default=5,
        metadata=_s(
            "SWITCHBOARD_CIRCUIT_FAILURES",
            "Retryable errors in a row from one provider of a channel that lists `providers` that open its circuit: its sends go to the next provider, or are held (no attempt spent) when every provider's circuit is open. Per worker.",
        ),
    )
    circuit_cooldown: float = field(
        default=30.0,
        metadata=_s(
            "SWITCHBOARD_CIRCUIT_COOLDOWN",
            "Seconds an open circuit waits before one trial request: an answer closes it (sends and held sends go to it again), a retryable error opens it for another cool-down.",
        ),
    )
    drain_timeout: float = field(
        default=20.0,
        metadata=_s(
            "SWITCHBOARD_DRAIN_TIMEOUT",
            "Seconds a stopping worker (or one losing partitions) lets sends in flight finish; unfinished ones are sent by the next owner.",
        ),
    )
    produce_timeout: float = field(
        default=10.0,
        metadata=_s(
            "SWITCHBOARD_PRODUCE_TIMEOUT",
            "Seconds the Send API waits for the broker to confirm a write before answering 503.",
        ),
    )
    session_timeout: float = field(
        default=10.0,
        metadata=_s(
            "SWITCHBOARD_SESSION_TIMEOUT",
            "Seconds without a heartbeat after which the consumer group counts a worker dead and gives its partitions to the others (Kafka's session.timeout.ms; brokers accept 6 to 300 by default). Lower moves a killed worker's work sooner; too low evicts a worker that is merely busy (a long pause, an overloaded machine), and its work moves for nothing.",
        ),
    )
    heartbeat_interval: float = field(
        default=1.0,
        metadata=_s(
            "SWITCHBOARD_HEARTBEAT_INTERVAL",
            "Seconds between a worker's heartbeats to its consumer group: a worker notices a rebalance at its next heartbeat. At most a third of the session timeout.",
        ),
    )
    rebalance_timeout: float = field(
        default=30.0,
        metadata=_s(
            "SWITCHBOARD_REBALANCE_TIMEOUT",
            "Seconds the consumer group waits for every live worker to rejoin a rebalance. A worker first finishes its sends in flight (up to the drain timeout), so keep it above SWITCHBOARD_DRAIN_TIMEOUT; a dead worker is waited for only until its session times out.",
        ),
    )
    max_body_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_s(
            "SWITCHBOARD_MAX_BODY_BYTES",
            "Largest accepted HTTP request body (413 above): about a million recipients.",
        ),
    )
    allow_http_webhooks: bool = field(
        default=False,
        metadata=_s(
            "SWITCHBOARD_ALLOW_HTTP_WEBHOOKS", "Accept http:// webhook URLs (https only otherwise)."
        ),
    )
    allow_private_webhooks: bool = field(
        default=False,
        metadata=_s(
            "SWITCHBOARD_ALLOW_PRIVATE_WEBHOOKS",
            "Let webhooks reach loopback, private, link-local and CGNAT addresses (refused otherwise, at connect time; cloud-metadata addresses always are).",
        ),
    )
    webhook_backoff_scale: float = field(
        default=1.0,
        metadata=_s(
            "SWITCHBOARD_WEBHOOK_BACKOFF_SCALE",
            "Multiplies the webhook retry delays (5 s, 30 s, 2 min, ... for up to a day); below 1 for tests.",
        ),
    )
    service_managers: str = field(
        default="",
        metadata=_s(
            "SERVICE_MANAGERS",
            "Service managers for every client, in order (comma list, no spaces), e.g. `sticky-sender,numpicker-basic`. A client's `service_managers` replaces it.",
        ),
    )
    service_manager_options: str = field(
        default="",
        metadata=_s(
            "SWITCHBOARD_SERVICE_MANAGER_OPTIONS",
            'Options of service managers, a JSON object by name, e.g. `{"mms-when-cheaper": {"ratio": 3}}`.',
        ),
    )
    dispatch_backlog: int = field(
        default=5000,
        metadata=_s(
            "SWITCHBOARD_DISPATCH_BACKLOG",
            "Jobs that may wait in a channel's dispatch topic before a session fans out its next chunk (0: no limit). A later session's jobs queue behind at most this many of a large campaign's, and concurrent campaigns take turns.",
        ),
    )
    session_start_timeout: float = field(
        default=10.0,
        metadata=_s(
            "SWITCHBOARD_SESSION_START_TIMEOUT",
            "Seconds the service managers' `on_session_start` (scrubbing with paid lookups) may take per chunk of 500 recipients. Past it the chunk is sent unscrubbed (fail-open, logged and counted), so lookups never hold the other sessions of the partition for long.",
        ),
    )
    kafka_security_protocol: SecurityProtocol = field(
        default="PLAINTEXT",
        metadata=_s(
            "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL",
            "How every Kafka client of Switchboard connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS: Confluent Cloud, Amazon MSK, Aiven). Checked when the worker starts: a refused password or an untrusted certificate stops it with an error that says so.",
        ),
    )
    kafka_sasl_mechanism: SaslMechanism = field(
        default="PLAIN",
        metadata=_s(
            "SWITCHBOARD_KAFKA_SASL_MECHANISM",
            "SASL mechanism with SASL_PLAINTEXT or SASL_SSL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
        ),
    )
    kafka_sasl_username: str | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_KAFKA_SASL_USERNAME",
            "SASL user name (Confluent Cloud: the API key). Required with SASL_PLAINTEXT and SASL_SSL.",
        ),
    )
    kafka_sasl_password_env: str = field(
        default="SWITCHBOARD_KAFKA_SASL_PASSWORD",
        metadata=_s(
            "SWITCHBOARD_KAFKA_SASL_PASSWORD_ENV",
            "The NAME of the environment variable that holds the SASL password (Confluent Cloud: the API secret), so the password itself is never a setting and never printed. That variable must be set with SASL_PLAINTEXT and SASL_SSL.",
        ),
    )
    kafka_ssl_ca_file: Path | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_KAFKA_SSL_CA_FILE",
            "PEM file of the CA certificates that signed the brokers' certificates, with SSL and SASL_SSL. Unset: the system's trust store (enough for Confluent Cloud and Amazon MSK; Aiven needs its project CA).",
        ),
    )
    kafka_ssl_cert_file: Path | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_KAFKA_SSL_CERT_FILE",
            "PEM client certificate for mutual TLS (mTLS), with SSL or SASL_SSL; set together with SWITCHBOARD_KAFKA_SSL_KEY_FILE.",
        ),
    )
    kafka_ssl_key_file: Path | None = field(
        default=None,
        metadata=_s(
            "SWITCHBOARD_KAFKA_SSL_KEY_FILE",
            "PEM private key (unencrypted) of the client certificate for mutual TLS.",
        ),
    )
    schema_registry_user_info: Secret | None = field(
        default=None,
        repr=False,
        metadata=_s(
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
            "`user:password` for the Schema Registry's HTTP basic auth (the Confluent convention; Confluent Cloud: the registry API key and secret). Never printed or logged.",
        ),
    )
    schema_registry_ca_file: Path | None = field(
        default=None,
        metadata=_s(
            "SCHEMA_REGISTRY_CA_FILE",
            "PEM file of the CA certificates that signed the Schema Registry's https certificate. Unset: the system's trust store.",
        ),
    )
    log_level: str = field(
        default="info", metadata=_s("SWITCHBOARD_LOG_LEVEL", "debug, info, warning or error.")
    )
    log_format: LogFormat = field(
        default="json", metadata=_s("SWITCHBOARD_LOG_FORMAT", "json (one object per line) or text.")
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``); ``overrides`` win.

        Raises:
            ConfigError: naming each variable whose value cannot be used.
        """
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _convert(hints[f.name], raw)
            except ValueError as exc:
                problems.append(f"{f.metadata['env']}={raw!r}: {exc}")
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
        settings = replace(cls(), **values, **overrides)
        settings.check()
        if settings.kafka_security_protocol in SASL_PROTOCOLS and not env.get(
            settings.kafka_sasl_password_env
        ):
            raise ConfigError(
                f"invalid settings:\n  SWITCHBOARD_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} "
                f"needs a password in ${settings.kafka_sasl_password_env} "
                "(SWITCHBOARD_KAFKA_SASL_PASSWORD_ENV names it), which is not set"
            )
        return settings

    def check(self) -> None:
        problems = []
        if self.partitions < 1:
            problems.append("SWITCHBOARD_PARTITIONS must be at least 1")
        if self.replication_factor < 1:
            problems.append("SWITCHBOARD_REPLICATION_FACTOR must be at least 1")
        if self.max_in_flight < 1:
            problems.append("SWITCHBOARD_MAX_IN_FLIGHT must be at least 1")
        if self.circuit_failures < 1 or not self.circuit_cooldown > 0:
            problems.append(
                "SWITCHBOARD_CIRCUIT_FAILURES must be at least 1 and SWITCHBOARD_CIRCUIT_COOLDOWN above 0"
            )
        if self.retention < 0 or self.gone_for < 0:
            problems.append("SWITCHBOARD_RETENTION and SWITCHBOARD_GONE_FOR must be 0 or more")
        if not self.idempotency_window > 0:
            problems.append("SWITCHBOARD_IDEMPOTENCY_WINDOW must be above 0")
        if not self.session_start_timeout > 0:
            problems.append("SWITCHBOARD_SESSION_START_TIMEOUT must be above 0")
        if not 0 < self.heartbeat_interval * 3 <= self.session_timeout:
            problems.append(
                "SWITCHBOARD_HEARTBEAT_INTERVAL must be above 0 and at most a third of "
                f"SWITCHBOARD_SESSION_TIMEOUT ({self.session_timeout:g})"
            )
        if self.rebalance_timeout <= self.drain_timeout:
            problems.append(
                "SWITCHBOARD_REBALANCE_TIMEOUT must be above SWITCHBOARD_DRAIN_TIMEOUT "
                f"({self.drain_timeout:g}): a worker drains its sends before it rejoins"
            )
        from switchboard.instruction import CHANNELS

        unknown = sorted(self.paused - set(CHANNELS))
        if unknown:
            problems.append(
                f"SWITCHBOARD_PAUSED_CHANNELS names unknown channels: {', '.join(unknown)}"
            )
        try:
            self.manager_options  # noqa: B018 - parsed for its errors
        except ValueError as exc:
            problems.append(f"SWITCHBOARD_SERVICE_MANAGER_OPTIONS: {exc}")
        problems.extend(self._security_problems())
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))

    def _security_problems(self) -> list[str]:
        """What is inconsistent in the Kafka, Schema Registry and unsubscribe-link security
        settings. Never shows a credential: only variable names, protocols and file paths."""
        problems = []
        protocol = self.kafka_security_protocol
        if protocol in SASL_PROTOCOLS and not self.kafka_sasl_username:
            problems.append(
                f"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL={protocol} needs SWITCHBOARD_KAFKA_SASL_USERNAME"
            )
        tls_files = {
            "SWITCHBOARD_KAFKA_SSL_CA_FILE": self.kafka_ssl_ca_file,
            "SWITCHBOARD_KAFKA_SSL_CERT_FILE": self.kafka_ssl_cert_file,
            "SWITCHBOARD_KAFKA_SSL_KEY_FILE": self.kafka_ssl_key_file,
        }
        for env, path in tls_files.items():
            if path is None:
                continue
            if protocol not in TLS_PROTOCOLS:
                # Most likely the protocol was forgotten: say so rather than connect in clear.
                problems.append(
                    f"{env} is set but SWITCHBOARD_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS (SSL or SASL_SSL)"
                )
            elif not path.is_file():
                problems.append(f"{env}: no such file {path}")
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            problems.append(
                "SWITCHBOARD_KAFKA_SSL_CERT_FILE and SWITCHBOARD_KAFKA_SSL_KEY_FILE go together (mutual TLS)"
            )
        if self.unsubscribe_secret is not None:
            from switchboard.unsubscribe import MIN_SECRET_BYTES

            if len(self.unsubscribe_secret.reveal().encode()) < MIN_SECRET_BYTES:
                problems.append(  # the value is not shown
                    f"SWITCHBOARD_UNSUBSCRIBE_SECRET must be at least {MIN_SECRET_BYTES} characters"
                )
        if self.schema_registry_ca_file is not None and not self.schema_registry_ca_file.is_file():
            problems.append(f"SCHEMA_REGISTRY_CA_FILE: no such file {self.schema_registry_ca_file}")
        user_info = self.schema_registry_user_info
        if user_info is not None and ":" not in user_info.reveal():
            problems.append(
                "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO must be user:password"
            )  # value not shown
        return problems

    @property
    def manager_options(self) -> dict[str, dict[str, Any]]:
        """:attr:`service_manager_options` parsed: options by manager name. ``ValueError`` when
        it is not a JSON object of objects."""
        if not self.service_manager_options.strip():
            return {}
        import json

        try:
            parsed = json.loads(self.service_manager_options)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
            raise ValueError('must be a JSON object of objects: {"<manager>": {<options>}}')
        return parsed

    @property
    def unsubscribe_links(self) -> tuple[str, str] | None:
        """``(public base URL, secret)`` when bulk email carries one-click unsubscribe links."""
        if self.public_url is None or self.unsubscribe_secret is None:
            return None
        return self.public_url, self.unsubscribe_secret.reveal()

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.paused_channels.split(",") if c.strip())

    def topic(self, name: str) -> str:
        """The full name of one of Switchboard's topics, e.g. ``topic("status")``."""
        return f"{self.topic_prefix}.{name}"

    @property
    def web_url(self) -> str:
        return self.advertised_url or f"http://{self.web_host}:{self.web_port}"

    @classmethod
    def reference(cls) -> list[tuple[str, str, str]]:
        """(variable, default, doc) for every setting: the configuration reference."""
        rows = []
        for f in fields(cls):
            default = f.default
            shown = (
                ""
                if default is None
                else str(default).lower()
                if isinstance(default, bool)
                else str(default)
            )
            rows.append((f.metadata["env"], shown, f.metadata["doc"]))
        return rows


def _convert(hint: Any, raw: str) -> Any:
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is not None and get_origin(hint) is not Literal and args:
        hint = args[0]  # Optional[X] -> X
    if get_origin(hint) is Literal:
        if raw not in get_args(hint):
            raise ValueError(f"must be one of {', '.join(map(str, get_args(hint)))}")
        return raw
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if hint is int:
        return int(raw)
    if hint is float:
        return float(raw)
    if hint is Path:
        return Path(raw)
    if hint is Secret:
        return Secret(raw)
    return raw
