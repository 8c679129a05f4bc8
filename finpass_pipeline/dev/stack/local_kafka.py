"""A single-node Apache Kafka broker (KRaft, broker + controller) from Maven Central jars.

Jars are resolved once with Maven into a cache outside the clone (later runs take seconds); the
broker's data, configuration, log and pid live under the dev home.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from finpass_pipeline.dev.stack.proc import (
    DevStackError,
    cmdline,
    pid_alive,
    port_open,
    read_pid,
    tail,
    terminate,
)

KAFKA_VERSION = "4.1.1"
HOST = "127.0.0.1"
PORT = 9092
CONTROLLER_PORT = 9093
READY_LINE = "Kafka Server started"
START_TIMEOUT_S = 120.0

SERVER_PROPERTIES = f"""\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={HOST}:{CONTROLLER_PORT}
listeners=PLAINTEXT://{HOST}:{PORT},CONTROLLER://{HOST}:{CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://{HOST}:{PORT},CONTROLLER://{HOST}:{CONTROLLER_PORT}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={{data}}
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# On, as in Kafka's default: a producer that starts before `finpass-pipeline topics` still works
# (auto-created topics get num.partitions=6). Production creates topics with `topics`.
auto.create.topics.enable=true
delete.topic.enable=true
# Room above the pipeline's 1 MiB event limit, so an oversize event reaches the dead-letter path.
message.max.bytes=2097152
"""

LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.append = false
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cache_dir() -> Path:
    base = os.environ.get("FINPASS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "finpass-pipeline"
    )
    return Path(base)


def ensure_jars() -> Path:
    """The broker's classpath directory, resolved from Maven Central on first use."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise DevStackError("Maven (mvn) not found: install it (`apt-get install -y maven`)")
    pom = resources.files("finpass_pipeline.dev.stack").joinpath("kafka-pom.xml").read_text()
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent) as work:
        Path(work, "pom.xml").write_text(pom.replace("${kafka.version}", KAFKA_VERSION, 1))
        staged = Path(work, "libs")
        result = subprocess.run(  # noqa: S603  (fixed argv)
            ["mvn", "-q", "-B", "-f", str(Path(work, "pom.xml")),  # noqa: S607
             "dependency:copy-dependencies", f"-DoutputDirectory={staged}",
             "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0 or not any(staged.glob("kafka_2.13-*.jar")):
            last = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise DevStackError(f"Maven could not resolve Kafka {KAFKA_VERSION}: {last}")
        (staged / ".complete").write_text(KAFKA_VERSION + "\n")
        if libs.exists():
            shutil.rmtree(libs)
        staged.rename(libs)
    return libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise DevStackError(
            "Java not found: Kafka needs Java 17+ (`apt-get install -y openjdk-17-jre-headless`)"
        )
    return java


@dataclass(frozen=True)
class LocalKafka:
    """The broker's files under `root`: data, server.properties, log, pid."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{PORT}"

    def pid(self) -> int | None:
        """The recorded broker pid, if that process is still our broker."""
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid) or "kafka.Kafka" not in cmdline(pid):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def _configure(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "server.properties"
        config.write_text(SERVER_PROPERTIES.format(data=self.data))
        (self.root / "log4j2.properties").write_text(LOG4J2_PROPERTIES.format(log=self.log))
        return config

    def _java_command(self, libs: Path, *args: str, heap: str = "") -> list[str]:
        command = [_java()]
        if heap:
            command += [f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC"]
        return [*command, f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
                "-cp", f"{libs}/*", *args]

    def _format(self, libs: Path, config: Path) -> None:
        if (self.data / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(  # noqa: S603  (fixed argv)
            self._java_command(libs, "kafka.tools.StorageTool", "format", "--standalone",
                               "-t", cluster_id, "-c", str(config)),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise DevStackError(f"formatting Kafka storage failed: {result.stderr.strip()[-300:]}")

    def up(self) -> str:
        """Resolve jars, format once, start in the background and wait until ready; idempotent."""
        if self.running():
            return f"Kafka already up ({self.bootstrap}, pid {self.pid()})"
        for port in (PORT, CONTROLLER_PORT):
            if port_open(HOST, port):
                raise DevStackError(
                    f"port {port} on {HOST} is taken by another process: stop it, or point "
                    "FINPASS_KAFKA_BOOTSTRAP_SERVERS at an existing broker to use it instead"
                )
        libs = ensure_jars()
        config = self._configure()
        self._format(libs, config)
        # Launched through a shell that backgrounds it and reports its pid: the broker outlives
        # this process (stopped later by that recorded pid) and no Popen object is left behind.
        launched = subprocess.run(  # noqa: S603  (fixed argv)
            ["/bin/sh", "-c", 'nohup "$@" >"$FINPASS_KAFKA_STDOUT" 2>&1 </dev/null & echo $!',
             "sh", *self._java_command(libs, "kafka.Kafka", str(config), heap="512m")],
            env={**os.environ, "FINPASS_KAFKA_STDOUT": str(self.root / "stdout.log")},
            capture_output=True, text=True, check=True, start_new_session=True,
        )
        pid = int(launched.stdout.strip())
        self.pid_file.write_text(f"{pid}\n")
        self._wait_ready(pid)
        return f"Kafka up ({self.bootstrap}, pid {pid}; log {self.log})"

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise DevStackError(
                    f"Kafka broker (pid {pid}) exited while starting; last lines of {self.log}:"
                    f"\n{tail(self.log)}\n{tail(self.root / 'stdout.log')}"
                )
            if self._log_says_ready() and port_open(HOST, PORT):
                return
            time.sleep(0.25)
        terminate(pid)
        self.pid_file.unlink(missing_ok=True)
        raise DevStackError(
            f"Kafka broker not ready after {START_TIMEOUT_S:.0f}s; last lines of {self.log}:\n"
            f"{tail(self.log)}"
        )

    def _log_says_ready(self) -> bool:
        try:
            return READY_LINE in self.log.read_text(errors="replace")
        except OSError:
            return False

    def down(self) -> str:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return "Kafka not running (nothing to stop)"
        terminate(pid, timeout=60.0)
        self.pid_file.unlink(missing_ok=True)
        return f"Kafka stopped (pid {pid})"

    def kill(self) -> None:
        """SIGKILL the broker (fault tests): no clean shutdown."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, 9)
            while pid_alive(pid):
                time.sleep(0.05)

    def restart(self) -> None:
        self.down()
        self.up()

    def status(self) -> str:
        pid = self.pid()
        state = f"up (pid {pid})" if pid else "down"
        return f"Kafka: {state} ({self.bootstrap}; data {self.data}; log {self.log})"
