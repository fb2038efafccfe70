"""A real Confluent-compatible Schema Registry for the tests: Apicurio Registry from Maven Central.

Confluent's own registry is not on Maven Central and Karapace is not on PyPI; Apicurio Registry
publishes a runnable Quarkus build (``io.apicurio:apicurio-registry-app:<v>:tar.gz:all``) and
serves the Confluent API at ``/apis/ccompat/v7``. It keeps schemas in memory (H2), which is all a
test session needs. It needs Java 21+ (found by :func:`java_command`).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

from cli.kafka.local import java_command
from tests.integration.harness import ROOT, free_port

VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"


def ensure(cache: Path = ROOT / ".cache" / "apicurio") -> Path:
    """Fetch and unpack the registry once; return the directory holding ``quarkus-run.jar``."""
    home = cache / VERSION
    if (home / "quarkus-run.jar").exists():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    mvn = shutil.which("mvn")
    assert mvn, "Maven is needed to fetch Apicurio Registry"
    subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
            f"-Dartifact={ARTIFACT}",
            f"-DoutputDirectory={cache}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    archive = cache / f"apicurio-registry-app-{VERSION}-all.tar.gz"
    staging = cache / f"{VERSION}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    staging.rename(home)
    archive.unlink()
    return home


class Apicurio:
    def __init__(self, workdir: Path) -> None:
        self.home = ensure()
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Confluent-compatible API, for ``SCHEMA_REGISTRY_URL``."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def start(self, timeout: float = 120) -> Apicurio:
        log = (self.workdir / "apicurio.log").open("wb")
        command = [java_command(21), "-Xmx384m"]
        command += [f"-Dquarkus.http.port={self.port}", "-Dquarkus.http.host=127.0.0.1"]
        # Quarkus also opens a management interface (default 0.0.0.0:9000): keep it private.
        management = f"-Dquarkus.management.port={free_port()}"
        command += [management, "-Dquarkus.management.host=127.0.0.1"]
        command += ["-jar", str(self.home / "quarkus-run.jar")]
        self.process = subprocess.Popen(
            command,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "apicurio.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("Apicurio Registry did not start in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
