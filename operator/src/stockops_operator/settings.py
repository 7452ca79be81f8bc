"""Operator settings, read once from `STOCKOPS_*` environment variables.

Every knob of the operator lives here with its default and meaning; the Helm chart sets them
on the operator Deployment. `load_settings` fails fast with a message naming the variable, so
a typo in a chart value stops the operator at start-up rather than at the first reconcile.

Limits: settings are read at start-up only; change them by restarting the operator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stockops_model.errors import SpecError

PREFIX = "STOCKOPS_"
MIN_PEERING_LIFETIME = 15

# Requests and limits per workload when the chart gives none: measured on a 2-core machine
# (TensorFlow training peaks near 1.5 GiB; feed and sink stay under 200 MiB).
DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "feed": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    "sink": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "train": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "deploy": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
}


@dataclass(frozen=True)
class Settings:
    """What the operator needs to know that is not in a custom resource.

    Attributes:
        workload_image: image of the `stockops` workloads (feed, sink, train, deploy).
        image_pull_policy: pull policy of the workload containers.
        workload_command: the console script inside the workload image.
        workload_service_account: ServiceAccount the workload Pods run as.
        azure_workload_identity: label Pods `azure.workload.identity/use: "true"` so AKS
            injects a federated token (the ServiceAccount carries the client-id annotation).
        resources: requests/limits per workload (`feed`, `sink`, `train`, `deploy`).
        run_as_user: UID of the workload containers (the image's non-root user).
        job_ttl_seconds: `ttlSecondsAfterFinished` of deploy Jobs (train Jobs are pruned by
            the schedule's history limits instead, so their result stays readable).
        deploy_backoff_limit: retries of a failed deploy Job.
        deploy_active_deadline_seconds: a deploy Job is killed after this long.
        schedule_tick_seconds: how often each RetrainSchedule is re-examined.
        model_poll_seconds: how often each StockModel re-reads MLflow and its workloads.
        mlflow_timeout_seconds: timeout of one MLflow REST call.
        namespace: watch only this namespace; empty for every namespace.
        peering_name: kopf peering object; two operators in one peering never both act.
            Empty runs standalone (tests, local development).
        peering_priority: this replica's kopf peering priority; 0 draws a random one at start,
            so of several replicas exactly one (the highest) acts. kopf pauses ALL operators
            of equal priority, so replicas must not share one. A replica restarted after a
            crash draws a new one; if it is lower than the dead replica's, it waits until the
            dead one's record expires (`peering_lifetime`) before acting. Set it per replica
            (e.g. from a StatefulSet's pod ordinal) so replicas never draw equal ones; that
            alone does not avoid the wait (an equal priority pauses too): `peering_id` does.
        peering_id: this replica's identity in the peering object; empty uses kopf's
            default, which is new at every start (user@host/start time/random), so a
            restarted process meets its own previous record as a stranger's. The chart sets
            it to the Pod's name: a container restarted in the same Pod takes its record
            back at once, whatever its priority.
        peering_lifetime: seconds a replica's peering record stays valid without a refresh
            (kopf's `settings.peering.lifetime`; kopf refreshes it 5-10 s before expiry). It
            bounds how long the others wait after a replica dies. At least 15, so a refresh
            arrives before expiry even under load.
        metrics_port: port of the Prometheus `/metrics` endpoint; 0 turns it off.
        liveness_port: port of kopf's `/healthz` (python -m stockops_operator); 0 turns it off.
        log_json: log one JSON object per line (containers) rather than text.
        log_level: root logging level.
    """

    workload_image: str = "stockops-workload:latest"
    image_pull_policy: str = "IfNotPresent"
    workload_command: str = "stockops"
    workload_service_account: str = "stockops-workload"
    azure_workload_identity: bool = False
    resources: Mapping[str, Mapping[str, Mapping[str, str]]] = field(
        default_factory=lambda: DEFAULT_RESOURCES
    )
    run_as_user: int = 10001
    job_ttl_seconds: int = 86400
    deploy_backoff_limit: int = 1
    deploy_active_deadline_seconds: int = 3600
    schedule_tick_seconds: float = 10.0
    model_poll_seconds: float = 30.0
    mlflow_timeout_seconds: float = 10.0
    namespace: str = ""
    peering_name: str = "stockops"
    peering_priority: int = 0
    peering_lifetime: int = 60
    peering_id: str = ""
    metrics_port: int = 9090
    liveness_port: int = 8080
    log_json: bool = True
    log_level: str = "INFO"


_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return _BOOL[raw.strip().lower()]
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except (KeyError, ValueError):
        raise SpecError(f"{PREFIX}{name}={raw!r} is not a valid {kind.__name__}") from None
    return raw


def _parse_resources(raw: str) -> dict[str, dict[str, dict[str, str]]]:
    try:
        given = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{PREFIX}RESOURCES_JSON is not valid JSON: {exc}") from None
    if not isinstance(given, dict) or not set(given) <= set(DEFAULT_RESOURCES):
        raise SpecError(
            f"{PREFIX}RESOURCES_JSON must map some of {sorted(DEFAULT_RESOURCES)} to "
            "{requests: {...}, limits: {...}}"
        )
    merged = {k: dict(v) for k, v in DEFAULT_RESOURCES.items()}
    merged.update(given)
    return merged


def load_settings(env: Mapping[str, str] = os.environ) -> Settings:
    """Build `Settings` from `STOCKOPS_*` variables (e.g. `STOCKOPS_WORKLOAD_IMAGE`).

    `STOCKOPS_RESOURCES_JSON` overrides the resources of some workloads, as JSON.

    Raises:
        SpecError: a variable that does not parse; the message names it.
    """
    defaults = Settings()
    values: dict[str, Any] = {}
    for name, current in vars(defaults).items():
        if name == "resources":
            raw = env.get(f"{PREFIX}RESOURCES_JSON")
            if raw:
                values[name] = _parse_resources(raw)
            continue
        raw = env.get(PREFIX + name.upper())
        if raw is not None:
            values[name] = _parse(name.upper(), raw, type(current))
    settings = Settings(**values)
    if settings.schedule_tick_seconds <= 0 or settings.model_poll_seconds <= 0:
        raise SpecError(f"{PREFIX}SCHEDULE_TICK_SECONDS and MODEL_POLL_SECONDS must be positive")
    if settings.peering_lifetime < MIN_PEERING_LIFETIME:
        raise SpecError(
            f"{PREFIX}PEERING_LIFETIME={settings.peering_lifetime} must be at least "
            f"{MIN_PEERING_LIFETIME} (kopf refreshes the record 5-10 s before it expires)"
        )
    return settings
