"""The real services answer through their real clients, and the harness keeps its promises.

Kafka through aiokafka (produce, consume in a group, committed offsets, a broker restart in the
middle of a stream), Azurite through azure-storage-blob (sync and asyncio clients), MLflow
through MlflowClient (experiment, run, metric history, a proxied artifact). The harness's own
guarantees (one install across racing processes, a failed start quoting its log, a stop that
reaches every process of the service) are checked with small shell commands.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stockops_model.errors import ServiceUnavailableError
from stockops_model.testing import Azurite, KafkaBroker, MlflowServer, running
from stockops_model.testing.cache import install_once, is_installed
from stockops_model.testing.kafka import new_cluster_id
from stockops_model.testing.ports import is_accepting
from stockops_model.testing.processes import LocalService, ServiceProcess, start_in_folder
from stockops_model.testing.services import KUBE_MODULE, install_all

# Guards against a hang, never a measure of speed.
_DEADLINE = 60.0


async def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(_DEADLINE):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    received.extend((r.key, r.value) for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    return received


@pytest.mark.kafka
async def test_kafka_delivers_keyed_messages_in_order_and_keeps_group_offsets(
    kafka: KafkaBroker, kafka_topic: str
) -> None:
    sent = [(b"AAPL", f"bar-{i}".encode()) for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(kafka_topic, value, key=key)
    finally:
        await producer.stop()

    received = await _consume(kafka.bootstrap, kafka_topic, "sink", len(sent))

    assert received == sent
    # A new member of the same group resumes after what the first one committed.
    resumed = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id="sink")
    await resumed.start()
    try:
        assert await resumed.committed(TopicPartition(kafka_topic, 0)) == len(sent)
    finally:
        await resumed.stop()


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_kafka_restart_keeps_address_and_data_for_a_live_producer(
    kafka: KafkaBroker, kafka_topic: str, how: str
) -> None:
    address = kafka.bootstrap
    producer = AIOKafkaProducer(bootstrap_servers=address, acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(kafka_topic, f"before-{i}".encode())
        try:
            # The harness's start() blocks; keep it off the event loop the producer lives on.
            if how == "stop":
                await asyncio.to_thread(kafka.stop)
            else:
                await asyncio.to_thread(kafka.kill)
            assert not kafka.running
        finally:
            await asyncio.to_thread(kafka.start)
        for i in range(5):
            await producer.send_and_wait(kafka_topic, f"after-{i}".encode())
    finally:
        await producer.stop()

    received = await _consume(kafka.bootstrap, kafka_topic, "after-restart", 10)

    assert kafka.bootstrap == address
    assert [value for _, value in received] == [
        *(f"before-{i}".encode() for i in range(5)),
        *(f"after-{i}".encode() for i in range(5)),
    ]


@pytest.mark.azurite
def test_azurite_round_trips_a_blob_with_the_sync_client(
    azurite: Azurite, blob_container: str
) -> None:
    from azure.storage.blob import BlobServiceClient

    payload = os.urandom(300_000)
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        container = service.get_container_client(blob_container)
        container.upload_blob("bars/AAPL/2018/02/16.parquet", payload)

        names = [blob.name for blob in container.list_blobs(name_starts_with="bars/")]
        downloaded = container.download_blob("bars/AAPL/2018/02/16.parquet").readall()

    assert names == ["bars/AAPL/2018/02/16.parquet"]
    assert downloaded == payload


@pytest.mark.azurite
async def test_azurite_round_trips_a_blob_with_the_asyncio_client(
    azurite: Azurite, blob_container: str
) -> None:
    from azure.storage.blob import BlobServiceClient as SyncService
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient(
        account_url=azurite.blob_endpoint,
        credential={"account_name": azurite.account_name, "account_key": azurite.account_key},
    ) as service:
        container = service.get_container_client(blob_container)
        await container.upload_blob("a.txt", b"first")
        await container.upload_blob("a.txt", b"second", overwrite=True)
        downloaded = await (await container.download_blob("a.txt")).readall()

    assert downloaded == b"second"
    # Another client through the connection string sees the same object.
    with SyncService.from_connection_string(azurite.connection_string) as other:
        blob = other.get_blob_client(blob_container, "a.txt")
        assert blob.get_blob_properties().size == len(b"second")


@pytest.mark.mlflow
def test_mlflow_server_records_metrics_and_proxies_artifacts(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    experiment_id = client.create_experiment(f"smoke-{time.time_ns()}")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    for step, rmse in enumerate([0.9, 0.7, 0.6]):
        client.log_metric(run_id, "val_rmse", rmse, step=step)
    client.log_text(run_id, "naive beats nothing yet", "notes/summary.txt")
    client.set_terminated(run_id)

    history = client.get_metric_history(run_id, "val_rmse")
    local = client.download_artifacts(run_id, "notes/summary.txt", str(tmp_path))

    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.7), (2, 0.6)]
    assert Path(local).read_text() == "naive beats nothing yet"
    # Artifacts go through the server, not a path on the client's disk.
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.azurite
def test_running_starts_what_is_asked_and_stops_it_on_exit() -> None:
    from azure.storage.blob import BlobServiceClient

    with running(kafka=False, azurite=True, mlflow=False) as services:
        emulator = services.azurite
        with BlobServiceClient.from_connection_string(emulator.connection_string) as client:
            client.create_container("bench")
            assert [c.name for c in client.list_containers()] == ["bench"]
        with pytest.raises(RuntimeError, match="kafka was not started"):
            _ = services.kafka

    assert not emulator.running
    assert not is_accepting(emulator.port)
    assert not emulator.run_dir.exists()


def test_cluster_ids_are_kafka_uuids_the_storage_tool_will_not_take_for_options() -> None:
    # One in 64 plain base64url ids starts with '-'; 2,000 draws would meet ~31 of them.
    ids = [new_cluster_id() for _ in range(2000)]

    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_install_all_calls_the_kube_hook_with_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    hook = types.ModuleType(KUBE_MODULE)
    hook.install = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, KUBE_MODULE, hook)

    install_all(tmp_path, only=["kube"])

    assert calls == [tmp_path]


def test_install_all_skips_kube_when_its_module_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail exactly as a missing module does.
    monkeypatch.setitem(sys.modules, KUBE_MODULE, None)

    seconds = install_all(tmp_path, only=["kube"])

    assert list(seconds) == ["kube"]
    assert list(tmp_path.iterdir()) == []


def _lock_waiters(lock: Path) -> int:
    """How many callers are blocked in flock() on `lock`, as /proc/locks lists them."""
    inode = lock.stat().st_ino
    return sum(
        1
        for line in Path("/proc/locks").read_text().splitlines()
        if "->" in line and line.split()[-3].endswith(f":{inode}")
    )


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/locks")
def test_install_once_builds_once_when_callers_race(tmp_path: Path) -> None:
    target = tmp_path / "tool" / "1.0"
    builds: list[int] = []

    def build(staging: Path) -> None:
        builds.append(threading.get_ident())
        # Finish only once the three other racers wait on the lock (a fixed sleep could end
        # before a starved thread got there, and it would then find the install done).
        deadline = time.monotonic() + _DEADLINE
        while _lock_waiters(target.with_name("1.0.lock")) < 3:
            assert time.monotonic() < deadline, "the other racers never reached the lock"
            time.sleep(0.01)
        (staging / "bin").write_text("#!/bin/sh\n")

    racers = [threading.Thread(target=install_once, args=(target, build)) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert len(builds) == 1
    assert is_installed(target)
    assert (target / "bin").read_text() == "#!/bin/sh\n"
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []


def test_install_once_leaves_nothing_behind_when_the_build_fails(tmp_path: Path) -> None:
    target = tmp_path / "tool" / "1.0"

    def build(staging: Path) -> None:
        (staging / "half").write_text("x")
        raise ServiceUnavailableError("registry unreachable")

    with pytest.raises(ServiceUnavailableError, match="registry unreachable"):
        install_once(target, build)

    assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["1.0.lock"]


def test_a_service_that_dies_while_starting_reports_its_log(tmp_path: Path) -> None:
    service = ServiceProcess(
        "broken", ["sh", "-c", "echo 'Address already in use'; exit 3"], tmp_path / "broken.log"
    )
    service.start()

    with pytest.raises(ServiceUnavailableError) as failure:
        service.wait_ready(lambda: False, timeout=_DEADLINE)

    assert "exited with code 3" in str(failure.value)
    assert "Address already in use" in str(failure.value)


def test_a_service_that_never_answers_is_killed_and_reports_its_log(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    service = ServiceProcess(
        "silent", ["sh", "-c", "echo 'waiting for nothing'; exec sleep 300"], log
    )
    service.start()
    # The 1 s below is the service's deadline; on a loaded machine the shell may not have
    # written its line by then, and the log the error quotes would be empty.
    deadline = time.monotonic() + _DEADLINE
    while "waiting for nothing" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the service never wrote its line"
        time.sleep(0.05)

    with pytest.raises(ServiceUnavailableError, match="waiting for nothing"):
        service.wait_ready(lambda: False, timeout=1.0, interval=0.1)

    assert not service.running


def _is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_stop_reaches_every_process_of_the_service(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # A parent that ignores SIGTERM, like a server stuck in shutdown, with a child of its own.
    script = f"trap '' TERM; sleep 300 & echo $! > {pid_file}; wait"
    service = ServiceProcess("stubborn", ["sh", "-c", script], tmp_path / "stubborn.log")
    service.start()
    deadline = time.monotonic() + _DEADLINE
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())

    service.stop(timeout=0.5)

    assert not service.running
    deadline = time.monotonic() + _DEADLINE
    while not _is_gone(child):
        assert time.monotonic() < deadline, f"child {child} outlived its service"
        time.sleep(0.05)


def test_a_service_whose_handle_cannot_be_made_leaves_no_temporary_folder() -> None:
    folders: list[Path] = []

    def create(folder: Path, remove: bool) -> LocalService:
        folders.append(folder)
        raise ServiceUnavailableError("`java` is not on PATH")

    with pytest.raises(ServiceUnavailableError, match="java"):
        start_in_folder(create, None, prefix="stockops-test-")
    (folder,) = folders
    assert not folder.exists()
