"""A real single-node Apache Kafka broker (KRaft), run from Maven Central jars.

Apache Kafka is on no package registry this project can reach except Maven Central, where its
jars are published. This module:

1. fetches the broker's runtime classpath (``org.apache.kafka:kafka_2.13`` plus a log4j2 backend)
   with ``mvn dependency:copy-dependencies`` into a git-ignored cache, once per version;
2. formats a KRaft storage directory with ``kafka.tools.StorageTool`` (static single voter), once
   per run directory, adding the SCRAM users of a :class:`SecureListener` to the cluster
   metadata (``--add-scram``: KRaft has no ZooKeeper to create them in later);
3. starts ``kafka.Kafka`` as a child process on loopback and waits until the broker answers a
   metadata request; and
4. stops it with SIGTERM (a controlled shutdown), escalating to SIGKILL after a timeout.

Both ``switchboard kafka ...`` / ``make run`` and the test suite's session fixture use this code.

Guarantees and failure modes:
    * A second ``ensure()`` of the same version reuses the cache and does no network I/O.
    * A fetch interrupted half-way never leaves a usable-looking cache: jars are copied into a
      temporary directory which is renamed into place only when Maven succeeded.
    * ``start()`` raises :class:`BrokerError` with the tail of the broker's log when the process
      exits or does not become ready in time; it never returns a broker that is not serving.
    * The broker's PID is written to ``<run_dir>/broker.pid`` so another process
      (``switchboard kafka stop``) can stop it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType

DEFAULT_KAFKA_VERSION = "4.1.1"
DEFAULT_PORT = 19092

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "DEFAULT_PORT",
    "BrokerError",
    "KafkaDistribution",
    "LocalBroker",
    "SecureListener",
    "free_port",
    "java_command",
]


class BrokerError(RuntimeError):
    """The local broker could not be fetched, formatted, started or stopped."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def java_command(min_major: int = 17) -> str:
    """Return a ``java`` executable of at least ``min_major``: ``$JAVA_HOME`` first, then PATH,
    then the JDKs installed side by side under ``/usr/lib/jvm`` (newest first)."""
    candidates = []
    if home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(home) / "bin" / "java"))
    if found := shutil.which("java"):
        candidates.append(found)
    candidates.extend(str(p) for p in sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True))
    for candidate in candidates:
        if _java_major(candidate) >= min_major:
            return candidate
    raise BrokerError(
        f"Java {min_major} or newer is needed; none found (checked $JAVA_HOME, PATH and "
        f"/usr/lib/jvm). Install an OpenJDK {min_major}+ and retry."
    )


