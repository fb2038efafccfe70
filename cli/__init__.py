"""The ``switchboard`` command and the developer tooling around it.

This package sits above every other layer: it starts workers (:mod:`streams`), talks to Kafka
and to a worker's HTTP API, runs a local broker from Maven Central jars (:mod:`cli.kafka`), and
reads audience files. Nothing in :mod:`switchboard`, :mod:`transports` or :mod:`streams`
imports it (the import-linter contracts in ``pyproject.toml`` hold this).
"""
