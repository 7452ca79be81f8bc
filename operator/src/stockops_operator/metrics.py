"""Prometheus metrics of the operator, served on `/metrics` (port `STOCKOPS_METRICS_PORT`).

Counters answer what an on-call person asks first: is it reconciling, are runs failing,
are models being promoted. Label values are bounded (kinds, results, workloads, decisions),
never object names, so the series count does not grow with the number of StockModels.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RECONCILES = Counter(
    "stockops_reconciles_total",
    "Reconciles by kind and result (ok, retry, invalid, error).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "stockops_reconcile_seconds",
    "Duration of one reconcile.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS_CREATED = Counter(
    "stockops_jobs_created_total", "Jobs created, by workload and trigger.", ["workload", "trigger"]
)
JOB_OUTCOMES = Counter(
    "stockops_job_outcomes_total",
    "Finished runs recorded, by workload and outcome.",
    ["workload", "outcome"],
)
PROMOTIONS = Counter(
    "stockops_train_decisions_total", "Train runs by gate decision (promoted, kept).", ["decision"]
)


def serve(port: int) -> None:
    """Serve `/metrics` on all interfaces in a daemon thread; port 0 turns it off."""
    if port:
        start_http_server(port)
