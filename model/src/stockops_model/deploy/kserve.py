"""The `kserve` target: a KServe InferenceService running `stockops serve`, canary by percent.

The object is built and read by the pure functions of `kserve_manifests`; this module applies
it (server-side apply through the official `kubernetes` client) and runs the rollout.
One InferenceService (serving.kserve.io/v1beta1) per StockModel, named after it, in
`spec.serving.kserve.namespace` (else the model's namespace). Its predictor is a custom
container: the workload image running `stockops serve --model models:/NAME/VERSION`, so each
Knative revision pins one immutable model version. Annotations say which version the spec
holds (`stockops.io/model-version`) and which one was fully rolled out before it
(`stockops.io/previous-version`); `serving.kserve.io/deploymentMode: Knative` because only
Knative mode splits traffic between revisions.

Rollout of version V (`KServeTarget.rollout`):

- nothing deployed yet (or nothing ever rolled out): apply V and wait for Ready with all
  traffic on its revision (canary steps need a previous revision to split with);
- V already takes all traffic and is Ready: nothing changes; V is the spec but not Ready: wait
  for it (no canary of a version over itself, nothing to roll back to);
- an InferenceService without the `stockops.io/model-version` annotation is not stockops'
  own: `SpecError`, nothing is touched;
- otherwise, for each of `canarySteps` below 100: apply V with `canaryTrafficPercent` = step,
  wait until Ready and `status.components.predictor.traffic` gives the new revision exactly
  that share, then observe `stepWaitSeconds` (still Ready); finally drop canaryTrafficPercent
  and wait for 100 % on the new revision.
- failure (Ready=False on the new revision, or a step not reached within
  `readinessTimeoutSeconds`) with `autoRollback`: `canaryTrafficPercent: 0` (all traffic back
  on the previously rolled-out revision at once), then the previous predictor spec with
  `canaryTrafficPercent: 0` (a fresh revision of the old version that takes no traffic yet),
  and once that is Ready the canary field is dropped so it takes 100 %. Raises
  `RolloutFailedError` with `rolled_back=True`.

Limits: the new revision is recognised by name (the latest created one that is not the
rolled-out one), not by version, because KServe's status names revisions only; a rollout that
interrupts another one's canary may accept that one's revision at the first step if it sits at
the same percent. A first deployment that never gets Ready is left in place for inspection
(nothing served before, so there is nothing to roll back to). A failing API server is retried
(writes 3 times; reads until the step's deadline, then the step fails and is rolled back);
errors that outlast that raise `ServiceUnavailableError` and a retried Job resumes (it takes over a
canary of the same version in progress, reusing its revision, and walks the steps again).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

from stockops_model.deploy.base import (
    Clock,
    Release,
    RolloutFailedError,
    RolloutResult,
    SystemClock,
)
from stockops_model.deploy.kserve_manifests import (
    ANNOTATION_PREVIOUS,
    ANNOTATION_VERSION,
    GROUP,
    MANAGED_BY,
    PLURAL,
    VERSION,
    PredictorState,
    build_inference_service,
    build_predictor,
    isvc_namespace,
)
from stockops_model.errors import ServiceUnavailableError, SpecError, StockopsError
from stockops_model.spec import RolloutSpec, StockModel

log = logging.getLogger(__name__)

FIELD_MANAGER = MANAGED_BY
IMAGE_ENV = "STOCKOPS_WORKLOAD_IMAGE"
POLL_SECONDS = 2.0
_ATTEMPTS = 3  # tries of one write or read once a rollout has changed something


# --- talking to the API server --------------------------------------------------------------


class InferenceServices(Protocol):
    """The few calls the target makes on InferenceServices (a fake in unit tests)."""

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        ...

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply `manifest` (create or update) and return the object."""
        ...


class KubeInferenceServices:
    """InferenceServices through the official `kubernetes` client, by server-side apply.

    Server-side apply with one field manager makes every write declarative: a field the
    previous apply set and this one omits (canaryTrafficPercent at promotion) is removed.
    """

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._api: Any = client.CustomObjectsApi(api_client)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as exc:
            if _is_missing_object(exc, name):
                return None
            raise _api_error(exc, f"reading InferenceService {namespace}/{name}") from exc
        return cast("dict[str, Any]", found)

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        try:
            applied = self._api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                dict(manifest),
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        except Exception as exc:
            doing = f"applying InferenceService {meta['namespace']}/{meta['name']}"
            raise _api_error(exc, doing) from exc
        return cast("dict[str, Any]", applied)


