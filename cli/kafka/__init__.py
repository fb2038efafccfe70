"""Running a local Apache Kafka broker from Maven Central jars (``make run``, the tests)."""
