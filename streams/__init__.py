"""The Faust application: topics, tables, agents and the web views that wire the pure core
(:mod:`switchboard`) to Kafka and to the providers (:mod:`transports`)."""
