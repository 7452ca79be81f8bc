"""Prometheus metrics of one scoring-server app, in a registry of its own.

Each app gets its own `CollectorRegistry` instead of the process-global one, so tests (and
a process embedding several apps) can build as many apps as they like without "duplicated
timeseries" errors, and `/metrics` shows exactly this app's series:

- `stockops_serve_request_seconds{route}`: latency histogram per route template;
- `stockops_serve_errors_total{reason}`: failed requests by the error body's reason;
- `stockops_serve_model_info{name,version}`: 1 for the model now serving;
- `stockops_serve_reloads_total{outcome}`: model loads, `loaded` or `failed`;
- `stockops_serve_batch_windows`: windows per network call (how well batching works).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Requests take milliseconds when healthy; the tail buckets catch a cold model or a slow store.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ServerMetrics:
    """The four metric families of the server (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "stockops_serve_request_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "stockops_serve_errors_total",
            "Requests answered with an error, by the error body's reason.",
            ["reason"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "stockops_serve_model_info",
            "1 for the registered model name and version now serving.",
            ["name", "version"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "stockops_serve_reloads_total",
            "Model loads by outcome (loaded, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_windows = Histogram(
            "stockops_serve_batch_windows",
            "Windows per network call (requests are batched while a call runs).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self._serving: tuple[str, str] | None = None

    def serving(self, name: str, version: str) -> None:
        """Point `stockops_serve_model_info` at the model now serving (drops the old one)."""
        if self._serving is not None:
            self.model_info.remove(*self._serving)
        self._serving = (name, version)
        self.model_info.labels(name, version).set(1)

    def exposition(self) -> bytes:
        """The text exposition format of this app's registry."""
        return generate_latest(self.registry)
