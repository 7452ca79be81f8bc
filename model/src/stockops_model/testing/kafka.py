"""A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM) for tests.

The jars come from Maven Central through the installed `mvn` and the small pom in
`tools/kafka/pom.xml` (the Kafka version lives there, and only there); they are copied once
into `<cache>/kafka/<version>-<pom hash>/libs`. The broker runs as
`java -cp 'libs/*' kafka.Kafka server.properties` with the installed Java (17 or newer, as
Kafka 4 brokers require), after `kafka.tools.StorageTool format` on first start.

It listens on 127.0.0.1 only, on a free port (and a second one for the controller), with
replication factor 1 and one partition for its internal topics, so a single node can serve
consumer groups and transactions. `stop()` then `start()` brings the SAME broker back on the
same ports and data, which is how a test restarts it mid-stream; `kill()` is a crash.

Limits: needs the tools/kafka folder of a source checkout (set `STOCKOPS_KAFKA_POM` to use
another pom); one node, so nothing here exercises replication or leader election.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import shutil
import signal
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from stockops_model.errors import ServiceUnavailableError
from stockops_model.testing.cache import cache_dir, install_once
from stockops_model.testing.ports import LOOPBACK, is_accepting, pick_free_port
from stockops_model.testing.processes import (
    LocalService,
    ServiceProcess,
    run_logged,
    start_in_folder,
)

log = logging.getLogger(__name__)

# A guard against a hang, not a speed target, sized for 2 busy cores:
# ready in 4-9 s (about 3 CPU-s with the class archive), 25 s at a load of 13 without it.
READY_TIMEOUT = 240.0

POM_ENV = "STOCKOPS_KAFKA_POM"
_T = TypeVar("_T")

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def find_pom() -> Path:
    """Locate the pom that pins the Kafka version: `STOCKOPS_KAFKA_POM` or the checkout's."""
    raw = os.environ.get(POM_ENV)
    if raw:
        return Path(raw).expanduser().resolve()
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "kafka" / "pom.xml"
        if candidate.is_file():
            return candidate
    raise ServiceUnavailableError(
        f"tools/kafka/pom.xml not found above {Path(__file__).parent}; run from a source "
        f"checkout of stockops or set {POM_ENV} to a pom that lists the Kafka broker jars"
    )


def kafka_version(pom: Path) -> str:
    """Read the Kafka version the pom pins (its `kafka.version` property)."""
    found = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if found is None:
        raise ServiceUnavailableError(f"{pom} has no <kafka.version> property")
    return found.group(1)


