"""Real services for tests and benchmarks, started by the code that needs them.

The public surface, in the spirit of `kopf.testing`: start a service, get a handle with its
address, stop it at the end. Everything listens on 127.0.0.1 on free ports and is installed
once into `STOCKOPS_CACHE` (default `~/.cache/stockops`)::

    from stockops_model.testing import running

    with running(kafka=True, azurite=True, mlflow=True) as services:
        services.kafka.bootstrap, services.azurite.connection_string, services.mlflow.tracking_uri

Pytest users get the same handles as the session fixtures `kafka`, `azurite` and
`mlflow_server` of `tests/conftest.py`. Limits: Linux/POSIX only; needs Java 17+ and Maven
(Kafka), Node.js and npm (Azurite), and the `ml` extra (MLflow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stockops_model.testing.azurite import Azurite, start_azurite
from stockops_model.testing.cache import cache_dir
from stockops_model.testing.kafka import KafkaBroker, start_kafka
from stockops_model.testing.mlflow_server import MlflowServer, start_mlflow_server

if TYPE_CHECKING:
    from stockops_model.testing.services import Services, install_all, running

__all__ = [
    "Azurite",
    "KafkaBroker",
    "MlflowServer",
    "Services",
    "cache_dir",
    "install_all",
    "running",
    "start_azurite",
    "start_kafka",
    "start_mlflow_server",
]

_FROM_SERVICES = {"Services", "install_all", "running"}


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m stockops_model.testing.services` does not find that
    # module already imported by its own package (runpy warns, and it would load twice).
    if name in _FROM_SERVICES:
        from stockops_model.testing import services

        return getattr(services, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
