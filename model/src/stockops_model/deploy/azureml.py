"""Deploy target `azureml`: blue/green rollout to an Azure ML online endpoint (azure-ai-ml v2).

One rollout of `models:/NAME/VERSION`:

1. Download the MLflow model; register it in the workspace as an `mlflow_model` asset of
   the same name and version, and its serving environment (the model's conda.yaml plus Azure
   ML's inference server, on `spec.serving.azureml.baseImage` or `STOCKOPS_AZUREML_BASE_IMAGE`);
   existing versions are reused.
2. Create the managed or Kubernetes online endpoint (key auth) if it does not exist.
3. Create the deployment `<model>-v<version>` with 0% traffic and wait for it to provision;
   an existing one of that version is reused if it succeeded, deleted and recreated if not.
4. Smoke-test it alone (`online_endpoints.invoke(..., deployment_name=...)` sends the
   `azureml-model-deployment` header) with bars the model accepts: its saved input example.
5. Shift traffic in `rollout.canarySteps`, observing `stepWaitSeconds` between steps, then
   delete the deployment that served before.

Any failure from step 3 on restores the old deployment's 100% and deletes the new one (with
`autoRollback`), then raises `RolloutFailedError`. A failure before anything served changes
(steps 1-2) raises `ServiceUnavailableError`. Rolling out the version that already has all
the traffic changes nothing.

Why `score.py` with an environment and not Azure ML's no-code MLflow path: the deployment
answers the same `{"bars": [...]}` request as `stockops serve` and answers bad input with an
error body naming the field, and the smoke test sends that same request; the no-code path
takes MLflow's `input_data` format, and our input errors would surface as bare 500s.
The environment is built from the conda.yaml MLflow pinned with the model, so the serving
image matches the training stack; the base image must carry conda (Azure ML's prebuilt
minimal inference images do) and is a setting, because teams mirror it into their own ACR.

Traps of the service and the SDK, handled here (see also `azureml_entities`):

- An endpoint update whose traffic map is empty or missing sets every deployment to 0%, and
  the SDK drops 0 entries and lowercases the keys: every update sends the full map (summing to
  100) on a copy of the endpoint as last read, with lowercase deployment names.
- The service refuses operations while the endpoint is Creating/Updating: every update waits
  for the endpoint's provisioning state to settle first (polling with the `Clock`) and retries
  a 409 Conflict until the readiness timeout.
- Creates are not idempotent: every create is preceded by a get.

Limits: only deployments that carry traffic are considered; a third deployment's share moves
to the old one at the first step. A reused environment keeps the base image it was built
with. Nothing here can reach Azure in tests: they run against `FakeMLClient`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
)

from stockops_model.deploy import azureml_entities as entities
from stockops_model.deploy.base import (
    Clock,
    Release,
    RolloutFailedError,
    RolloutResult,
    SystemClock,
)
from stockops_model.errors import ServiceUnavailableError, SettingsError, SpecError

if TYPE_CHECKING:
    from azure.ai.ml.entities import OnlineDeployment, OnlineEndpoint

    from stockops_model.spec import AzureMLSpec, RolloutSpec, StockModel

log = logging.getLogger(__name__)

TARGET = "azureml"
BASE_IMAGE_ENV = "STOCKOPS_AZUREML_BASE_IMAGE"
POLL_SECONDS = 15.0
SUCCEEDED = "succeeded"
BUSY_STATES = frozenset({"creating", "updating", "deleting", "provisioning", "scaling"})

Downloader = Callable[[Release, Path], Path]


class _RolloutStepError(Exception):
    """A step of the rollout failed; the message says which and why."""


def download_model(release: Release, dest: Path) -> Path:
    """Download `models:/NAME/VERSION` into `dest`; returns the folder holding `MLmodel`."""
    import mlflow.artifacts

    from stockops_model.deploy.score import find_mlflow_dir
    from stockops_model.tracking import connect_mlflow

    connect_mlflow(release.tracking_uri)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=release.model_uri, dst_path=str(dest), tracking_uri=release.tracking_uri
    )
    return find_mlflow_dir(local)


@dataclass
class AzureMLTarget:
    """An Azure ML online endpoint; `ml_client` is an `MLClient` (or a fake of one)."""

    spec: AzureMLSpec
    ml_client: Any
    base_image: str
    download: Downloader = download_model
    clock: Clock = field(default_factory=SystemClock)
    poll_seconds: float = POLL_SECONDS
    name: str = TARGET

    # ------------------------------------------------------------------ reading

    def serving_version(self) -> str | None:
        try:
            endpoint = self.ml_client.online_endpoints.get(self.spec.endpoint_name)
        except ResourceNotFoundError:
            return None
        traffic = _live_traffic(endpoint)
        if not traffic:
            return None
        top = max(traffic, key=lambda name: (traffic[name], name))
        return self._version_of(top)

    def _version_of(self, deployment: str) -> str:
        try:
            found = self.ml_client.online_deployments.get(deployment, self.spec.endpoint_name)
        except ResourceNotFoundError:
            return deployment
        return str((found.tags or {}).get(entities.VERSION_TAG, deployment))

    def _traffic_by_version(self, traffic: Mapping[str, int]) -> dict[str, int]:
        return {self._version_of(name): share for name, share in traffic.items() if share > 0}

    # ------------------------------------------------------------------ rollout

    def rollout(self, release: Release, policy: RolloutSpec) -> RolloutResult:
        with tempfile.TemporaryDirectory(prefix="stockops-azureml-") as tmp:
            work = Path(tmp)
            model_dir, environment = self._prepare(release, work, policy)
            return self._blue_green(release, policy, work, model_dir, environment)

    def _prepare(self, release: Release, work: Path, policy: RolloutSpec) -> tuple[Path, str]:
        """Register the model and environment, ensure the endpoint; nothing serving changes."""
        model_dir = self.download(release, work / "model")
        try:
            self._register_model(release, model_dir)
            environment = self._register_environment(release, model_dir)
            self._ensure_endpoint(policy)
        except (AzureError, _RolloutStepError) as exc:
            raise ServiceUnavailableError(
                f"Azure ML workspace {self.spec.workspace}: {_describe(exc)}; nothing changed"
            ) from exc
        return model_dir, environment

    def _register_model(self, release: Release, model_dir: Path) -> None:
        models = self.ml_client.models
        try:
            models.get(name=release.model_name, version=release.version)
            log.info("model %s:%s is registered already", release.model_name, release.version)
            return
        except ResourceNotFoundError:
            pass
        model = entities.build_model(
            release.model_name, release.version, model_dir, f"MLflow {release.model_uri}"
        )
        models.create_or_update(model)
        log.info("registered model %s:%s", release.model_name, release.version)

    def _register_environment(self, release: Release, model_dir: Path) -> str:
        name = entities.environment_name(release.model_name)
        try:
            self.ml_client.environments.get(name=name, version=release.version)
        except ResourceNotFoundError:
            conda = entities.serving_conda(model_dir)
            environment = entities.build_environment(
                release.model_name, release.version, conda, self.base_image
            )
            self.ml_client.environments.create_or_update(environment)
            log.info("registered environment %s:%s", name, release.version)
        return entities.asset_ref(name, release.version)

    def _ensure_endpoint(self, policy: RolloutSpec) -> OnlineEndpoint:
        endpoints = self.ml_client.online_endpoints
        try:
            endpoint = endpoints.get(self.spec.endpoint_name)
        except ResourceNotFoundError:
            log.info("creating %s endpoint %s", self.spec.endpoint_kind, self.spec.endpoint_name)
            endpoints.begin_create_or_update(entities.build_endpoint(self.spec)).result()
            return self._settled_endpoint(policy)
        if entities.endpoint_kind(endpoint) != self.spec.endpoint_kind:
            raise SpecError(
                f"spec.serving.azureml.endpointKind: endpoint {self.spec.endpoint_name} is "
                f"{entities.endpoint_kind(endpoint)}, not {self.spec.endpoint_kind}"
            )
        return self._settled_endpoint(policy)

    def _blue_green(
        self,
        release: Release,
        policy: RolloutSpec,
        work: Path,
        model_dir: Path,
        environment: str,
    ) -> RolloutResult:
        endpoint = self._settled_endpoint(policy)
        traffic = _live_traffic(endpoint)
        new = entities.deployment_name(release.model_name, release.version)
        others = {name: share for name, share in traffic.items() if name != new}
        old = max(others, key=lambda name: (others[name], name)) if others else None
        previous = self._version_of(old) if old else None
        result = RolloutResult(
            target=self.name,
            requested_version=release.version,
            serving_version=previous,
            previous_version=previous,
            endpoint_url=endpoint.scoring_uri,
        )
        if traffic.get(new) == 100 and self._deployment_state(new) == SUCCEEDED:
            result.serving_version = release.version
            result.previous_version = release.version
            result.traffic = {release.version: 100}
            result.message = f"version {release.version} already takes all the traffic"
            log.info(result.message)
            return result
        try:
            self._ensure_deployment(release, policy, new, environment, work, traffic.get(new, 0))
            self._smoke_test(new, model_dir, work)
            for step in _steps(policy, traffic.get(new, 0), old):
                shares = {new: step, old: 100 - step} if old else {new: step}
                self._set_traffic(policy, shares)
                result.steps.append(step)
                if step < 100:
                    self.clock.sleep(policy.step_wait_seconds)
                    state = self._deployment_state(new)
                    if state != SUCCEEDED:
                        raise _RolloutStepError(f"deployment {new} turned {state} at {step}%")
        except Exception as exc:
            self._roll_back(result, policy, new, old, exc)
        result.serving_version = release.version
        result.traffic = {release.version: 100}
        result.message = self._retire(policy, keep=new)
        log.info("version %s serves at %s", release.version, result.endpoint_url)
        return result

    # ------------------------------------------------------------------ deployment

    def _deployment_state(self, name: str) -> str | None:
        try:
            found = self.ml_client.online_deployments.get(name, self.spec.endpoint_name)
        except ResourceNotFoundError:
            return None
        return _state(found)

    def _ensure_deployment(
        self,
        release: Release,
        policy: RolloutSpec,
        name: str,
        environment: str,
        work: Path,
        share: int,
    ) -> None:
        """A provisioned deployment of `release` named `name` (reused, recreated or new)."""
        deadline = self.clock.monotonic() + policy.readiness_timeout_seconds
        existing = self._get_deployment(name)
        if existing is not None and _state(existing) in BUSY_STATES:
            existing = self._wait_deployment(name, deadline)
        if existing is not None:
            version = (existing.tags or {}).get(entities.VERSION_TAG)
            if _state(existing) == SUCCEEDED and version == release.version:
                log.info("reusing deployment %s (provisioned)", name)
                return
            if share == 0:
                log.info("deleting deployment %s (%s) to recreate it", name, _state(existing))
                self._delete_deployment(policy, name)
        code = work / "code"
        code.mkdir(exist_ok=True)
        shutil.copy(Path(__file__).with_name(entities.SCORING_SCRIPT), code)
        deployment = entities.build_deployment(
            self.spec,
            name=name,
            model_name=release.model_name,
            version=release.version,
            environment=environment,
            code_dir=str(code),
        )
        log.info("creating deployment %s with 0%% traffic", name)

        def create() -> None:
            poller = self.ml_client.online_deployments.begin_create_or_update(deployment)
            # The poller blocks until provisioning ends; bound it by the readiness timeout
            # (it returns unfinished then, and the wait below reports the state).
            poller.result(timeout=max(1.0, deadline - self.clock.monotonic()))

        try:
            self._when_settled(policy, create)
        except HttpResponseError as exc:
            raise _RolloutStepError(f"deployment {name} failed: {_describe(exc)}") from exc
        found = self._wait_deployment(name, deadline)
        state = _state(found) if found is not None else None
        if state != SUCCEEDED:
            raise _RolloutStepError(f"deployment {name} provisioning ended {state}")

    def _get_deployment(self, name: str) -> OnlineDeployment | None:
        try:
            found: OnlineDeployment = self.ml_client.online_deployments.get(
                name, self.spec.endpoint_name
            )
        except ResourceNotFoundError:
            return None
        return found

    def _wait_deployment(self, name: str, deadline: float) -> OnlineDeployment | None:
        while True:
            found = self._get_deployment(name)
            if found is None or _state(found) not in BUSY_STATES:
                return found
            if self.clock.monotonic() >= deadline:
                raise _RolloutStepError(f"deployment {name} still {_state(found)} at the timeout")
            self.clock.sleep(self.poll_seconds)

    def _delete_deployment(self, policy: RolloutSpec, name: str) -> None:
        if self._get_deployment(name) is None:
            return
        self._when_settled(
            policy,
            lambda: self.ml_client.online_deployments.begin_delete(
                name=name, endpoint_name=self.spec.endpoint_name
            ).result(),
        )

    def _smoke_test(self, name: str, model_dir: Path, work: Path) -> None:
        """One request to the new deployment alone; its answer must forecast every ticker."""
        bars = entities.smoke_bars(model_dir)
        request = work / "smoke-request.json"
        request.write_text(json.dumps({"bars": bars}))
        try:
            raw = self.ml_client.online_endpoints.invoke(
                endpoint_name=self.spec.endpoint_name,
                request_file=str(request),
                deployment_name=name,
            )
        except Exception as exc:  # the SDK also raises its own ValidationException here
            raise _RolloutStepError(f"smoke test of {name} failed: {_describe(exc)}") from exc
        answer = _json_answer(raw)
        if not isinstance(answer, dict) or "error" in answer:
            raise _RolloutStepError(f"smoke test of {name} answered {str(raw)[:300]}")
        forecasts = answer.get("forecasts") or []
        answered = {f.get("symbol") for f in forecasts if _finite(f.get("forecast_close"))}
        missing = sorted({str(b["symbol"]) for b in bars} - answered)
        if missing:
            raise _RolloutStepError(f"smoke test of {name}: no forecast for {', '.join(missing)}")
        log.info("smoke test of %s passed (%d forecasts)", name, len(forecasts))

    # ------------------------------------------------------------------ traffic

    def _set_traffic(self, policy: RolloutSpec, shares: Mapping[str, int]) -> None:
        """Send the full traffic map and wait until the endpoint reports it."""
        deployments = [
            d.name for d in self.ml_client.online_deployments.list(self.spec.endpoint_name)
        ]
        full = entities.traffic_map(deployments, shares)

        def update() -> None:
            endpoint = self.ml_client.online_endpoints.get(self.spec.endpoint_name)
            poller = self.ml_client.online_endpoints.begin_create_or_update(
                entities.with_traffic(endpoint, full)
            )
            poller.result()

        log.info("traffic -> %s", full)
        self._when_settled(policy, update)
        applied = _live_traffic(self._settled_endpoint(policy))
        wanted = {name: share for name, share in full.items() if share > 0}
        if applied != wanted:
            raise _RolloutStepError(f"endpoint traffic is {applied}, not {wanted}")

    def _roll_back(
        self,
        result: RolloutResult,
        policy: RolloutSpec,
        new: str,
        old: str | None,
        cause: Exception,
    ) -> NoReturn:
        """Restore the old deployment's traffic, delete the new one, raise the failure."""
        reason = _describe(cause)
        log.error("rollout to %s failed: %s", new, reason)
        if not policy.auto_rollback:
            result.message = f"{reason}; autoRollback is off, left as it is"
            result.traffic = self._traffic_by_version(self._current_traffic())
            raise RolloutFailedError(result.message, result) from cause
        try:
            if self._current_traffic().get(new, 0) > 0:
                if old:
                    self._set_traffic(policy, {old: 100})
                else:
                    # No old deployment: the new one must lose its traffic before it can be
                    # deleted; the SDK sends {new: 0} as an empty map, i.e. all traffic 0%.
                    self._when_settled(policy, lambda: self._zero_traffic(new))
            self._delete_deployment(policy, new)
        except Exception as exc:
            result.message = f"{reason}; rollback failed: {_describe(exc)}"
            result.traffic = self._traffic_by_version(self._current_traffic())
            raise RolloutFailedError(result.message, result) from cause
        result.rolled_back = True
        result.traffic = {result.previous_version: 100} if result.previous_version else {}
        result.serving_version = result.previous_version
        result.message = f"{reason}; rolled back"
        raise RolloutFailedError(result.message, result) from cause

    def _zero_traffic(self, name: str) -> None:
        endpoint = self.ml_client.online_endpoints.get(self.spec.endpoint_name)
        self.ml_client.online_endpoints.begin_create_or_update(
            entities.with_traffic(endpoint, {name: 0})
        ).result()

    def _retire(self, policy: RolloutSpec, keep: str) -> str:
        """Delete the deployments stockops made that take no traffic; returns a note."""
        retired = []
        try:
            traffic = self._current_traffic()
            for deployment in list(self.ml_client.online_deployments.list(self.spec.endpoint_name)):
                tags = deployment.tags or {}
                if deployment.name == keep or traffic.get(deployment.name, 0) > 0:
                    continue
                if tags.get(entities.MANAGED_BY_TAG) != entities.MANAGED_BY:
                    continue
                self._delete_deployment(policy, deployment.name)
                retired.append(deployment.name)
        except Exception as exc:  # the new version serves; a leftover only costs money
            log.warning("could not retire the old deployments: %s", exc)
            return f"serving; retiring old deployments failed: {_describe(exc)}"
        return "serving" + (f"; deleted {', '.join(retired)}" if retired else "")

    def _current_traffic(self) -> dict[str, int]:
        return _live_traffic(self.ml_client.online_endpoints.get(self.spec.endpoint_name))

    # ------------------------------------------------------------------ waiting

    def _settled_endpoint(self, policy: RolloutSpec) -> OnlineEndpoint:
        """The endpoint once it is not Creating/Updating (the service refuses changes then)."""
        deadline = self.clock.monotonic() + policy.readiness_timeout_seconds
        while True:
            endpoint: OnlineEndpoint = self.ml_client.online_endpoints.get(self.spec.endpoint_name)
            state = _state(endpoint)
            if state not in BUSY_STATES:
                return endpoint
            if self.clock.monotonic() >= deadline:
                raise _RolloutStepError(
                    f"endpoint {self.spec.endpoint_name} still {state} after "
                    f"{policy.readiness_timeout_seconds}s"
                )
            self.clock.sleep(self.poll_seconds)

    def _when_settled(self, policy: RolloutSpec, action: Callable[[], None]) -> None:
        """Run `action` once the endpoint settled; retry a 409 Conflict until the timeout."""
        deadline = self.clock.monotonic() + policy.readiness_timeout_seconds
        while True:
            self._settled_endpoint(policy)
            try:
                action()
                return
            except HttpResponseError as exc:
                if exc.status_code != 409 or self.clock.monotonic() >= deadline:
                    raise
                log.info("endpoint busy (%s); waiting", _describe(exc))
                self.clock.sleep(self.poll_seconds)


