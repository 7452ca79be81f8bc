"""Session fixtures for the real services: Kafka, Azurite and the MLflow tracking server.

Each service starts lazily, the first time a test asks for its fixture, and once per session;
a unit test run starts nothing. The services are installed on first use into the cache
(`STOCKOPS_CACHE`, default `~/.cache/stockops`; `make services` fills it ahead of pytest) and
keep their data and logs under pytest's temporary folder, so a failed run can be read after.

A test that uses one of these fixtures gets the matching marker (kafka, azurite, mlflow) even
if it forgot it, so `-m "not kafka"` deselects it reliably.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from stockops_model.testing import (
    Azurite,
    KafkaBroker,
    MlflowServer,
    start_azurite,
    start_kafka,
    start_mlflow_server,
)
from stockops_model.testing.processes import LocalService

_S = TypeVar("_S", bound=LocalService)

_MARKER_OF_FIXTURE = {
    "kafka": "kafka",
    "kafka_topic": "kafka",
    "azurite": "azurite",
    "blob_container": "azurite",
    "mlflow_server": "mlflow",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for fixture, marker in _MARKER_OF_FIXTURE.items():
            if fixture in fixtures and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _isolated_mlflow_tracking_uri() -> Iterator[None]:
    """Undo what `mlflow.set_tracking_uri` leaves behind after each test.

    MLflow keeps the URI in a module global and also exports it as `MLFLOW_TRACKING_URI`,
    which every stockops command prefers to the spec's: one test's SQLite file must not
    become the next test's registry.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if tracking is not None:
        tracking._tracking_uri = None  # back to "not set": the env var (or default) again


def _session_service(
    start: Callable[[Path], _S], tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[_S]:
    service = start(tmp_path_factory.mktemp(name))
    try:
        yield service
    finally:
        service.close()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One real Kafka broker (KRaft) for the session; `.bootstrap` is its address.

    A test may `stop()`/`start()` or `kill()`/`start()` it (same port, same data), and must
    leave it running.
    """
    yield from _session_service(start_kafka, tmp_path_factory, "kafka")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One real Azurite blob emulator for the session (`.connection_string`, `.blob_endpoint`)."""
    yield from _session_service(start_azurite, tmp_path_factory, "azurite")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow tracking server for the session; `.tracking_uri` is its address."""
    yield from _session_service(start_mlflow_server, tmp_path_factory, "mlflow")


@pytest.fixture
def kafka_topic(kafka: KafkaBroker, request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses (created on first use: auto-creation is on)."""
    stem = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:80].strip("-.")
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def blob_container(azurite: Azurite) -> Iterator[str]:
    """A new, empty container in Azurite for one test, deleted afterwards; yields its name."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    name = f"t-{uuid.uuid4().hex[:20]}"
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        service.create_container(name)
        try:
            yield name
        finally:
            # The test may have deleted it itself.
            with contextlib.suppress(ResourceNotFoundError):
                service.delete_container(name)
