"""The kserve target: the InferenceService it builds, and its rollouts against a fake KServe.

`FakeKServe` (stockops_model.testing.kserve) plays KServe's controller in Knative mode;
`FakeInferenceServices` keeps the object in memory and lets the fake reconcile on each read;
`FakeClock` makes waits and step observations instant. The same target runs against a real
API server in tests/e2e/test_kserve.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from stockops_model.deploy.base import Release, RolloutFailedError
from stockops_model.deploy.kserve import KServeTarget, KubeInferenceServices, workload_image
from stockops_model.deploy.kserve_manifests import (
    ANNOTATION_PREVIOUS,
    ANNOTATION_VERSION,
    PredictorState,
    build_inference_service,
)
from stockops_model.errors import ServiceUnavailableError, SpecError
from stockops_model.spec import RolloutSpec, StockModel, parse_resource
from stockops_model.testing.kserve import (
    Behaviour,
    FakeInferenceServices,
    FakeKServe,
    crd_manifest,
)

TRACKING = "http://mlflow.mlops:5000"
IMAGE = "registry.example/stockops:1.2.3"


class FakeClock:
    """A fake clock: `sleep` only moves `monotonic` on, and records what was slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def stockmodel(
    serving: Mapping[str, Any] | None = None, uid: str | None = None, **runtime: Any
) -> StockModel:
    metadata = {"name": "spy-lstm", "namespace": "markets", **({"uid": uid} if uid else {})}
    model = parse_resource(
        {
            "apiVersion": "stockops.io/v1alpha1",
            "kind": "StockModel",
            "metadata": metadata,
            "spec": {
                "tickers": ["SPY"],
                "storage": {"path": "/data"},
                "mlflow": {"modelName": "spy-forecaster", "trackingUri": TRACKING},
                "serving": {"target": "kserve", **(serving or {})},
                "runtime": runtime,
            },
        }
    )
    assert isinstance(model, StockModel)
    return model


def release(version: str) -> Release:
    return Release("spy-forecaster", version, TRACKING)


POLICY = RolloutSpec.model_validate(
    {"canarySteps": [10, 50, 100], "readinessTimeoutSeconds": 60, "stepWaitSeconds": 30}
)


class Rig:
    """A target wired to a fake KServe, a fake API and a fake clock."""

    def __init__(self, behaviours: Mapping[str, Behaviour] | None = None) -> None:
        self.kserve = FakeKServe(behaviours)
        self.api = FakeInferenceServices(self.kserve)
        self.clock = FakeClock()
        self.target = KServeTarget(stockmodel(), self.api, image=IMAGE, clock=self.clock)

    def isvc(self) -> dict[str, Any]:
        found = self.api.get("markets", "spy-lstm")
        assert found is not None
        return found

    def canaries_applied(self) -> list[tuple[str, int | None]]:
        return [
            (
                m["metadata"]["annotations"][ANNOTATION_VERSION],
                m["spec"]["predictor"].get("canaryTrafficPercent"),
            )
            for m in self.api.applied
        ]


