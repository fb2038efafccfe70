"""The Kafka and Schema Registry security settings, and the client configurations built from
them (``streams/kafka_security.py``, ``streams/schema_registry.py``): what each protocol
gives each client library, the settings refused together, and that no credential reaches a
message, a ``repr`` or ``switchboard config``."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from cli.kafka.local import free_port
from cli.main import main
from streams.kafka_security import (
    aiokafka_connection,
    check_kafka,
    explain_kafka_error,
    faust_credentials,
    librdkafka_config,
    ssl_context,
)
from streams.schema_registry import SchemaRegistry, redacted, registry_config
from switchboard.errors import ConfigError
from switchboard.settings import Secret, Settings

PASSWORD = "pa55-w0rd-never-shown"  # a test value
ENV = {"KAFKA_SECRET": PASSWORD}


def sasl(protocol: str = "SASL_SSL", **overrides: Any) -> Settings:
    return Settings.from_env(
        ENV,
        bootstrap_servers="broker.example:9093",
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc-switchboard",
        kafka_sasl_password_env="KAFKA_SECRET",
        **overrides,
    )


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    import trustme

    ca = trustme.CA()
    client = ca.issue_cert("switchboard-client")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "c.pem", "key": tmp_path / "k.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


# -- librdkafka -------------------------------------------------------------------------------


def test_plaintext_gives_only_the_servers_and_the_protocol() -> None:
    settings = Settings.from_env({}, bootstrap_servers="a:9092,b:9092")
    assert librdkafka_config(settings) == {
        "bootstrap.servers": "a:9092,b:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert faust_credentials(settings) is None
    assert aiokafka_connection(settings) == {
        "bootstrap_servers": "a:9092,b:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_gives_librdkafka_the_mechanism_user_password_and_files(
    pem: dict[str, Path],
) -> None:
    settings = sasl(
        kafka_ssl_ca_file=pem["ca"], kafka_ssl_cert_file=pem["cert"], kafka_ssl_key_file=pem["key"]
    )
    assert librdkafka_config(settings, ENV) == {
        "bootstrap.servers": "broker.example:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-switchboard",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(pem["ca"]),
        "ssl.certificate.location": str(pem["cert"]),
        "ssl.key.location": str(pem["key"]),
    }


def test_sasl_plaintext_has_no_tls_keys() -> None:
    config = librdkafka_config(sasl("SASL_PLAINTEXT"), ENV)
    assert config["security.protocol"] == "SASL_PLAINTEXT" and config["sasl.password"] == PASSWORD
    assert not [key for key in config if key.startswith("ssl.")]
    assert faust_credentials(sasl("SASL_PLAINTEXT"), ENV).protocol.value == "SASL_PLAINTEXT"  # type: ignore[union-attr]


def test_faust_and_aiokafka_get_the_same_sasl_ssl_credentials(pem: dict[str, Path]) -> None:
    from faust.auth import SASLCredentials

    settings = sasl(kafka_ssl_ca_file=pem["ca"])
    credentials = faust_credentials(settings, ENV)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("svc-switchboard", PASSWORD)
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert PASSWORD not in repr(credentials)

    connection = aiokafka_connection(settings, ENV)
    assert connection["security_protocol"] == "SASL_SSL"
    assert connection["sasl_mechanism"] == "SCRAM-SHA-512"
    assert connection["sasl_plain_username"] == "svc-switchboard"
    assert connection["sasl_plain_password"] == PASSWORD
    assert connection["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert connection["ssl_context"].check_hostname


def test_ssl_with_a_client_certificate_is_mutual_tls(pem: dict[str, Path]) -> None:
    from faust.auth import SSLCredentials

    settings = Settings.from_env(
        {},
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=pem["ca"],
        kafka_ssl_cert_file=pem["cert"],
        kafka_ssl_key_file=pem["key"],
    )
    credentials = faust_credentials(settings)
    assert isinstance(credentials, SSLCredentials)
    assert aiokafka_connection(settings)["security_protocol"] == "SSL"
    assert "sasl.username" not in librdkafka_config(settings)


def test_an_unloadable_key_names_the_settings(pem: dict[str, Path]) -> None:
    settings = Settings.from_env(
        {},
        kafka_security_protocol="SSL",
        kafka_ssl_cert_file=pem["cert"],
        kafka_ssl_key_file=pem["ca"],  # a certificate, not a key
    )
    with pytest.raises(ConfigError, match="SWITCHBOARD_KAFKA_SSL_KEY_FILE"):
        ssl_context(settings)


# -- settings refused --------------------------------------------------------------------------


def problems(env: dict[str, str], **overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env, **overrides)
    return str(info.value)


def test_sasl_needs_a_user_name_and_its_password_variable() -> None:
    assert "needs SWITCHBOARD_KAFKA_SASL_USERNAME" in problems(
        ENV, kafka_security_protocol="SASL_SSL", kafka_sasl_password_env="KAFKA_SECRET"
    )
    message = problems({}, kafka_security_protocol="SASL_SSL", kafka_sasl_username="u")
    assert "$SWITCHBOARD_KAFKA_SASL_PASSWORD" in message and "not set" in message


def test_tls_files_without_tls_a_missing_file_and_half_a_key_pair_are_refused(
    pem: dict[str, Path], tmp_path: Path
) -> None:
    message = problems({}, kafka_ssl_ca_file=pem["ca"])
    assert "SWITCHBOARD_KAFKA_SSL_CA_FILE is set but" in message and "PLAINTEXT" in message
    message = problems(
        {},
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=tmp_path / "missing.pem",
        kafka_ssl_cert_file=pem["cert"],
    )
    assert "no such file" in message
    assert (
        "SWITCHBOARD_KAFKA_SSL_CERT_FILE and SWITCHBOARD_KAFKA_SSL_KEY_FILE go together" in message
    )


def test_bad_protocol_or_mechanism_names_the_choices() -> None:
    message = problems(
        {"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "TLS", "SWITCHBOARD_KAFKA_SASL_MECHANISM": "MD5"}
    )
    assert "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" in message
    assert "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512" in message


# -- secrets never shown ---------------------------------------------------------------------


def test_the_registry_user_info_is_a_secret_never_shown() -> None:
    settings = Settings.from_env({"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"key:{PASSWORD}"})
    assert settings.schema_registry_user_info == Secret(f"key:{PASSWORD}")
    for text in (repr(settings), str(settings.schema_registry_user_info), f"{settings}"):
        assert PASSWORD not in text
    message = problems({"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": PASSWORD})
    assert "must be user:password" in message and PASSWORD not in message


def test_config_prints_no_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", f"key:{PASSWORD}")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out
    for variable in (
        "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL",
        "SWITCHBOARD_KAFKA_SASL_PASSWORD_ENV",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        "SCHEMA_REGISTRY_CA_FILE",
    ):
        assert variable in out


def test_kafka_errors_are_explained_by_setting_and_carry_no_password() -> None:
    settings = sasl()
    refused = explain_kafka_error(settings, "_AUTHENTICATION", "SASL authentication error")
    assert "refused the SASL credentials of user 'svc-switchboard'" in refused
    assert "$KAFKA_SECRET" in refused and PASSWORD not in refused
    untrusted = explain_kafka_error(
        settings, "_SSL", "SSL handshake failed: certificate verify failed"
    )
    assert "not trusted" in untrusted and "SWITCHBOARD_KAFKA_SSL_CA_FILE" in untrusted
    alert = explain_kafka_error(
        settings, "_TRANSPORT", "SSL routines::ssl/tls alert bad certificate"
    )
    assert "refused this client's TLS certificate" in alert
    down = explain_kafka_error(settings, "_TRANSPORT", "Connection refused")
    assert down.startswith("cannot reach Kafka at broker.example:9093")


def test_the_startup_check_gives_up_on_a_silent_address_with_the_address() -> None:
    settings = Settings.from_env({}, bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(ConfigError, match=f"cannot reach Kafka at {settings.bootstrap_servers}"):
        check_kafka(settings, timeout=1)


# -- Schema Registry -------------------------------------------------------------------------


def test_registry_config_has_basic_auth_and_the_ca(pem: dict[str, Path]) -> None:
    config = registry_config("https://sr.example", Secret("key:secret"), pem["ca"])
    assert config["basic.auth.user.info"] == "key:secret"
    assert config["ssl.ca.location"] == str(pem["ca"])
    assert "basic.auth.user.info" not in registry_config("https://sr.example")


def test_registry_urls_in_messages_hide_their_password() -> None:
    assert redacted("https://key:s3cret@sr.example:8443/x") == "https://key:***@sr.example:8443/x"
    assert redacted("http://sr.example") == "http://sr.example"
    registry = SchemaRegistry("http://key:s3cret@127.0.0.1:1")
    assert "s3cret" not in registry.url


def test_user_info_twice_is_a_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        SchemaRegistry("https://a:first-secret@sr.example", Secret("b:second-secret"))
    assert "first-secret" not in str(info.value) and "second-secret" not in str(info.value)


class _Registry:
    """An https Schema Registry stand-in requiring basic auth: answers ``GET /schemas/ids/1``
    and records the Authorization headers it saw."""

    def __init__(self, tmp_path: Path, user_info: str) -> None:
        import base64
        import http.server
        import json
        import threading

        import trustme

        ca = trustme.CA()
        self.ca_file = tmp_path / "registry-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        expected = "Basic " + base64.b64encode(user_info.encode()).decode()
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != expected:
                    status, body = 401, {"error_code": 401, "message": "Unauthorized"}
                else:
                    status, body = 200, {"schema": '{"type": "string"}'}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def https_registry(tmp_path: Path) -> Any:
    registry = _Registry(tmp_path, f"reader:{PASSWORD}")
    yield registry
    registry.close()


def test_the_registry_client_sends_basic_auth_and_trusts_the_ca_file(https_registry: Any) -> None:
    import asyncio

    registry = SchemaRegistry(
        https_registry.url, Secret(f"reader:{PASSWORD}"), https_registry.ca_file
    )
    assert asyncio.run(registry.writer_schema(1)) == {"type": "string"}
    assert https_registry.seen and all(h and h.startswith("Basic ") for h in https_registry.seen)


def test_registry_failures_name_the_registry_and_never_the_password(
    https_registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from streams import schema_registry

    monkeypatch.setattr(schema_registry, "REQUEST_TIMEOUT", 2)
    wrong = SchemaRegistry(https_registry.url, Secret("reader:wrong-one"), https_registry.ca_file)
    with pytest.raises(ConnectionError) as refused:
        asyncio.run(wrong.writer_schema(1))
    assert https_registry.url in str(refused.value) and "wrong-one" not in str(refused.value)

    untrusted = SchemaRegistry(https_registry.url, Secret(f"reader:{PASSWORD}"))
    with pytest.raises(ConnectionError) as failed:
        asyncio.run(untrusted.writer_schema(1))
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value) or "certificate" in str(failed.value)
    assert PASSWORD not in str(failed.value)