def _java_major(java: str) -> int:
    try:
        out = subprocess.run(  # noqa: S603 - a java binary we located ourselves
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@dataclass
class KafkaDistribution:
    """The broker's jars for one Kafka version, cached under ``cache_dir/<version>/libs``."""

    version: str = DEFAULT_KAFKA_VERSION
    cache_dir: Path = field(default_factory=lambda: Path(".cache") / "kafka")

    def __post_init__(self) -> None:
        # Maven resolves a relative outputDirectory against the pom's directory, not ours.
        self.cache_dir = Path(self.cache_dir).absolute()

    @property
    def libs(self) -> Path:
        return self.cache_dir / self.version / "libs"

    @property
    def classpath(self) -> str:
        # Java expands `dir/*` to every jar in it.
        return str(self.libs / "*")

    def is_cached(self) -> bool:
        return (self.libs / ".complete").exists()

    def ensure(self) -> Path:
        """Fetch the jars unless cached; return the libs directory.

        Concurrent callers (two test sessions, ``make run`` beside ``make test``) serialise on a
        lock file, so the second one finds the first one's cache instead of fetching again.
        """
        if self.is_cached():
            return self.libs
        self.libs.parent.mkdir(parents=True, exist_ok=True)
        with open(self.libs.parent / ".fetch.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.is_cached():
                self._fetch()
        return self.libs

    def _fetch(self) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (`mvn`) is needed to fetch Kafka's jars from Maven Central.")
        pom_template = resources.files("cli.kafka").joinpath("broker-pom.xml").read_text()
        with tempfile.TemporaryDirectory(dir=self.libs.parent) as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_text(pom_template.replace("@KAFKA_VERSION@", self.version))
            staging = Path(tmp) / "libs"
            cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies"]
            cmd += ["-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
            if result.returncode != 0:
                raise BrokerError(
                    f"mvn could not fetch Kafka {self.version} (exit {result.returncode}):\n"
                    f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
                )
            if not any(staging.glob("kafka_2.13-*.jar")):
                found = sorted(p.name for p in Path(tmp).rglob("*.jar"))[:5]
                raise BrokerError(
                    f"mvn succeeded but left no kafka_2.13 jar in {staging} (jars found: {found})"
                )
            (staging / ".complete").write_text(self.version)
            if self.libs.exists():
                shutil.rmtree(self.libs)
            staging.rename(self.libs)


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener beside the broker's PLAINTEXT one (tests of secured clients), and
    with ``client_ca`` an SSL listener that requires a client certificate (mutual TLS).

    ``keystore`` is a PEM file holding the broker's private key (unencrypted PKCS#8) and its
    certificate chain, which Kafka reads as a keystore of type PEM. ``users`` (name -> password)
    are SCRAM-SHA-512 credentials written into the cluster metadata when the storage is
    formatted, so they exist from the broker's first start. ``client_ca`` is a PEM file of the
    CA whose client certificates the mutual-TLS listener accepts. No authorizer is configured:
    an authenticated client may do anything.
    """

    keystore: Path
    users: dict[str, str]
    port: int = 0
    client_ca: Path | None = None
    mtls_port: int = 0

    @property
    def mechanism(self) -> str:
        return "SCRAM-SHA-512"


@dataclass
class LocalBroker:
    """One KRaft broker+controller on 127.0.0.1, its data and logs under ``run_dir``.

    ``port=0`` picks free ports (tests); the default port is stable for ``make run``.
    """

    run_dir: Path
    distribution: KafkaDistribution = field(default_factory=KafkaDistribution)
    port: int = DEFAULT_PORT
    controller_port: int = 0
    heap: str = "512m"
    #: More JVM options, after the defaults (a benchmark's broker trims its JIT: bench/pipeline.py).
    jvm_options: tuple[str, ...] = ()
    overrides: dict[str, str] = field(default_factory=dict)
    #: An extra SASL_SSL listener (``secure_bootstrap_servers``); the PLAINTEXT one stays.
    secure: SecureListener | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).absolute()
        if self.port == 0:
            self.port = free_port()
        if self.controller_port == 0:
            self.controller_port = free_port() if self.port != DEFAULT_PORT else self.port + 1
        if self.secure is not None:
            self.secure = dataclasses.replace(
                self.secure,
                port=self.secure.port or free_port(),
                mtls_port=self.secure.mtls_port or free_port(),
            )

    # -- public API -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap_servers(self) -> str:
        """The SASL_SSL listener's address (``ValueError`` without one)."""
        if self.secure is None:
            raise ValueError("this broker has no secure listener")
        return f"127.0.0.1:{self.secure.port}"

    @property
    def mtls_bootstrap_servers(self) -> str:
        """The mutual-TLS listener's address (``ValueError`` without one)."""
        if self.secure is None or self.secure.client_ca is None:
            raise ValueError("this broker has no mutual-TLS listener")
        return f"127.0.0.1:{self.secure.mtls_port}"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / "server.log"

    def start(self, timeout: float = 90.0) -> LocalBroker:
        """Fetch if needed, format if needed, start, and wait until the broker serves."""
        if self.running_pid() is not None:
            raise BrokerError(
                f"a broker is already running from {self.run_dir} (pid {self.running_pid()}); "
                "stop it with `switchboard kafka stop` first"
            )
        self.distribution.ensure()
        java = java_command(17)
        self._write_config()
        self._format(java)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        console = open(self.run_dir / "logs" / "console.log", "ab")  # noqa: SIM115 - owned by child
        # A new session so Ctrl-C in a terminal reaches the worker first; the caller stops us.
        self._process = subprocess.Popen(  # noqa: S603
            self.command(java), stdout=console, stderr=subprocess.STDOUT, start_new_session=True
        )
        console.close()
        self.pid_file.write_text(f"{self._process.pid}\n{self.port}\n")
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def command(self, java: str) -> list[str]:
        """The broker's command line: the JVM's options (``jvm_options`` last), then Kafka."""
        jvm = [f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        jvm += self.jvm_options
        cmd = [java, *jvm, "-Djava.awt.headless=true", f"-Dkafka.logs.dir={self.run_dir / 'logs'}"]
        cmd += [f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.properties'}"]
        cmd += ["-cp", self.distribution.classpath, "kafka.Kafka"]
        return [*cmd, str(self.run_dir / "server.properties")]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        pid = self._process.pid if self._process else self.running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid, self._process):
            time.sleep(0.1)
        if _alive(pid, self._process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if self._process:
                self._process.wait(10)
        self._process = None
        self.pid_file.unlink(missing_ok=True)

    def running_pid(self) -> int | None:
        """PID of a broker started from this run directory that is still alive, if any."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if _alive(pid, None) else None

    def log_tail(self, lines: int = 40) -> str:
        chunks = []
        for name in ("console.log", "server.log"):
            path = self.run_dir / "logs" / name
            if path.exists():
                chunks.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(chunks)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.run_dir / "kraft-logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Instructions with large audiences are big messages (see docs/operations.md).
            "message.max.bytes": str(64 * 1024 * 1024),
            "replica.fetch.max.bytes": str(64 * 1024 * 1024),
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            **self._secure_properties(),
            **self.overrides,
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        (self.run_dir / "server.properties").write_text(text)
        log_config = resources.files("cli.kafka").joinpath("log4j2.properties").read_text()
        (self.run_dir / "log4j2.properties").write_text(log_config)

    def _secure_properties(self) -> dict[str, str]:
        """The SASL_SSL listener's part of server.properties (nothing without one)."""
        if self.secure is None:
            return {}
        plain, controller = f"127.0.0.1:{self.port}", f"127.0.0.1:{self.controller_port}"
        advertised = [f"PLAINTEXT://{plain}", f"SASL_SSL://{self.secure_bootstrap_servers}"]
        scram = self.secure.mechanism.lower()
        props = {
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
            "sasl.enabled.mechanisms": self.secure.mechanism,
            f"listener.name.sasl_ssl.{scram}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(self.secure.keystore),
        }
        if self.secure.client_ca is not None:
            advertised.append(f"SSL://{self.mtls_bootstrap_servers}")
            props |= {
                "listener.name.ssl.ssl.keystore.type": "PEM",
                "listener.name.ssl.ssl.keystore.location": str(self.secure.keystore),
                "listener.name.ssl.ssl.truststore.type": "PEM",
                "listener.name.ssl.ssl.truststore.location": str(self.secure.client_ca),
                "listener.name.ssl.ssl.client.auth": "required",
            }
        return {
            "listeners": ",".join([*advertised, f"CONTROLLER://{controller}"]),
            "advertised.listeners": ",".join(advertised),
            **props,
        }

    def _format(self, java: str) -> None:
        logs = self.run_dir / "kraft-logs"
        if (logs / "meta.properties").exists():
            return
        cluster_id = _cluster_id()
        cmd = [java, "-cp", self.distribution.classpath, "kafka.tools.StorageTool", "format"]
        cmd += ["-t", cluster_id, "-c", str(self.run_dir / "server.properties")]
        if self.secure is not None:
            for name, password in self.secure.users.items():
                cmd += ["--add-scram", f"{self.secure.mechanism}=[name={name},password={password}]"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise BrokerError(f"formatting {logs} failed:\n{result.stdout}{result.stderr}")

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient  # heavy import, only when starting

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self._process.returncode}:\n{self.log_tail()}"
                )
            if _port_open(self.port):
                try:
                    metadata = admin.list_topics(timeout=2)
                except Exception:  # noqa: BLE001 - any metadata failure means "not yet"
                    metadata = None
                if metadata is not None and metadata.brokers:
                    return
            time.sleep(0.2)
        raise BrokerError(f"the broker was not ready within {timeout:.0f}s:\n{self.log_tail()}")


def _cluster_id() -> str:
    """A random KRaft cluster id (Kafka's ``Uuid`` text form: 22 URL-safe base64 characters).

    Never one starting with ``-``: the storage tool would read it as an option (Kafka's own
    ``Uuid.randomUuid`` skips those for the same reason)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of another process still answers kill(0); check /proc where we can.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True
