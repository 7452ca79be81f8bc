"""Data-plane settings: environment parsing, and how spec, env and flags combine."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockops_model.errors import SettingsError
from stockops_model.settings import DataPlaneSettings, kafka_config, store_target
from stockops_model.spec import KafkaSpec, StorageSpec


def test_defaults_need_no_environment() -> None:
    s = DataPlaneSettings.from_env({})
    assert (s.sink_batch_max, s.sink_batch_wait_ms, s.kafka_compression) == (5000, 500, "gzip")
    assert s.blob_connection_string is None


def test_each_variable_is_read() -> None:
    s = DataPlaneSettings.from_env(
        {
            "STOCKOPS_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "STOCKOPS_KAFKA_COMPRESSION": "LZ4",
            "STOCKOPS_SINK_BATCH_MAX": "250",
            "STOCKOPS_SINK_BATCH_WAIT_MS": "0",
            "AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
        }
    )
    assert s.kafka_bootstrap == "k1:9092,k2:9092"
    assert s.kafka_compression == "lz4"
    assert (s.sink_batch_max, s.sink_batch_wait_ms) == (250, 0)
    assert s.blob_connection_string == "UseDevelopmentStorage=true"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STOCKOPS_SINK_BATCH_MAX", "many"),
        ("STOCKOPS_SINK_BATCH_MAX", "0"),
        ("STOCKOPS_KAFKA_COMPRESSION", "brotli"),
        ("STOCKOPS_KAFKA_SECURITY_PROTOCOL", "TLS"),
    ],
)
def test_a_bad_value_fails_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        DataPlaneSettings.from_env({name: value})


def test_flags_beat_environment_beats_spec_for_kafka() -> None:
    spec = KafkaSpec(bootstrap_servers="spec:9092")
    env = DataPlaneSettings.from_env({"STOCKOPS_KAFKA_BOOTSTRAP": "env:9092"})
    assert kafka_config(DataPlaneSettings(), spec).bootstrap == "spec:9092"
    assert kafka_config(env, spec).bootstrap == "env:9092"
    assert kafka_config(env, spec, bootstrap="flag:9092").bootstrap == "flag:9092"
    with pytest.raises(SettingsError, match="bootstrap"):
        kafka_config(DataPlaneSettings(), None)
    with pytest.raises(SettingsError, match="SASL"):
        kafka_config(DataPlaneSettings(), KafkaSpec(security_protocol="SASL_SSL"))


def test_a_local_storage_spec_becomes_a_file_store(tmp_path: Path) -> None:
    location, _ = store_target(DataPlaneSettings(), StorageSpec(path=str(tmp_path), prefix="bars"))
    assert (location.scheme, location.root, location.prefix) == ("file", tmp_path, "bars")


def test_a_blob_storage_spec_uses_the_account_url_with_azure_credentials() -> None:
    spec = StorageSpec(account="stockopsdata", container="bars", prefix="prod/bars")
    location, creds = store_target(DataPlaneSettings(), spec)
    assert str(location) == "azblob://bars/prod/bars"
    assert creds.account_url == "https://stockopsdata.blob.core.windows.net"
    assert creds.connection_string is None


def test_a_blob_store_url_without_credentials_is_refused() -> None:
    with pytest.raises(SettingsError, match="connection"):
        store_target(DataPlaneSettings(), None, url="azblob://bars/x")
    location, creds = store_target(
        DataPlaneSettings(),
        None,
        url="azblob://bars/x",
        connection_string="UseDevelopmentStorage=true",
    )
    assert location.container == "bars"
    assert creds.connection_string == "UseDevelopmentStorage=true"
    with pytest.raises(SettingsError, match="scheme"):
        store_target(DataPlaneSettings(), None, url="s3://bucket/x")