def _steps(policy: RolloutSpec, current: int, old: str | None) -> list[int]:
    """The traffic steps still to apply; a first deployment takes 100% at once."""
    if old is None:
        return [100]
    return [step for step in policy.canary_steps if step > current] or [100]


def _state(entity: Any) -> str | None:
    state = getattr(entity, "provisioning_state", None)
    return str(state).lower() if state is not None else None


def _live_traffic(endpoint: Any) -> dict[str, int]:
    """Deployment (lowercase) -> percent, for the deployments that take traffic."""
    return {
        str(name).lower(): int(share)
        for name, share in (endpoint.traffic or {}).items()
        if int(share or 0) > 0
    }


def _json_answer(raw: Any) -> Any:
    # The inference server JSON-encodes run()'s value; a str value arrives encoded twice.
    answer = raw
    for _ in range(2):
        if not isinstance(answer, str | bytes):
            break
        try:
            answer = json.loads(answer)
        except json.JSONDecodeError:
            return None
    return answer


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{text} (HTTP {status})" if status else text


def build_target(model: StockModel, tracking_uri: str) -> AzureMLTarget:
    """The `azureml` target of `model`, connected with `DefaultAzureCredential`.

    Raises:
        SpecError: the model has no `spec.serving.azureml`.
        SettingsError: neither `spec.serving.azureml.baseImage` nor
            `STOCKOPS_AZUREML_BASE_IMAGE` names a base image.
    """
    spec = model.spec.serving.azureml
    if spec is None:
        raise SpecError("spec.serving.azureml: required for target azureml")
    base_image = spec.base_image or os.environ.get(BASE_IMAGE_ENV, "").strip()
    if not base_image:
        raise SettingsError(
            f"spec.serving.azureml.baseImage (or {BASE_IMAGE_ENV}): set the base image of the "
            "serving environment, an image with conda such as Azure ML's prebuilt minimal "
            "inference image for Python 3.11"
        )
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    client = MLClient(
        DefaultAzureCredential(),
        subscription_id=spec.subscription_id,
        resource_group_name=spec.resource_group,
        workspace_name=spec.workspace,
    )
    log.info("azureml target: workspace %s, MLflow at %s", spec.workspace, tracking_uri)
    return AzureMLTarget(spec=spec, ml_client=client, base_image=base_image)
