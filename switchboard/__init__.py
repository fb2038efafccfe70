"""Switchboard: a Kafka-native communication service.

This package is the pure core (instruction model, validation, rendering, statuses, wire
formats, settings): it imports no Kafka, HTTP or RocksDB client. The Faust application lives
in :mod:`streams`, the channel adapters in :mod:`transports`, the Avro schemas in
:mod:`schemas`, the ``switchboard`` command and the developer tooling in :mod:`cli`.
"""

__version__ = "0.1.0"