def container(isvc: Mapping[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = isvc["spec"]["predictor"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- the manifest ---------------------------------------------------------------------------


def test_the_predictor_serves_the_pinned_version_with_stockops_serve() -> None:
    isvc = build_inference_service(stockmodel(), release("7"), image=IMAGE)

    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert (isvc["metadata"]["name"], isvc["metadata"]["namespace"]) == ("spy-lstm", "markets")
    main = container(isvc)
    assert main["image"] == IMAGE
    assert [main["command"][0], *main["args"][:3]] == [
        "stockops",
        "serve",
        "--model",
        "models:/spy-forecaster/7",
    ]
    assert main["args"][-2:] == ["--port", "8080"]
    assert main["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert {"name": "MLFLOW_TRACKING_URI", "value": TRACKING} in main["env"]
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert isvc["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "Knative",
        ANNOTATION_VERSION: "7",
    }
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]


def test_the_service_is_owned_by_its_stockmodel_when_the_operator_gave_the_uid() -> None:
    owned = stockmodel(uid="0b4c2f9e-uid")
    (owner,) = build_inference_service(owned, release("3"), image=IMAGE)["metadata"][
        "ownerReferences"
    ]
    assert owner == {
        "apiVersion": "stockops.io/v1alpha1",
        "kind": "StockModel",
        "name": "spy-lstm",
        "uid": "0b4c2f9e-uid",
        "controller": True,
        "blockOwnerDeletion": False,
    }
    # An owner must live in the same namespace; a model run by hand has no uid at all.
    elsewhere = stockmodel({"kserve": {"namespace": "serving"}}, uid="0b4c2f9e-uid")
    assert (
        "ownerReferences"
        not in build_inference_service(elsewhere, release("3"), image=IMAGE)["metadata"]
    )
    assert (
        "ownerReferences"
        not in build_inference_service(stockmodel(), release("3"), image=IMAGE)["metadata"]
    )


def test_a_canary_names_its_percent_and_the_version_it_is_measured_against() -> None:
    isvc = build_inference_service(
        stockmodel(), release("8"), image=IMAGE, previous_version="7", canary_percent=10
    )

    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvc["metadata"]["annotations"][ANNOTATION_PREVIOUS] == "7"
    assert "models:/spy-forecaster/8" in container(isvc)["args"]


def test_kserve_settings_and_the_serve_runtime_reach_the_predictor() -> None:
    model = stockmodel(
        {
            "kserve": {
                "namespace": "serving",
                "serviceAccountName": "forecast-reader",
                "minReplicas": 2,
                "maxReplicas": 5,
            }
        },
        imagePullPolicy="Always",
        azureClientId="00000000-0000-0000-0000-000000000001",
        env=[{"name": "STOCKOPS_API_KEY", "secretName": "serve-keys", "key": "api-key"}],
        serve={"resources": {"limits": {"memory": "2Gi"}}},
    )
    isvc = build_inference_service(model, release("3"), image=IMAGE)
    predictor = isvc["spec"]["predictor"]
    main = container(isvc)

    assert isvc["metadata"]["namespace"] == "serving"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    assert predictor["serviceAccountName"] == "forecast-reader"
    assert predictor["labels"] == {"azure.workload.identity/use": "true"}
    assert main["imagePullPolicy"] == "Always"
    assert main["resources"] == {"limits": {"memory": "2Gi"}}
    assert {
        "name": "STOCKOPS_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "serve-keys", "key": "api-key", "optional": False}},
    } in main["env"]
    assert {"name": "AZURE_CLIENT_ID", "value": "00000000-0000-0000-0000-000000000001"} in main[
        "env"
    ]


def _schema_at(schema: Mapping[str, Any], path: list[str]) -> Mapping[str, Any] | None:
    node: Mapping[str, Any] | None = schema
    for part in path:
        if node is None:
            return None
        if node.get("type") == "array":
            node = node.get("items")
        assert node is not None
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            return node
        additional = node.get("additionalProperties")
        node = (node.get("properties") or {}).get(part) or (
            additional if isinstance(additional, dict) else None
        )
    return node


def _paths(value: Any, prefix: list[str]) -> list[list[str]]:
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _paths(v, [*prefix, str(k)])] or [prefix]
    if isinstance(value, list):
        return [p for item in value for p in _paths(item, prefix)] or [prefix]
    return [prefix]


def test_every_field_written_exists_in_kserve_s_own_schema() -> None:
    # The API server silently prunes fields its schema does not know: a typo would vanish.
    model = stockmodel(
        {"kserve": {"serviceAccountName": "sa"}},
        azureClientId="00000000-0000-0000-0000-000000000001",
        env=[{"name": "K", "secretName": "s", "key": "k"}],
        serve={"resources": {"requests": {"cpu": "500m"}}},
    )
    isvc = build_inference_service(
        model, release("2"), image=IMAGE, previous_version="1", canary_percent=10
    )
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    unknown = [p for p in _paths(isvc["spec"], ["spec"]) if _schema_at(schema, p) is None]

    assert unknown == []


def test_the_image_comes_from_the_spec_else_the_operator_s_default() -> None:
    assert workload_image(stockmodel(image="mine:1"), env={}) == "mine:1"
    assert workload_image(stockmodel(), env={"STOCKOPS_WORKLOAD_IMAGE": "chart:2"}) == "chart:2"
    with pytest.raises(SpecError, match=r"spec\.runtime\.image"):
        workload_image(stockmodel(), env={})


# --- rollouts -------------------------------------------------------------------------------


def test_a_first_rollout_creates_the_service_and_waits_for_it_to_be_ready() -> None:
    rig = Rig()

    result = rig.target.rollout(release("1"), POLICY)

    assert result.succeeded
    assert (result.serving_version, result.previous_version) == ("1", None)
    assert result.traffic == {"1": 100}
    assert result.steps == [100]
    assert result.endpoint_url == "http://spy-lstm.markets.example.com/v1/predict"
    assert rig.canaries_applied() == [("1", None)]
    assert rig.target.serving_version() == "1"


def test_rolling_out_the_version_already_serving_changes_nothing() -> None:
    rig = Rig()
    rig.target.rollout(release("1"), POLICY)
    applied = len(rig.api.applied)

    result = rig.target.rollout(release("1"), POLICY)

    assert result.succeeded
    assert len(rig.api.applied) == applied
    assert result.traffic == {"1": 100}
    assert "nothing changed" in result.message


def test_a_new_version_takes_traffic_in_the_canary_steps_then_all_of_it() -> None:
    rig = Rig()
    rig.target.rollout(release("1"), POLICY)

    result = rig.target.rollout(release("2"), POLICY)

    assert result.succeeded
    assert result.steps == [10, 50, 100]
    assert (result.serving_version, result.previous_version) == ("2", "1")
    assert result.traffic == {"2": 100}
    assert rig.canaries_applied()[1:] == [("2", 10), ("2", 50), ("2", None)]
    # each step below 100 was observed for stepWaitSeconds before the next
    assert rig.clock.slept.count(30) == 2
    isvc = rig.isvc()
    assert "models:/spy-forecaster/2" in container(isvc)["args"]
    assert isvc["metadata"]["annotations"][ANNOTATION_PREVIOUS] == "1"
    state = PredictorState.of(isvc)
    assert state.traffic == {"spy-lstm-predictor-00002": 100}
    assert state.latest_rolled_out == "spy-lstm-predictor-00002"
    assert rig.target.serving_version() == "2"


def test_a_version_that_fails_is_rolled_back_to_the_previous_one() -> None:
    rig = Rig({"2": "fail"})
    rig.target.rollout(release("1"), POLICY)

    with pytest.raises(RolloutFailedError) as failed:
        rig.target.rollout(release("2"), POLICY)

    result = failed.value.result
    assert result.rolled_back
    assert not result.succeeded
    assert (result.serving_version, result.previous_version) == ("1", "1")
    assert result.traffic == {"1": 100}
    assert result.steps == []
    assert "RevisionFailed" in result.message
    # traffic went back at once (0 % on the canary), then the old spec came back
    assert rig.canaries_applied()[1:] == [("2", 10), ("2", 0), ("1", 0), ("1", None)]
    isvc = rig.isvc()
    assert "models:/spy-forecaster/1" in container(isvc)["args"]
    assert isvc["metadata"]["annotations"][ANNOTATION_VERSION] == "1"
    state = PredictorState.of(isvc)
    assert state.ready == "True"
    assert state.traffic == {"spy-lstm-predictor-00003": 100}
    assert rig.kserve.revisions("markets", "spy-lstm")[2][1:] == ("1", True)
    assert rig.target.serving_version() == "1"


def test_a_restore_that_never_gets_ready_still_reads_as_the_old_version() -> None:
    # v2 fails; the fresh revision of v1's spec then never gets ready either, so the canary
    # field stays at 0 with the old revision serving everything. The object must still say
    # which version that is, so the next rollout can start from it.
    rig = Rig({"2": "fail"})
    rig.target.rollout(release("1"), POLICY)
    rig.kserve.behaviours["1"] = "never-ready"

    with pytest.raises(RolloutFailedError) as failed:
        rig.target.rollout(release("2"), POLICY)

    assert "canaryTrafficPercent 0 stays" in failed.value.result.message
    state = PredictorState.of(rig.isvc())
    assert state.canary_percent == 0
    assert state.stable_version == "1"
    assert rig.target.serving_version() == "1"
    rig.kserve.behaviours.clear()
    assert rig.target.rollout(release("3"), POLICY).succeeded


def test_an_api_server_that_gives_up_mid_canary_gets_the_traffic_rolled_back() -> None:
    rig = Rig()
    rig.target.rollout(release("1"), POLICY)
    # The 10 % write lands; the three tries of the 50 % write all fail; then the API server
    # is back for the rollback.
    flaky = FailingApplies(rig.api, failing={2, 3, 4})
    target = KServeTarget(stockmodel(), flaky, image=IMAGE, clock=rig.clock)

    with pytest.raises(RolloutFailedError) as failed:
        target.rollout(release("2"), POLICY)

    assert failed.value.result.rolled_back
    assert "did not answer" in failed.value.result.message
    state = PredictorState.of(rig.isvc())
    assert state.canary_percent is None
    assert rig.target.serving_version() == "1"
    assert state.traffic == {state.latest_ready: 100}


class FailingApplies:
    """Wraps FakeInferenceServices; the writes numbered in `failing` raise as an outage would."""

    def __init__(self, inner: FakeInferenceServices, failing: set[int]) -> None:
        self.inner = inner
        self.failing = failing
        self.applies = 0

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.inner.get(namespace, name)

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.applies += 1
        if self.applies in self.failing:
            raise ServiceUnavailableError(f"write {self.applies}: the API server did not answer")
        return self.inner.apply(manifest)


def test_a_version_that_never_gets_ready_is_rolled_back_after_the_readiness_timeout() -> None:
    rig = Rig({"2": "never-ready"})
    rig.target.rollout(release("1"), POLICY)
    started = rig.clock.now

    with pytest.raises(RolloutFailedError) as failed:
        rig.target.rollout(release("2"), POLICY)

    assert failed.value.result.rolled_back
    assert "not reached within 60 s" in failed.value.result.message
    assert rig.clock.now - started >= 60
    assert rig.target.serving_version() == "1"
    assert PredictorState.of(rig.isvc()).canary_percent is None


def test_without_auto_rollback_a_failed_canary_is_left_for_inspection() -> None:
    rig = Rig({"2": "fail"})
    rig.target.rollout(release("1"), POLICY)
    policy = POLICY.model_copy(update={"auto_rollback": False})

    with pytest.raises(RolloutFailedError) as failed:
        rig.target.rollout(release("2"), policy)

    result = failed.value.result
    assert not result.rolled_back
    assert result.serving_version == "1"  # the canary holds 10 %
    assert "autoRollback is off" in result.message
    assert rig.canaries_applied()[-1] == ("2", 10)


def test_a_first_rollout_that_never_gets_ready_reports_that_nothing_serves() -> None:
    rig = Rig({"1": "fail"})

    with pytest.raises(RolloutFailedError) as failed:
        rig.target.rollout(release("1"), POLICY)

    result = failed.value.result
    assert (result.serving_version, result.rolled_back, result.succeeded) == (None, False, False)
    assert "left as it is" in result.message
    assert rig.target.serving_version() is None


def test_a_retried_rollout_takes_over_the_canary_it_interrupted() -> None:
    rig = Rig()
    rig.target.rollout(release("1"), POLICY)
    # a deploy Job was killed with version 2 at 50 %
    rig.api.apply(
        build_inference_service(
            stockmodel(), release("2"), image=IMAGE, previous_version="1", canary_percent=50
        )
    )
    rig.isvc()  # the controller makes the canary's revision, which is Ready at the next look
    assert rig.target.serving_version() == "2"

    result = rig.target.rollout(release("2"), POLICY)

    assert result.succeeded
    assert result.previous_version == "1"
    # the canary's revision was reused: no third revision
    assert [r[1] for r in rig.kserve.revisions("markets", "spy-lstm")] == ["1", "2"]


def test_an_inference_service_stockops_did_not_create_is_not_touched() -> None:
    rig = Rig()
    rig.target.rollout(release("1"), POLICY)
    foreign = rig.api.objects[("markets", "spy-lstm")]
    del foreign["metadata"]["annotations"][ANNOTATION_VERSION]
    applied = len(rig.api.applied)

    with pytest.raises(SpecError, match="not one stockops manages"):
        rig.target.rollout(release("2"), POLICY)
    assert len(rig.api.applied) == applied


def test_a_rollout_of_the_spec_s_own_version_waits_for_it_instead_of_a_canary() -> None:
    rig = Rig()
    rig.target.rollout(release("1"), POLICY)
    rig.target.rollout(release("2"), POLICY)
    isvc = rig.api.objects[("markets", "spy-lstm")]
    # its pods stopped answering: KServe says Ready=False for the rolled-out revision
    rig.kserve.behaviours["2"] = "fail"
    isvc["spec"]["predictor"]["minReplicas"] = 2  # a new revision of version 2, which fails
    applied = len(rig.api.applied)

    with pytest.raises(RolloutFailedError) as failed:
        rig.target.rollout(release("2"), POLICY)

    assert len(rig.api.applied) == applied  # no canary of a version over itself
    assert not failed.value.result.rolled_back
    assert "already the InferenceService's spec" in failed.value.result.message


class FakeApiError(Exception):
    """A fake of the kubernetes client's ApiException: a status and the server's JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"({status})")
        self.status = status
        self.body = json.dumps(body)


class FakeCustomObjectsApi:
    """A fake CustomObjectsApi that answers every call with one error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_namespaced_custom_object(self, *args: Any) -> object:
        raise self.error

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> object:
        raise self.error


def services_failing_with(error: Exception) -> KubeInferenceServices:
    services = KubeInferenceServices(api_client=None)
    services._api = FakeCustomObjectsApi(error)
    return services


def test_a_missing_object_reads_as_none_but_a_missing_crd_says_kserve_is_absent() -> None:
    missing = FakeApiError(404, {"reason": "NotFound", "details": {"name": "spy-lstm"}})
    no_crd = FakeApiError(404, {"reason": "NotFound", "details": {}})

    assert services_failing_with(missing).get("markets", "spy-lstm") is None
    with pytest.raises(ServiceUnavailableError, match="is KServe"):
        services_failing_with(no_crd).get("markets", "spy-lstm")


def test_api_refusals_map_to_a_bad_spec_or_an_unavailable_dependency() -> None:
    manifest = build_inference_service(stockmodel(), release("1"), image=IMAGE)

    with pytest.raises(SpecError, match="refused the manifest"):
        services_failing_with(FakeApiError(422, {"reason": "Invalid"})).apply(manifest)
    with pytest.raises(ServiceUnavailableError, match="get, create and patch"):
        services_failing_with(FakeApiError(403, {"reason": "Forbidden"})).apply(manifest)
    with pytest.raises(ServiceUnavailableError):
        services_failing_with(ConnectionError("refused")).apply(manifest)


class FlakyInferenceServices:
    """Wraps FakeInferenceServices; the calls numbered in `failing` raise as an outage would."""

    def __init__(self, inner: FakeInferenceServices, failing: set[int]) -> None:
        self.inner = inner
        self.failing = failing
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls in self.failing:
            raise ServiceUnavailableError(f"call {self.calls}: the API server did not answer")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._call()
        return self.inner.get(namespace, name)

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._call()
        return self.inner.apply(manifest)


def test_a_blip_of_the_api_server_during_a_canary_does_not_stop_it() -> None:
    rig = Rig()
    rig.target.rollout(release("1"), POLICY)
    # call 3 is a poll of the 10 % step; the calls 6 and 9 fall on later writes and polls
    flaky = FlakyInferenceServices(rig.api, failing={3, 6, 9})
    target = KServeTarget(stockmodel(), flaky, image=IMAGE, clock=rig.clock)

    result = target.rollout(release("2"), POLICY)

    assert result.succeeded
    assert result.steps == [10, 50, 100]
    assert flaky.calls > 9
