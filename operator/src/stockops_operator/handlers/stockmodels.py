"""Reconcile one StockModel: workloads, production vs serving version, conditions, Events.

Read (Deployments, deploy Jobs, MLflow's production alias) -> `plans.plan_stockmodel` ->
apply (deploy Job, status, Events). Called on create/update/resume (`event=True`: the spec
may have changed, so the workloads are re-applied) and by a timer (level-triggered: catches a
promotion in MLflow, a Deployment that became available, a deploy Job that finished).

Errors: an invalid spec sets Ready=False/InvalidSpec with an Event and raises
`kopf.PermanentError` on events (retrying cannot help until the spec changes); API or MLflow
trouble raises `kopf.TemporaryError` with a delay.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from stockops_model.spec import StockModelSpec, describe_spec_error
from stockops_operator import appliers, builders, metrics, plans, registry
from stockops_operator.handlers.outcomes import reconciling
from stockops_operator.kubeapi import STOCKMODELS
from stockops_operator.runtime import Runtime
from stockops_operator.schedules import deploy_job_name

KIND = "StockModel"


async def reconcile(
    body: kopf.Body,
    rt: Runtime,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    *,
    event: bool,
    known: appliers.Workloads | None = None,
) -> None:
    """Bring one StockModel's owned objects and status in line with its spec and MLflow.

    `known` is what kopf's watches of the owned ConfigMaps and Deployments hold: a timer tick
    checks the workloads against it instead of reading each one from the API server.
    """
    async with reconciling(KIND, rt, body["metadata"]["uid"]):
        await _reconcile(body, rt, logger, event=event, known=known)


async def _reconcile(
    body: kopf.Body,
    rt: Runtime,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    *,
    event: bool,
    known: appliers.Workloads | None,
) -> None:
    meta = body["metadata"]
    now = datetime.now(UTC)
    generation = int(meta.get("generation") or 0)
    try:
        spec = StockModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = describe_spec_error(f"{KIND}/{meta['name']}", exc)
        status = plans.invalid_spec_status(
            body.get("status") or {}, generation=generation, message=message, now=now
        )
        if await appliers.write_status(rt.kube, STOCKMODELS, body, status):
            appliers.post_events(body, [plans.Event("Warning", "InvalidSpec", message)])
        logger.warning("invalid spec: %s", message)
        if event:
            raise kopf.PermanentError(message) from None
        return

    owner = builders.Owner.from_body(body)
    deployments = await appliers.ensure_workloads(rt, owner, spec, force=event, known=known)
    deploy_jobs = await appliers.owned_jobs(
        rt.kube,
        owner.namespace,
        f"{builders.LABEL_MODEL}={owner.name},{builders.LABEL_COMPONENT}=deploy",
        owner.uid,
    )
    found = await registry.production_version(
        rt.http, spec.mlflow.tracking_uri, spec.mlflow.model_name
    )
    status = body.get("status") or {}
    finished = plans.rollout_to_read(status, deploy_jobs)
    rollout = None if finished is None else await appliers.read_deploy_result(rt.kube, finished)
    plan = plans.plan_stockmodel(
        name=owner.name,
        generation=generation,
        status=status,
        deployments=deployments,
        registry=found,
        deploy_jobs=deploy_jobs,
        now=now,
        rollout=rollout,
    )
    if plan.deploy is not None:
        job = builders.build_deploy_job(
            name=deploy_job_name(owner.name, plan.deploy),
            model=owner,
            version=plan.deploy,
            settings=rt.settings,
            runtime=spec.runtime,
            rollout=spec.serving.rollout,
            target=spec.serving.target,
        )
        if await appliers.create_job(rt.kube, job) is not None:
            metrics.JOBS_CREATED.labels("deploy", "version").inc()
            logger.info("created deploy Job %s", job["metadata"]["name"])
    await appliers.write_status(rt.kube, STOCKMODELS, body, plan.status)
    appliers.post_events(body, plan.events)
    for ev in plan.events:
        logger.info("%s: %s", ev.reason, ev.message)


async def record_training(rt: Runtime, model: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """Write a train run's result into the StockModel's `status.lastTraining`."""
    await appliers.write_status(rt.kube, STOCKMODELS, model, {"lastTraining": dict(record)})