def _is_missing_object(exc: Exception, name: str) -> bool:
    """A 404 naming the object; a 404 without its name means the CRD itself is missing."""
    if getattr(exc, "status", None) != 404:
        return False
    try:
        details = json.loads(getattr(exc, "body", "") or "{}").get("details") or {}
    except ValueError:
        return False
    return bool(details.get("name") == name)


def _api_error(exc: Exception, doing: str) -> Exception:
    status = getattr(exc, "status", None)
    body = str(getattr(exc, "body", "") or exc)[:500]
    if status in (400, 422):
        return SpecError(f"{doing}: the API server refused the manifest ({status}): {body}")
    if status == 404:
        return ServiceUnavailableError(
            f"{doing}: 404, is KServe (the {PLURAL}.{GROUP} CRD) installed? {body}"
        )
    if status in (401, 403):
        return ServiceUnavailableError(
            f"{doing}: {status}; the deploy ServiceAccount needs get, create and patch "
            f"on {PLURAL}.{GROUP}"
        )
    return ServiceUnavailableError(f"{doing}: {exc}")


def kube_api_client() -> Any:
    """An ApiClient from the in-cluster ServiceAccount, else from KUBECONFIG/~/.kube/config.

    Raises:
        ServiceUnavailableError: when neither is available.
    """
    from kubernetes import client, config

    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except config.ConfigException:
        pass
    try:
        # The client reads KUBECONFIG once, at import; read it now instead.
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            os.environ.get("KUBECONFIG") or None
        )
    except (config.ConfigException, OSError) as exc:
        raise ServiceUnavailableError(
            f"no Kubernetes configuration (not in a cluster, no kubeconfig): {exc}"
        ) from None


# --- the rollout ----------------------------------------------------------------------------


class _StepFailedError(Exception):
    """A rollout step did not get Ready with its traffic in time (internal)."""


