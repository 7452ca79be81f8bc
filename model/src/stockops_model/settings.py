"""Data-plane settings (`feed`, `sink`) read from ``STOCKOPS_*`` environment variables.

The StockModel spec says WHAT to ingest (tickers, source, topic, storage); these settings
say HOW this process connects and tunes itself, and carry secrets the spec must not hold.
Every variable is optional; a value that does not parse fails fast with a `SettingsError`
naming the variable. Command-line flags of `stockops feed|sink` override both.

Variables (default in brackets):

- ``STOCKOPS_KAFKA_BOOTSTRAP`` [spec]: host:port list; overrides spec.source.kafka.
- ``STOCKOPS_KAFKA_SECURITY_PROTOCOL`` [spec]: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
- ``STOCKOPS_KAFKA_SASL_MECHANISM`` [PLAIN]: SASL mechanism (Event Hubs: PLAIN).
- ``STOCKOPS_KAFKA_SASL_USERNAME`` / ``..._PASSWORD``: SASL credentials (Event Hubs:
  ``$ConnectionString`` and the namespace connection string, from the spec's Secret).
- ``STOCKOPS_KAFKA_COMPRESSION`` [gzip]: none, gzip, snappy, lz4 or zstd.
- ``STOCKOPS_KAFKA_PARTITIONS`` [6], ``STOCKOPS_KAFKA_REPLICATION_FACTOR`` [1]: for topics
  this process creates when they are missing.
- ``STOCKOPS_SINK_GROUP`` [stockops-sink]: consumer group of the sink.
- ``STOCKOPS_SINK_BATCH_MAX`` [5000]: most messages in one sink batch.
- ``STOCKOPS_SINK_BATCH_WAIT_MS`` [500]: longest wait to fill a batch after its first message.
- ``STOCKOPS_STORE`` [spec]: store URL, ``file:///path`` or ``azblob://container/prefix``.
- ``STOCKOPS_STORE_CONCURRENCY`` [32]: day objects read or written at once.
- ``STOCKOPS_BLOB_CONNECTION_STRING`` (or ``AZURE_STORAGE_CONNECTION_STRING``): Blob
  connection string, for Azurite and local use.
- ``STOCKOPS_BLOB_ACCOUNT_URL`` [spec]: account URL used with ``DefaultAzureCredential``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from stockops_model.errors import SettingsError

if TYPE_CHECKING:
    from stockops_model.bus import KafkaConfig
    from stockops_model.spec import KafkaSpec, StorageSpec
    from stockops_model.store import BlobCredentials, StoreLocation

_T = TypeVar("_T")

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class DataPlaneSettings:
    """How the feed and the sink connect and batch; see the module docstring for variables."""

    kafka_bootstrap: str | None = None
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_compression: str = "gzip"
    kafka_partitions: int = 6
    kafka_replication_factor: int = 1
    sink_group: str = "stockops-sink"
    sink_batch_max: int = 5000
    sink_batch_wait_ms: int = 500
    store: str | None = None
    store_concurrency: int = 32
    blob_connection_string: str | None = None
    blob_account_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DataPlaneSettings:
        """Read the settings from `env`.

        Raises:
            SettingsError: a variable is set to a value that does not parse.
        """

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def parsed(name: str, default: _T, parse: Callable[[str], _T]) -> _T:
            raw = text(name)
            if raw is None:
                return default
            try:
                return parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r}: {exc}") from None

        def choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
            def check(raw: str) -> str:
                value = raw.upper() if upper else raw.lower()
                if value not in options:
                    raise ValueError(f"expected one of {', '.join(options)}")
                return value

            return check

        return cls(
            kafka_bootstrap=text("STOCKOPS_KAFKA_BOOTSTRAP"),
            kafka_security_protocol=parsed(
                "STOCKOPS_KAFKA_SECURITY_PROTOCOL", None, choice(SECURITY_PROTOCOLS, upper=True)
            ),
            kafka_sasl_mechanism=text("STOCKOPS_KAFKA_SASL_MECHANISM") or "PLAIN",
            kafka_sasl_username=text("STOCKOPS_KAFKA_SASL_USERNAME"),
            kafka_sasl_password=text("STOCKOPS_KAFKA_SASL_PASSWORD"),
            kafka_compression=parsed("STOCKOPS_KAFKA_COMPRESSION", "gzip", choice(COMPRESSIONS)),
            kafka_partitions=parsed("STOCKOPS_KAFKA_PARTITIONS", 6, _positive_int),
            kafka_replication_factor=parsed("STOCKOPS_KAFKA_REPLICATION_FACTOR", 1, _positive_int),
            sink_group=text("STOCKOPS_SINK_GROUP") or "stockops-sink",
            sink_batch_max=parsed("STOCKOPS_SINK_BATCH_MAX", 5000, _positive_int),
            sink_batch_wait_ms=parsed("STOCKOPS_SINK_BATCH_WAIT_MS", 500, _non_negative_int),
            store=text("STOCKOPS_STORE"),
            store_concurrency=parsed("STOCKOPS_STORE_CONCURRENCY", 32, _positive_int),
            blob_connection_string=(
                text("STOCKOPS_BLOB_CONNECTION_STRING") or text("AZURE_STORAGE_CONNECTION_STRING")
            ),
            blob_account_url=text("STOCKOPS_BLOB_ACCOUNT_URL"),
        )


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


# --------------------------------------------------------------------------- resolution
# What a workload actually uses: the spec, then the environment, then the command line.


def kafka_config(
    settings: DataPlaneSettings,
    spec_kafka: KafkaSpec | None = None,
    *,
    bootstrap: str | None = None,
    client_id: str = "stockops",
) -> KafkaConfig:
    """The Kafka connection in force (flag > env > spec).

    Raises:
        SettingsError: no bootstrap server anywhere, or SASL without credentials.
    """
    from stockops_model.bus import KafkaConfig

    servers = bootstrap or settings.kafka_bootstrap or (spec_kafka and spec_kafka.bootstrap_servers)
    if not servers:
        raise SettingsError(
            "no Kafka bootstrap server: pass --bootstrap, set STOCKOPS_KAFKA_BOOTSTRAP or "
            "spec.source.kafka.bootstrapServers"
        )
    protocol = settings.kafka_security_protocol or (
        spec_kafka.security_protocol if spec_kafka else "PLAINTEXT"
    )
    if protocol.startswith("SASL") and not (
        settings.kafka_sasl_username and settings.kafka_sasl_password
    ):
        raise SettingsError(
            f"Kafka security protocol {protocol} needs STOCKOPS_KAFKA_SASL_USERNAME and "
            "STOCKOPS_KAFKA_SASL_PASSWORD"
        )
    return KafkaConfig(
        bootstrap=servers,
        client_id=client_id,
        security_protocol=protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=settings.kafka_sasl_password,
        compression=None if settings.kafka_compression == "none" else settings.kafka_compression,
        partitions=settings.kafka_partitions,
        replication_factor=settings.kafka_replication_factor,
    )


def store_target(
    settings: DataPlaneSettings,
    spec_storage: StorageSpec | None = None,
    *,
    url: str | None = None,
    connection_string: str | None = None,
    account_url: str | None = None,
) -> tuple[StoreLocation, BlobCredentials]:
    """The store location and Blob credentials in force (flag > env > spec).

    A spec with ``storage.path`` maps to ``file://<abs path>`` with ``storage.prefix``; one
    with ``storage.account`` and ``storage.container`` maps to
    ``azblob://<container>/<prefix>`` on ``https://<account>.blob.core.windows.net``.

    Raises:
        SettingsError: no store anywhere, or a store URL that does not parse.
    """
    from pathlib import Path

    from stockops_model.errors import StoreError
    from stockops_model.store import BlobCredentials, StoreLocation

    chosen = url or settings.store
    spec_account_url = None
    try:
        if chosen:
            location = StoreLocation.parse(chosen)
        elif spec_storage is not None and spec_storage.path is not None:
            root = Path(spec_storage.path).expanduser().resolve()
            location = StoreLocation(scheme="file", root=root, prefix=spec_storage.prefix)
        elif spec_storage is not None and spec_storage.container is not None:
            location = StoreLocation(
                scheme="azblob", container=spec_storage.container, prefix=spec_storage.prefix
            )
            spec_account_url = f"https://{spec_storage.account}.blob.core.windows.net"
        else:
            raise SettingsError(
                "no bar store: pass --store file:///path or azblob://container/prefix, set "
                "STOCKOPS_STORE, or give spec.storage"
            )
    except StoreError as exc:
        raise SettingsError(str(exc)) from None
    credentials = BlobCredentials(
        connection_string=connection_string or settings.blob_connection_string,
        account_url=account_url or settings.blob_account_url or spec_account_url,
    )
    if location.scheme == "azblob" and not (
        credentials.connection_string or credentials.account_url
    ):
        raise SettingsError(
            f"store {location} needs --connection-string, STOCKOPS_BLOB_CONNECTION_STRING, "
            "AZURE_STORAGE_CONNECTION_STRING or STOCKOPS_BLOB_ACCOUNT_URL"
        )
    return location, credentials
