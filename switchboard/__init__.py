"""Switchboard: a Kafka-native communication service.

This package is the pure core (instruction model, validation, rendering, statuses, wire
formats, settings) and the command-line tool. The Faust application lives in :mod:`streams`,
the channel adapters in :mod:`transports`, the Avro schemas in :mod:`schemas`.
"""

__version__ = "0.1.0"