class KServeTarget:
    """Roll StockModel versions out to its KServe InferenceService (see the module docstring)."""

    name = "kserve"

    def __init__(
        self,
        model: StockModel,
        api: InferenceServices,
        *,
        image: str,
        clock: Clock | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.model = model
        self.api = api
        self.image = image
        self.clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        self.namespace = isvc_namespace(model)
        self.isvc_name = model.metadata.name

    def _read(self) -> PredictorState | None:
        found = self.api.get(self.namespace, self.isvc_name)
        return None if found is None else PredictorState.of(found)

    def _read_patiently(self) -> PredictorState | None:
        """`_read`, tried `_ATTEMPTS` times: once traffic moved, one blip must not stop us."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._read()
            except ServiceUnavailableError:
                if attempt == _ATTEMPTS:
                    raise
                self.clock.sleep(self.poll_seconds)
        raise AssertionError("unreachable")

    def _apply(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply (idempotent), tried `_ATTEMPTS` times when the API server blips."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self.api.apply(manifest)
                return
            except ServiceUnavailableError as exc:
                if attempt == _ATTEMPTS:
                    raise
                log.warning("applying %s failed (%s); trying again", self.isvc_name, exc)
                self.clock.sleep(self.poll_seconds)

    def serving_version(self) -> str | None:
        state = self._read()
        return None if state is None else state.serving_version

    def rollout(self, release: Release, policy: RolloutSpec) -> RolloutResult:
        live = self.api.get(self.namespace, self.isvc_name)
        state = None if live is None else PredictorState.of(live)
        if state is not None and state.version is None:
            raise SpecError(
                f"InferenceService {self.namespace}/{self.isvc_name} has no {ANNOTATION_VERSION} "
                "annotation: it is not one stockops manages; delete it or rename the StockModel"
            )
        if state is None or state.latest_rolled_out is None:
            return self._deploy_direct(release, policy, state)
        if (
            state.version == release.version
            and state.canary_percent is None
            and state.ready == "True"
        ):
            log.info("%s already serves version %s", self.isvc_name, release.version)
            return self._result(
                release,
                serving=release.version,
                previous=state.previous_version,
                url=state.endpoint_url,
                traffic={release.version: 100},
                message=f"version {release.version} already takes all traffic; nothing changed",
            )
        if state.version == release.version and state.canary_percent is None:
            return self._await_current(release, policy, state)
        assert live is not None
        return self._canary(release, policy, live, state)

    def _await_current(
        self, release: Release, policy: RolloutSpec, state: PredictorState
    ) -> RolloutResult:
        """V is the spec already, but not Ready: wait for it; there is nothing to roll back to."""
        try:
            reached = self._wait(policy, None, 100)
        except _StepFailedError as exc:
            message = (
                f"version {release.version} is already the InferenceService's spec but is not "
                f"ready ({exc}); nothing changed"
            )
            result = self._result(
                release,
                serving=state.serving_version,
                previous=state.previous_version,
                url=state.endpoint_url,
                message=message,
            )
            raise RolloutFailedError(message, result) from None
        return self._result(
            release,
            serving=release.version,
            previous=state.previous_version,
            url=reached.endpoint_url,
            traffic={release.version: 100},
            message=f"version {release.version} was the spec already and is ready again",
        )

    # -- first deployment --------------------------------------------------------------------

    def _deploy_direct(
        self, release: Release, policy: RolloutSpec, state: PredictorState | None
    ) -> RolloutResult:
        before = None if state is None else state.latest_created
        self._apply(build_inference_service(self.model, release, image=self.image))
        log.info("applied %s/%s with version %s", self.namespace, self.isvc_name, release.version)
        try:
            reached = self._wait(policy, before, 100)
        except _StepFailedError as exc:
            message = (
                f"version {release.version} did not become ready ({exc}); nothing was rolled "
                "out before, so the InferenceService is left as it is for inspection"
            )
            result = self._result(release, serving=None, previous=None, message=message)
            raise RolloutFailedError(message, result) from None
        return self._result(
            release,
            serving=release.version,
            previous=None,
            url=reached.endpoint_url,
            traffic={release.version: 100},
            steps=[100],
            message=f"version {release.version} deployed (first rollout: no canary)",
        )

    # -- canary ------------------------------------------------------------------------------

    def _canary(
        self,
        release: Release,
        policy: RolloutSpec,
        live: Mapping[str, Any],
        state: PredictorState,
    ) -> RolloutResult:
        previous = state.stable_version
        if previous is None:
            raise SpecError(
                f"InferenceService {self.namespace}/{self.isvc_name} is in a canary without "
                f"the {ANNOTATION_PREVIOUS} annotation: it is not one stockops manages"
            )
        if state.canary_percent is None:
            previous_predictor: dict[str, Any] = dict(live["spec"]["predictor"])
        else:
            # A canary was interrupted: the live spec is the canary's; rebuild the stable one.
            previous_predictor = build_predictor(
                self.model,
                Release(release.model_name, previous, release.tracking_uri),
                image=self.image,
            )
        # The revision the canary runs is the latest created one, unless that is the stable one.
        resuming = state.version == release.version and state.canary_percent is not None
        before = None if resuming else state.latest_created
        steps = [s for s in policy.canary_steps if s < 100]
        applied: list[int] = []
        traffic: dict[str, int] = {previous: 100}
        url = state.endpoint_url
        touched = False  # whether the InferenceService has changed yet
        try:
            for step in [*steps, 100]:
                self._apply(
                    build_inference_service(
                        self.model,
                        release,
                        image=self.image,
                        previous_version=previous,
                        canary_percent=None if step == 100 else step,
                    )
                )
                touched = True
                log.info("%s: version %s at %d %%", self.isvc_name, release.version, step)
                reached = self._wait(policy, before, step, stable=state.latest_rolled_out)
                before = None  # the canary's revision is now the latest created one
                applied.append(step)
                url = reached.endpoint_url or url
                traffic = {release.version: step} | ({previous: 100 - step} if step < 100 else {})
                if step < 100 and policy.step_wait_seconds:
                    self.clock.sleep(policy.step_wait_seconds)
                    self._check_still_ready(step)
        except _StepFailedError as exc:
            return self._fail(release, policy, previous, previous_predictor, state, applied, exc)
        except StockopsError as exc:
            # The API server gave up on us (or refused a write) after the canary moved:
            # traffic must not stay split, so roll back as for a failed step.
            if not touched:
                raise
            return self._fail(release, policy, previous, previous_predictor, state, applied, exc)
        return self._result(
            release,
            serving=release.version,
            previous=previous,
            url=url,
            traffic=traffic,
            steps=applied,
            message=f"version {release.version} rolled out in steps {applied}",
        )

    def _check_still_ready(self, step: int) -> None:
        state = self._read_patiently()
        if state is None or state.ready != "True":
            why = "deleted" if state is None else state.ready_message or f"Ready={state.ready}"
            raise _StepFailedError(f"not ready after observing {step} %: {why}")

    def _wait(
        self,
        policy: RolloutSpec,
        before: str | None,
        percent: int,
        stable: str | None = None,
    ) -> PredictorState:
        """Poll until a new revision (not `before`, not `stable`) is Ready with `percent`."""
        deadline = self.clock.monotonic() + policy.readiness_timeout_seconds
        last = "no status yet"
        while True:
            try:
                state = self._read()
            except ServiceUnavailableError as exc:
                # A blip of the API server must not fail a step: the deadline still holds.
                last = f"reading it failed: {exc}"
                if self.clock.monotonic() >= deadline:
                    raise _StepFailedError(f"{percent} % not confirmed ({last})") from None
                self.clock.sleep(self.poll_seconds)
                continue
            if state is None:
                raise _StepFailedError("the InferenceService was deleted")
            revision = state.latest_created
            new = revision is not None and revision != before
            if new and revision == stable and percent < 100:
                new = False  # a canary needs a revision other than the rolled-out one
            if new and state.ready == "False":
                raise _StepFailedError(
                    f"revision {revision}: {state.ready_message or 'Ready=False'}"
                )
            if (
                new
                and state.ready == "True"
                and state.latest_ready == revision
                and state.traffic.get(str(revision), 0) == percent
            ):
                return state
            last = (
                f"Ready={state.ready} {state.ready_message}; latest created {revision}, "
                f"latest ready {state.latest_ready}, traffic {state.traffic}"
            )
            if self.clock.monotonic() >= deadline:
                raise _StepFailedError(
                    f"{percent} % not reached within {policy.readiness_timeout_seconds} s ({last})"
                )
            self.clock.sleep(self.poll_seconds)

    def _fail(
        self,
        release: Release,
        policy: RolloutSpec,
        previous: str,
        previous_predictor: Mapping[str, Any],
        state: PredictorState,
        applied: Sequence[int],
        exc: Exception,
    ) -> RolloutResult:
        what = f"version {release.version} failed at {[*applied]} ({exc})"
        if not policy.auto_rollback:
            message = f"{what}; autoRollback is off, the InferenceService is left as it is"
            result = self._result(
                release,
                serving=self.serving_version(),
                previous=previous,
                url=state.endpoint_url,
                steps=list(applied),
                message=message,
            )
            raise RolloutFailedError(message, result)
        old = Release(release.model_name, previous, release.tracking_uri)
        # All traffic back on the rolled-out revision at once, before anything else.
        self._apply(
            build_inference_service(
                self.model, release, image=self.image, previous_version=previous, canary_percent=0
            )
        )
        # The old spec again, still at 0 %: its fresh revision takes traffic only once Ready.
        restored_previous = state.previous_version if state.canary_percent is None else None
        current = self._read_patiently()
        before = None if current is None else current.latest_created
        for canary in (0, None):
            self._apply(
                build_inference_service(
                    self.model,
                    old,
                    image=self.image,
                    # While the canary field stays, `previous` is the stable version; only
                    # the final write (no canary) goes back to the one before it.
                    previous_version=previous if canary == 0 else restored_previous,
                    canary_percent=canary,
                    predictor=previous_predictor,
                )
            )
            if canary is None:
                note = ""
                break
            try:
                self._wait(policy, before, 0, stable=state.latest_rolled_out)
            except _StepFailedError as again:
                note = (
                    f"; the restored revision is not ready ({again}), so canaryTrafficPercent "
                    "0 stays and the old revision keeps all traffic"
                )
                break
        message = f"{what}; rolled back to version {previous}{note}"
        log.warning("%s: %s", self.isvc_name, message)
        result = self._result(
            release,
            serving=previous,
            previous=previous,
            url=state.endpoint_url,
            traffic={previous: 100},
            steps=list(applied),
            rolled_back=True,
            message=message,
        )
        raise RolloutFailedError(message, result)

    def _result(
        self,
        release: Release,
        *,
        serving: str | None,
        previous: str | None,
        message: str,
        url: str | None = None,
        traffic: dict[str, int] | None = None,
        steps: list[int] | None = None,
        rolled_back: bool = False,
    ) -> RolloutResult:
        return RolloutResult(
            target=self.name,
            requested_version=release.version,
            serving_version=serving,
            previous_version=previous,
            endpoint_url=url,
            traffic=traffic or {},
            rolled_back=rolled_back,
            message=message,
            steps=steps or [],
        )


def workload_image(model: StockModel, env: Mapping[str, str] = os.environ) -> str:
    """The image of the predictor: spec.runtime.image, else STOCKOPS_WORKLOAD_IMAGE.

    Raises:
        SpecError: when neither is set.
    """
    image = model.spec.runtime.image or env.get(IMAGE_ENV)
    if not image:
        raise SpecError(
            f"spec.runtime.image: the kserve target needs the workload image; set it or {IMAGE_ENV}"
        )
    return image


def build_target(model: StockModel, tracking_uri: str) -> KServeTarget:
    """The kserve target of `model`, talking to the cluster the process runs in (or KUBECONFIG).

    `tracking_uri` is not used here: each `Release` carries the one its predictor gets.
    """
    del tracking_uri
    image = workload_image(model)  # a spec error before any connection
    return KServeTarget(model, KubeInferenceServices(kube_api_client()), image=image)
