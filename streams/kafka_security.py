"""How every Kafka client of Switchboard connects: the one place security settings become client
configuration.

Switchboard has two families of Kafka clients, and each gets its configuration from here only:

* librdkafka (confluent-kafka): the admin client that creates topics and reads offsets, the
  producer that publishes clients, the CLI's ``send --via-kafka``, ``tail`` and ``clients
  apply``, the startup check. :func:`librdkafka_config` gives their configuration.
* aiokafka: Faust's consumer, producer and topic creation, and the replicas' consumers
  (``streams/replica.py``). :func:`faust_credentials` gives Faust's ``broker_credentials``;
  :func:`aiokafka_connection` turns the same credentials into a plain aiokafka client's
  arguments with Faust's own ``credentials_to_aiokafka_auth``, so both connect alike.

:func:`check_kafka` is the startup check of the worker and of the CLI's Kafka commands: a
metadata request with the librdkafka configuration, failing within a bounded time with a message that names the problem (a refused
password, an untrusted certificate, an unreachable broker). Without it a refused password
would leave Faust retrying forever: aiokafka reconnects without end.

Guarantees and failure modes:
    * The SASL password is read from the variable that ``SWITCHBOARD_KAFKA_SASL_PASSWORD_ENV``
      names, when a configuration is built; it is a value only inside the returned dict or
      credentials object, which must never be logged (nothing here does; Faust's ``repr`` of
      its credentials shows the user name only). :class:`~switchboard.errors.ConfigError`
      names the variable when it is not set, never a value.
    * The builders do no I/O except :func:`ssl_context`, which reads the certificate files
      (``ConfigError`` naming the setting when one cannot be loaded).
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from switchboard.errors import ConfigError
from switchboard.settings import SASL_PROTOCOLS, TLS_PROTOCOLS, Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "CHECK_TIMEOUT",
    "aiokafka_connection",
    "check_kafka",
    "explain_kafka_error",
    "faust_credentials",
    "kafka_password",
    "librdkafka_config",
    "ssl_context",
]

#: Seconds the startup check waits for the brokers' answer before it gives up.
CHECK_TIMEOUT: Final = 30.0


def kafka_password(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """The SASL password, from the variable ``settings.kafka_sasl_password_env`` names.

    Raises:
        ConfigError: that variable is not set (the message names it, and shows no value).
    """
    env = os.environ if env is None else env
    password = env.get(settings.kafka_sasl_password_env)
    if not password:
        raise ConfigError(
            f"the Kafka SASL password is read from ${settings.kafka_sasl_password_env} "
            "(SWITCHBOARD_KAFKA_SASL_PASSWORD_ENV), which is not set"
        )
    return password


def librdkafka_config(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection part of a confluent-kafka client's configuration: bootstrap servers,
    security protocol, SASL and TLS. Callers add their own keys (``group.id``, ...).

    Hostname verification stays librdkafka's default (on): the broker's certificate must name
    the host connected to. Without a CA file librdkafka probes the system's trust store.
    """
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": protocol,
    }
    if protocol in SASL_PROTOCOLS:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username or ""
        config["sasl.password"] = kafka_password(settings, env)
    if protocol in TLS_PROTOCOLS:
        if settings.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
        if settings.kafka_ssl_cert_file is not None and settings.kafka_ssl_key_file is not None:
            config["ssl.certificate.location"] = str(settings.kafka_ssl_cert_file)
            config["ssl.key.location"] = str(settings.kafka_ssl_key_file)
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the aiokafka clients (``None`` when the protocol has no TLS): the
    CA file (or the system's trust store), host names checked, the client certificate for mTLS.

    Raises:
        ConfigError: a certificate or key file cannot be loaded (names the setting).
    """
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    ca = settings.kafka_ssl_ca_file
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"SWITCHBOARD_KAFKA_SSL_CA_FILE={ca}: {exc}") from None
    cert, key = settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"SWITCHBOARD_KAFKA_SSL_CERT_FILE={cert} / SWITCHBOARD_KAFKA_SSL_KEY_FILE={key}: {exc}"
            ) from None
    return context


def faust_credentials(
    settings: Settings, env: Mapping[str, str] | None = None
) -> CredentialsT | None:
    """Faust's ``broker_credentials`` (``None`` for PLAINTEXT): SASL credentials (with the TLS
    context for SASL_SSL) or TLS credentials. Faust's ``repr`` of them shows the user name only.
    """
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=kafka_password(settings, env),
            ssl_context=context,  # SASLCredentials speaks SASL_SSL exactly when it has one
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def aiokafka_connection(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection arguments of a plain aiokafka client (the replicas' consumers): bootstrap
    servers and the credentials Faust is given, turned into aiokafka's arguments by Faust's own
    converter, so these clients connect exactly as Faust's do."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return {
        "bootstrap_servers": settings.bootstrap_servers,
        **credentials_to_aiokafka_auth(faust_credentials(settings, env)),
    }


def explain_kafka_error(settings: Settings, code: str, text: str) -> str:
    """A message naming what stopped a client from connecting, and which setting to look at.

    ``code`` is librdkafka's error name (``KafkaError.name()``, e.g. ``_AUTHENTICATION``) and
    ``text`` its description; neither ever carries the password.
    """
    where = f"Kafka at {settings.bootstrap_servers}"
    if code == "_AUTHENTICATION" or "authentication" in text.lower():
        return (
            f"{where} refused the SASL credentials of user {settings.kafka_sasl_username!r} "
            f"({settings.kafka_sasl_mechanism}): wrong password or user name. Check "
            f"SWITCHBOARD_KAFKA_SASL_USERNAME, the password in ${settings.kafka_sasl_password_env} "
            f"and SWITCHBOARD_KAFKA_SASL_MECHANISM. The broker said: {text}"
        )
    if "certificate verify failed" in text or "could not be verified" in text:
        trusted = settings.kafka_ssl_ca_file or "the system's trust store"
        return (
            f"{where}: the broker's TLS certificate is not trusted (untrusted certificate: it "
            f"is not signed by a CA in {trusted}); set SWITCHBOARD_KAFKA_SSL_CA_FILE to the CA "
            f"that signed it. The TLS library said: {text}"
        )
    if "alert bad certificate" in text or "certificate required" in text:
        return (
            f"{where} refused this client's TLS certificate (mutual TLS): set "
            "SWITCHBOARD_KAFKA_SSL_CERT_FILE and SWITCHBOARD_KAFKA_SSL_KEY_FILE to a client "
            f"certificate and key that the cluster's CA signed. The TLS library said: {text}"
        )
    if code == "_SSL" or "ssl" in text.lower():
        return f"{where}: the TLS handshake failed (SWITCHBOARD_KAFKA_SSL_* settings): {text}"
    return (
        f"cannot reach {where} with SWITCHBOARD_KAFKA_SECURITY_PROTOCOL="
        f"{settings.kafka_security_protocol}: {text}"
    )


def check_kafka(
    settings: Settings, timeout: float = CHECK_TIMEOUT, env: Mapping[str, str] | None = None
) -> None:
    """Ask the brokers for metadata with the worker's own security settings, before anything
    else talks to Kafka.

    Returns as soon as the brokers answered. A refused password or a TLS failure is reported by
    librdkafka within milliseconds, and fails the check within about a second; anything else
    (no broker listening, a firewall) fails it after ``timeout`` seconds.

    Raises:
        ConfigError: naming the problem (:func:`explain_kafka_error`).
    """
    # The client is gone when _probe returns: an exception raised with it still in a frame
    # would keep it alive, reconnecting (and logging each failure) until collected.
    problem = _probe(librdkafka_config(settings, env), timeout)
    if problem is not None:
        raise ConfigError(explain_kafka_error(settings, *problem))


def _probe(config: dict[str, Any], timeout: float) -> tuple[str, str] | None:
    """None when the brokers answer a metadata request, else librdkafka's (error name, text)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    reported: list[KafkaError] = []
    # log_level 0: librdkafka would print each failed attempt; the caller reports the error.
    with_callback: dict[str, Any] = {**config, "error_cb": reported.append, "log_level": 0}
    admin = AdminClient(with_callback)
    deadline = time.monotonic() + timeout
    last: KafkaError | None = None
    while True:
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            last = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        else:
            return None
        admin.poll(0)  # serves error_cb: authentication and TLS errors arrive there
        error = next((e for e in reported if _fails_for_good(e)), None)
        if error is not None or time.monotonic() >= deadline:
            error = error or last or (reported[-1] if reported else None)
            return (error.name(), error.str()) if error is not None else ("", "no answer")


def _fails_for_good(error: Any) -> bool:
    """Whether retrying with the same settings cannot succeed: a refused password, a failed TLS
    handshake, or a TLS alert from the broker (it refused our certificate, or its absence),
    which librdkafka reports as a transport error."""
    from confluent_kafka import KafkaError

    code = error.code()
    if code in (KafkaError._AUTHENTICATION, KafkaError._SSL):
        return True
    return code == KafkaError._TRANSPORT and "SSL routines" in error.str()
