"""Client lists of service managers are checked when the configuration is applied."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_applying_a_client_that_names_an_unknown_manager_is_refused_before_kafka(
    tmp_path: Path,
) -> None:
    """`switchboard clients apply` checks every client's list against the installed managers
    (built-ins and entry points), and writes nothing when one is unknown."""
    import yaml

    from streams.worker import apply_clients_file
    from switchboard.errors import ConfigError
    from switchboard.settings import Settings

    path = tmp_path / "clients.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "clients": {
                    "acme": {
                        "api_keys": ["sha256:" + "0" * 64],
                        "default_channels": ["sms"],
                        "channels": {"sms": {"provider": "sandbox"}},
                        "service_managers": ["sticky-sender", "numpicker-basci"],
                    }
                }
            }
        )
    )
    # An unreachable broker: the refusal must come before any write is attempted.
    settings = Settings.from_env({"SWITCHBOARD_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    with pytest.raises(ConfigError, match=r"clients\.acme\.service_managers: .*numpicker-basci"):
        apply_clients_file(settings, path)


def test_a_worker_keeps_the_previous_configuration_when_a_list_cannot_run() -> None:
    import json

    from streams.clients import ClientRegistry
    from switchboard.managers import ServiceManagers
    from switchboard.settings import Settings

    registry = ClientRegistry(Settings(), check=ServiceManagers().check_client)
    client = {
        "api_keys": ["sha256:" + "0" * 64],
        "default_channels": ["sms"],
        "channels": {"sms": {"provider": "sandbox"}},
        "service_managers": ["sticky-sender"],
    }
    registry.apply(b"acme", json.dumps(client).encode())
    registry.apply(b"acme", json.dumps({**client, "service_managers": ["no-such"]}).encode())
    kept = registry.get("acme")
    assert kept is not None and kept.service_managers == ("sticky-sender",)