def find_java() -> str:
    """Return the `java` of `JAVA_HOME`, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise ServiceUnavailableError(
            "no `java` on PATH and no JAVA_HOME: Kafka 4 brokers need a Java 17+ runtime"
        )
    return found


def install_kafka(cache: Path | None = None) -> Path:
    """Copy the broker's jars into the cache once; return the folder holding them.

    The folder name carries the pom's hash, so editing the pom installs afresh.

    Raises:
        ServiceUnavailableError: `mvn` is missing or could not fetch the jars.
    """
    pom = find_pom()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:10]
    root = (cache or cache_dir()) / "kafka"
    target = root / f"{kafka_version(pom)}-{digest}"

    def build(staging: Path) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceUnavailableError("`mvn` is not on PATH: it fetches the Kafka jars")
        run_logged(
            [
                mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
                "dependency:copy-dependencies", f"-DoutputDirectory={staging / 'libs'}",
            ],
            root / "install.log",
            what="fetching the Kafka jars with Maven",
            timeout=900,
        )  # fmt: skip

    install_once(target, build)
    return target / "libs"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in Kafka's Uuid text form (URL-safe base64).

    Like Kafka's own `Uuid.randomUuid()`, it never starts with '-', which the storage tool's
    argument parser would take for an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _class_archive(libs: Path, java: str) -> Path:
    # A JVM refuses an archive made by another JVM build, so the archive is named after it.
    real = Path(java).resolve()
    key = hashlib.sha256(f"{real}:{real.stat().st_mtime_ns}".encode()).hexdigest()[:10]
    return libs.parent / f"classes-{key}.jsa"


def _run_async(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    # A thread of its own, so probing works whether or not the caller has an event loop running.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _probe(bootstrap: str, port: int) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        if not any(b.get("port") == port for b in cluster.get("brokers", [])):
            return False
        # Creates __consumer_offsets now, so a test's first consumer group does not wait.
        await admin.find_coordinator("stockops-readiness-probe")
        return True
    except Exception:  # any error means "not yet": the caller retries until its deadline
        return False
    finally:
        await admin.close()


class KafkaBroker(LocalService):
    """A single-node KRaft broker on 127.0.0.1: its address, and start/stop/kill/close.

    Create it with `start_kafka()`. The ports and the data folder are fixed at creation, so a
    restart keeps topics, offsets and the address every client already holds.
    """

    ready_timeout = READY_TIMEOUT
    ready_interval = 0.3

    def __init__(
        self,
        libs: Path,
        run_dir: Path,
        *,
        heap: str = "512m",
        remove_run_dir: bool = False,
    ) -> None:
        self.libs = libs
        self.run_dir = run_dir
        self.port = pick_free_port()
        self.controller_port = pick_free_port()
        self.data_dir = run_dir / "data"
        self.config_path = run_dir / "server.properties"
        self.log_path = run_dir / "kafka.log"
        self._remove_run_dir = remove_run_dir
        self._java = find_java()
        log4j = run_dir / "log4j2.properties"
        run_dir.mkdir(parents=True, exist_ok=True)
        log4j.write_text(_LOG4J2)
        self.config_path.write_text(self._server_properties())
        self._jvm = [
            self._java,
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{libs}/*",
        ]
        # Class data sharing: the first broker that stops cleanly dumps the classes it loaded
        # into the install folder, and later JVMs map them instead of loading and verifying
        # thousands of classes again (about 40% off a start-up on this machine).
        self._archive = _class_archive(libs, self._java)
        self._archive_draft = run_dir / "classes.jsa.draft"
        self.process = ServiceProcess("kafka", self._broker_command(), self.log_path)

    def _cds_options(self, *, may_dump: bool) -> list[str]:
        if self._archive.is_file():
            return [f"-XX:SharedArchiveFile={self._archive}"]
        return [f"-XX:ArchiveClassesAtExit={self._archive_draft}"] if may_dump else []

    def _broker_command(self) -> list[str]:
        return [
            *self._jvm[:1],
            *self._cds_options(may_dump=True),
            *self._jvm[1:],
            "kafka.Kafka",
            str(self.config_path),
        ]

    def _publish_archive(self) -> None:
        # Only a JVM that exited on its own finished writing its archive; a SIGKILLed one
        # may have left half a file.
        draft = self._archive_draft
        if draft.is_file() and self.process.returncode not in (None, -signal.SIGKILL):
            os.replace(draft, self._archive)
        draft.unlink(missing_ok=True)

    @property
    def bootstrap(self) -> str:
        """`host:port` for `bootstrap_servers`."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        """The bootstrap address (see `bootstrap`)."""
        return self.bootstrap

    def _server_properties(self) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},"
            f"CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            # One partition instead of 50: fast to create, and plenty for one test session.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Tests join groups one consumer at a time; the default 3 s delay only slows them.
            "group.initial.rebalance.delay.ms": "0",
            # After a kill(), the controller refuses the new incarnation until the old one's
            # session expires (9 s by default); heartbeats stay well inside the shorter one.
            "broker.session.timeout.ms": "5000",
            "broker.heartbeat.interval.ms": "1000",
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        run_logged(
            [
                *self._jvm[:1], *self._cds_options(may_dump=False), *self._jvm[1:],
                "kafka.tools.StorageTool", "format",
                "--cluster-id", new_cluster_id(), "--config", str(self.config_path),
            ],
            self.log_path,
            what="formatting the Kafka storage",
            timeout=120,
        )  # fmt: skip

    def launch(self) -> None:
        """Start the broker process (formatting its storage the first time); do not wait."""
        self._format_storage()
        self.process.argv = self._broker_command()
        super().launch()

    def _ready(self) -> bool:
        bootstrap, port = self.bootstrap, self.port
        return is_accepting(port) and _run_async(lambda: _probe(bootstrap, port))

    def stop(self, timeout: float | None = None) -> None:
        """Shut the broker down cleanly (SIGTERM), keeping its data for a later `start()`."""
        super().stop(timeout)
        self._publish_archive()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; `start()` recovers from its data."""
        self.process.kill()
        self._archive_draft.unlink(missing_ok=True)


def start_kafka(
    run_dir: Path | None = None,
    *,
    cache: Path | None = None,
    timeout: float = READY_TIMEOUT,
    wait: bool = True,
) -> KafkaBroker:
    """Install if needed, then start a fresh broker and wait until it is ready.

    Args:
        run_dir: where its config, data and log go; kept afterwards. None: a temporary
            folder that `close()` deletes.
        cache: the install cache (default: `cache_dir()`).
        timeout: seconds to wait for it to answer.
        wait: False returns as soon as the process is launched; then call
            `wait_until_ready()` (and `close()` if that fails) yourself.
    """
    libs = install_kafka(cache)
    return start_in_folder(
        lambda folder, remove: KafkaBroker(libs, folder, remove_run_dir=remove),
        run_dir,
        prefix="stockops-kafka-",
        timeout=timeout,
        wait=wait,
    )
