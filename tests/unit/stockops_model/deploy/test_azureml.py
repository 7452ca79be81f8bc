"""The `azureml` deploy target against `FakeMLClient`, a fake of the SDK's `MLClient`.

Nothing here reaches Azure. The model side is real: naive forecasters are registered in an
MLflow registry on SQLite (no server) and each rollout downloads its version with
`mlflow.artifacts.download_artifacts`. The fake plays the workspace (provisioning states,
409 while Updating, the SDK's traffic rewriting); what the target sent is checked in the
SDK's own serialised wire form. A `FakeClock` makes every wait instant and countable.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.ai.ml.operations._online_endpoint_operations import _strip_zeroes_from_traffic

from stockops_model.deploy.azureml import BASE_IMAGE_ENV, AzureMLTarget, build_target
from stockops_model.deploy.azureml_entities import (
    INFERENCE_SERVER_PACKAGE,
    VERSION_TAG,
    build_deployment,
    build_endpoint,
    deployment_name,
    traffic_map,
    with_traffic,
)
from stockops_model.deploy.base import Release, RolloutFailedError
from stockops_model.errors import ExitCode, ServiceUnavailableError, SettingsError
from stockops_model.forecaster import NaiveForecaster
from stockops_model.loaders import load_bars
from stockops_model.results import TERMINATION_LOG_ENV
from stockops_model.spec import AzureMLSpec, RolloutSpec, StockModel

from .fake_mlclient import FakeMLClient, http_error, last_close_scorer

DATA = Path(__file__).parents[3] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
MODEL = "Megacaps.Forecaster"  # mixed case and a dot: the deployment names must cope
ENDPOINT = "megacaps-forecast"
V1, V2, V3 = "megacaps-forecaster-v1", "megacaps-forecaster-v2", "megacaps-forecaster-v3"
IMAGE = "stockopsacr.example/azureml/minimal-py311-inference:20261101"


class FakeClock:
    """A fake `Clock`: sleeping advances time at once and is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite MLflow registry holding versions 1-3 of the naive forecaster of TICKERS."""
    import mlflow

    from stockops_model.registry import log_forecaster

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    bars = load_bars(DATA, symbols=TICKERS).loc[
        :, ["symbol", "ts", "open", "high", "low", "close", "volume"]
    ]
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("azureml", artifact_location=str(folder / "artifacts"))
    for _ in range(3):
        with mlflow.start_run(experiment_id=experiment):
            log_forecaster(NaiveForecaster(TICKERS), bars, registered_model_name=MODEL)
    yield uri
    # set_tracking_uri also exports MLFLOW_TRACKING_URI: undo both, not just the global.
    mlflow.tracking._tracking_service.utils._tracking_uri = None
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def azure_spec(**overrides: Any) -> AzureMLSpec:
    fields = {
        "subscriptionId": "00000000-0000-0000-0000-000000000000",
        "resourceGroup": "rg-stockops",
        "workspace": "mlw-stockops",
        "endpointName": ENDPOINT,
        "instanceType": "Standard_DS3_v2",
        "instanceCount": 2,
        **overrides,
    }
    return AzureMLSpec.model_validate(fields)


def policy(**overrides: Any) -> RolloutSpec:
    fields = {"canarySteps": [10, 50, 100], "stepWaitSeconds": 60, **overrides}
    return RolloutSpec.model_validate({"readinessTimeoutSeconds": 900, **fields})


@pytest.fixture
def fake(tmp_path: Path) -> Any:
    return FakeMLClient(storage=tmp_path / "workspace-storage")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def target(fake: Any, clock: FakeClock, spec: AzureMLSpec | None = None) -> AzureMLTarget:
    return AzureMLTarget(spec=spec or azure_spec(), ml_client=fake, base_image=IMAGE, clock=clock)


def serving_v1(registry: str, fake: Any, clock: FakeClock) -> AzureMLTarget:
    """A target whose endpoint serves version 1 with all traffic (a first rollout done)."""
    deploy = target(fake, clock)
    deploy.rollout(release(registry, "1"), policy())
    return deploy


def assert_only_v1_serves(fake: Any) -> None:
    """After a rollback: the new deployment is gone and version 1 has all traffic again."""
    assert fake.deployment_names(ENDPOINT) == [V1]
    assert fake.traffic(ENDPOINT) == {V1: 100}


def release(registry: str, version: str) -> Release:
    return Release(MODEL, version, registry)


def traffic_updates(fake: Any) -> list[dict[str, int]]:
    """The traffic maps of the endpoint updates, as sent on the wire (after the create)."""
    return [dict(wire["properties"]["traffic"]) for wire in fake.endpoint_wire[1:]]


def calls_of(fake: Any, operation: str) -> list[str]:
    return [arg for op, arg in fake.calls if op == operation]


class ScoreScriptScorer:
    """Answers invoke with the real `score.py` on the model the fake holds for a deployment.

    It loads a private copy of the script per deployment, as Azure ML's inference server
    would (minus HTTP): `AZUREML_MODEL_DIR` is the uploaded model folder.
    """

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.scripts: dict[str, Any] = {}

    def __call__(self, deployment: str, request: dict[str, Any]) -> str:
        if deployment not in self.scripts:
            entity = self.fake.deployments[(ENDPOINT, deployment)].entity
            _, name, version = entity.model.split(":")
            path = self.fake.model_assets[(name, version)].path
            script = Path(entity.code_configuration.code) / "score.py"
            spec = importlib.util.spec_from_file_location(f"score_{deployment}", script)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            env = {"AZUREML_MODEL_DIR": path, **entity.environment_variables}
            saved = {key: os.environ.get(key) for key in env}
            os.environ.update(env)
            try:
                module.init()
                self.scripts[deployment] = module
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        return json.dumps(self.scripts[deployment].run(json.dumps(request)))


# --------------------------------------------------------------------------- first deployment


def test_first_rollout_registers_creates_smoke_tests_and_serves(
    registry: str, fake: Any, clock: FakeClock, tmp_path: Path
) -> None:
    answers: list[dict[str, Any]] = []
    scorer = ScoreScriptScorer(fake)

    def recording(deployment: str, request: dict[str, Any]) -> str:
        text = scorer(deployment, request)
        answers.append(json.loads(text))
        return text

    fake.scorer = recording

    result = target(fake, clock).rollout(release(registry, "1"), policy())

    assert result.succeeded
    assert (result.serving_version, result.previous_version) == ("1", None)
    assert result.traffic == {"1": 100}
    assert result.steps == [100]  # canary steps need an old version to split with
    assert result.endpoint_url == f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score"
    # The workspace model: the MLflow folder of version 1, same name and version.
    model = fake.model_assets[(MODEL, "1")]
    assert model.type == "mlflow_model"
    assert (Path(model.path) / "MLmodel").is_file()
    # The environment: the model's pinned requirements plus the inference server.
    environment = fake.environment_assets[("Megacaps.Forecaster-serving", "1")]
    assert environment.image == IMAGE
    pip = next(d["pip"] for d in environment.conda_file["dependencies"] if isinstance(d, dict))
    assert INFERENCE_SERVER_PACKAGE in pip
    assert any(p.startswith("mlflow==") for p in pip)
    # The endpoint and the deployment, as sent on the wire.
    assert fake.endpoint_wire[0]["properties"]["authMode"] == "Key"
    wire = fake.deployment_wire[V1]
    assert wire["properties"]["model"] == f"azureml:{MODEL}:1"
    assert wire["properties"]["environmentId"] == "azureml:Megacaps.Forecaster-serving:1"
    assert wire["properties"]["instanceType"] == "Standard_DS3_v2"
    assert wire["properties"]["endpointComputeType"] == "Managed"
    assert wire["properties"]["codeConfiguration"]["scoringScript"] == "score.py"
    assert wire["sku"]["capacity"] == 2
    assert wire["tags"][VERSION_TAG] == "1"
    # Smoke-tested alone before it took traffic, through the real score.py.
    order = [op for op, _ in fake.calls]
    invoke = order.index("online_endpoints.invoke")
    assert calls_of(fake, "online_endpoints.invoke") == [f"{ENDPOINT}/{V1}"]
    assert invoke < len(order) - 1 - order[::-1].index("online_endpoints.begin_create_or_update")
    assert [f["symbol"] for f in answers[0]["forecasts"]] == list(TICKERS)
    assert answers[0]["model_version"] == "1"
    assert traffic_updates(fake) == [{V1: 100}]
    assert fake.traffic(ENDPOINT) == {V1: 100}
    assert fake.refused == []  # never sent anything while the endpoint was busy


# --------------------------------------------------------------------------- blue/green


def test_blue_green_shifts_in_steps_then_deletes_the_old_deployment(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    target(fake, clock).rollout(release(registry, "1"), policy())
    clock.sleeps.clear()

    result = target(fake, clock).rollout(release(registry, "2"), policy())

    assert result.succeeded
    assert (result.serving_version, result.previous_version) == ("2", "1")
    assert result.traffic == {"2": 100}
    assert result.steps == [10, 50, 100]
    # Every map names both versions until the old one has none (the SDK drops 0 entries).
    assert traffic_updates(fake)[1:] == [{V2: 10, V1: 90}, {V2: 50, V1: 50}, {V2: 100}]
    assert clock.sleeps.count(60) == 2  # observed between the steps, not after the last
    assert fake.deployment_names(ENDPOINT) == [V2]
    assert fake.traffic(ENDPOINT) == {V2: 100}
    assert "deleted " + V1 in result.message
    assert fake.refused == []


def test_rolling_out_the_serving_version_again_changes_nothing(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    fake.calls.clear()

    result = deploy.rollout(release(registry, "1"), policy())

    assert result.succeeded
    assert result.traffic == {"1": 100}
    assert result.steps == []
    changes = [op for op, _ in fake.calls if "create" in op or "delete" in op]
    assert changes == []
    assert "already" in result.message
    assert deploy.serving_version() == "1"


def test_rerun_reuses_the_model_and_a_provisioned_deployment(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    # An earlier run of version 2 died after provisioning, before any traffic moved.
    fake.refuse_traffic = lambda traffic: True
    with pytest.raises(RolloutFailedError):
        AzureMLTarget(
            spec=azure_spec(),
            ml_client=fake,
            base_image=IMAGE,
            clock=clock,
        ).rollout(release(registry, "2"), policy(autoRollback=False))
    fake.refuse_traffic = lambda traffic: False
    fake.calls.clear()

    result = deploy.rollout(release(registry, "2"), policy())

    assert result.succeeded
    assert calls_of(fake, "models.create_or_update") == []
    assert calls_of(fake, "environments.create_or_update") == []
    assert calls_of(fake, "online_deployments.begin_create_or_update") == []
    assert fake.traffic(ENDPOINT) == {V2: 100}


def test_a_failed_deployment_of_the_same_version_is_deleted_and_recreated(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    leftover = build_deployment(
        azure_spec(), name=V2, model_name=MODEL, version="2", environment="e", code_dir="."
    )
    fake.seed_deployment(leftover, traffic=0, state="Failed")
    fake.calls.clear()

    result = deploy.rollout(release(registry, "2"), policy())

    assert result.succeeded
    assert calls_of(fake, "online_deployments.begin_delete")[:1] == [V2]
    assert calls_of(fake, "online_deployments.begin_create_or_update") == [V2]
    assert fake.traffic(ENDPOINT) == {V2: 100}


def test_an_updating_endpoint_is_waited_out_before_each_change(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    fake.busy_polls = 4
    fake.endpoints[ENDPOINT].states.pending = ["Updating"] * 6  # someone else's update
    slept = len(clock.sleeps)

    result = deploy.rollout(release(registry, "2"), policy())

    assert result.succeeded
    assert fake.refused == []  # no update was sent while the endpoint was Updating
    assert len(clock.sleeps) - slept >= 6 + 3 * 4
    assert fake.traffic(ENDPOINT) == {V2: 100}


def test_a_409_conflict_from_a_concurrent_update_is_retried(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    conflicts = [http_error(409, "(Conflict) another operation is in progress")]
    sdk_update = fake.online_endpoints.begin_create_or_update

    def racing_update(endpoint: Any, **kwargs: Any) -> Any:
        if conflicts:
            raise conflicts.pop()
        return sdk_update(endpoint, **kwargs)

    fake.online_endpoints.begin_create_or_update = racing_update

    result = deploy.rollout(release(registry, "2"), policy(canarySteps=[100]))

    assert result.succeeded
    assert conflicts == []
    assert fake.traffic(ENDPOINT) == {V2: 100}


# --------------------------------------------------------------------------- failures


def test_provisioning_failure_rolls_back_and_deletes_the_new_deployment(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    fake.fail_provisioning.add(V2)

    with pytest.raises(RolloutFailedError) as failure:
        deploy.rollout(release(registry, "2"), policy())

    result = failure.value.result
    assert failure.value.exit_code == ExitCode.ROLLOUT_FAILED
    assert result.rolled_back
    assert not result.succeeded
    assert (result.serving_version, result.traffic) == ("1", {"1": 100})
    assert "Failed" in result.message or "failed" in result.message
    assert_only_v1_serves(fake)
    assert calls_of(fake, "online_endpoints.invoke")[-1].endswith(V1)  # V2 never smoke-tested


def test_a_deployment_still_creating_at_the_readiness_timeout_is_rolled_back(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    fake.stuck_provisioning.add(V2)
    started = clock.now

    with pytest.raises(RolloutFailedError) as failure:
        deploy.rollout(release(registry, "2"), policy(readinessTimeoutSeconds=600))

    assert failure.value.result.rolled_back
    assert "timeout" in failure.value.result.message
    assert 600 <= clock.now - started < 700  # gave up at the timeout, not before or long after
    assert_only_v1_serves(fake)


def test_smoke_test_failure_rolls_back_before_any_traffic_moves(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    updates = len(traffic_updates(fake))
    fake.invoke_answers[V2] = json.dumps({"error": {"reason": "invalid_bars", "message": "x"}})

    with pytest.raises(RolloutFailedError) as failure:
        deploy.rollout(release(registry, "2"), policy())

    assert failure.value.result.rolled_back
    assert "smoke test" in failure.value.result.message
    assert len(traffic_updates(fake)) == updates  # the old version never lost a request
    assert_only_v1_serves(fake)


def test_a_smoke_answer_encoded_twice_is_read(registry: str, fake: Any, clock: FakeClock) -> None:
    # The inference server JSON-encodes run()'s value; a script returning a JSON string
    # reaches the client as a JSON string of JSON.
    request = {"bars": [{"symbol": s, "ts": "t", "close": 1.0} for s in TICKERS]}
    fake.invoke_answers[V1] = json.dumps(last_close_scorer(V1, request))

    result = target(fake, clock).rollout(release(registry, "1"), policy())

    assert result.succeeded


def test_smoke_test_http_error_rolls_back(registry: str, fake: Any, clock: FakeClock) -> None:
    deploy = serving_v1(registry, fake, clock)
    fake.invoke_answers[V2] = http_error(502, "(BadGateway) upstream connect error")

    with pytest.raises(RolloutFailedError) as failure:
        deploy.rollout(release(registry, "2"), policy())

    assert "502" in failure.value.result.message
    assert fake.traffic(ENDPOINT) == {V1: 100}


def test_traffic_step_failure_restores_the_old_deployment(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    fake.refuse_traffic = lambda traffic: traffic.get(V2) == 50

    with pytest.raises(RolloutFailedError) as failure:
        deploy.rollout(release(registry, "2"), policy())

    result = failure.value.result
    assert result.rolled_back
    assert result.steps == [10]
    assert (result.serving_version, result.previous_version, result.traffic) == (
        "1",
        "1",
        {"1": 100},
    )
    assert traffic_updates(fake)[-2:] == [{V2: 10, V1: 90}, {V1: 100}]
    assert_only_v1_serves(fake)


def test_first_rollout_failure_leaves_no_deployment_behind(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    fake.fail_provisioning.add(V1)

    with pytest.raises(RolloutFailedError) as failure:
        target(fake, clock).rollout(release(registry, "1"), policy())

    assert failure.value.result.rolled_back
    assert failure.value.result.serving_version is None
    assert failure.value.result.traffic == {}
    assert fake.deployment_names(ENDPOINT) == []


def test_without_auto_rollback_a_failure_is_left_for_a_human(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = serving_v1(registry, fake, clock)
    fake.refuse_traffic = lambda traffic: traffic.get(V2) == 50

    with pytest.raises(RolloutFailedError) as failure:
        deploy.rollout(release(registry, "2"), policy(autoRollback=False))

    assert not failure.value.result.rolled_back
    assert failure.value.result.traffic == {"2": 10, "1": 90}
    assert fake.traffic(ENDPOINT) == {V2: 10, V1: 90}
    # Once fixed, a rerun resumes from the share the new version already has.
    fake.refuse_traffic = lambda traffic: False

    result = deploy.rollout(release(registry, "2"), policy())

    assert result.succeeded
    assert (result.previous_version, result.steps) == ("1", [50, 100])
    assert fake.deployment_names(ENDPOINT) == [V2]


def test_an_unreachable_workspace_before_any_change_is_unavailable(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise http_error(503, "(ServiceUnavailable) try again later")

    fake.models.get = unreachable

    with pytest.raises(ServiceUnavailableError, match="nothing changed"):
        target(fake, clock).rollout(release(registry, "1"), policy())
    assert fake.endpoints == {}


# --------------------------------------------------------------------------- kubernetes


def test_kubernetes_endpoint_on_its_compute(registry: str, fake: Any, clock: FakeClock) -> None:
    spec = azure_spec(
        endpointKind="kubernetes", compute="aks-prod", instanceType="defaultinstancetype"
    )

    result = target(fake, clock, spec).rollout(release(registry, "1"), policy())

    assert result.succeeded
    assert fake.endpoint_wire[0]["properties"]["compute"] == "aks-prod"
    wire = fake.deployment_wire[V1]["properties"]
    assert wire["endpointComputeType"] == "Kubernetes"
    assert wire["instanceType"] == "defaultinstancetype"
    assert wire["model"] == f"azureml:{MODEL}:1"


def test_an_endpoint_of_the_other_kind_is_a_spec_error(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    fake.seed_endpoint(build_endpoint(azure_spec()))
    spec = azure_spec(endpointKind="kubernetes", compute="aks-prod")

    with pytest.raises(Exception, match="endpointKind"):
        target(fake, clock, spec).rollout(release(registry, "1"), policy())


# --------------------------------------------------------------------------- traffic-map trap


def test_the_fake_plays_the_trap_an_update_without_traffic_zeroes_all(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    target(fake, clock).rollout(release(registry, "1"), policy())
    endpoint = fake.online_endpoints.get(ENDPOINT)
    endpoint.traffic = {}
    for _ in range(fake.busy_polls):
        fake.online_endpoints.get(ENDPOINT)

    fake.online_endpoints.begin_create_or_update(endpoint)

    assert fake.traffic(ENDPOINT) == {}  # what the target must never do by accident


def test_every_traffic_update_names_versions_summing_to_100(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = target(fake, clock)
    for version in ("1", "2", "3"):
        deploy.rollout(release(registry, version), policy(canarySteps=[25, 100]))

    updates = traffic_updates(fake)
    assert updates == [
        {V1: 100},
        {V2: 25, V1: 75},
        {V2: 100},
        {V3: 25, V2: 75},
        {V3: 100},
    ]
    assert all(sum(update.values()) == 100 for update in updates)


def test_traffic_map_names_every_deployment_and_sums_to_100() -> None:
    deployments = [V1, V2, "blue"]

    assert traffic_map(deployments, {V2: 10, V1: 90}) == {V1: 90, V2: 10, "blue": 0}
    with pytest.raises(ValueError, match="sum to 100"):
        traffic_map(deployments, {V2: 10})
    with pytest.raises(ValueError, match="unknown"):
        traffic_map(deployments, {"green": 100})
    # A deployment created as "Blue" elsewhere is the "blue" of a traffic map.
    assert traffic_map([V1, "Blue"], {V1: 40, "blue": 60}) == {V1: 40, "blue": 60}
    assert traffic_map([V1, "Blue"], {V1: 100}) == {V1: 100, "blue": 0}


def test_an_update_changes_traffic_only_and_survives_the_sdk_rewrite() -> None:
    read = ManagedOnlineEndpoint(
        name=ENDPOINT, auth_mode="key", tags={"team": "quant"}, traffic={V1: 100, V2: 0}
    )
    full = traffic_map([V1, V2], {V2: 10, V1: 90})

    update = with_traffic(read, full)
    update.traffic = _strip_zeroes_from_traffic(update.traffic)  # as the SDK does on send
    wire = update._to_rest_online_endpoint(location="westeurope").as_dict()

    assert wire["properties"]["traffic"] == {V1: 90, V2: 10}
    assert wire["properties"]["authMode"] == "Key"
    assert wire["tags"] == {"team": "quant"}
    assert read.traffic == {V1: 100, V2: 0}  # the endpoint as read is left alone


def test_deployment_names_are_lowercase_valid_and_distinct() -> None:
    assert deployment_name("Megacaps.Forecaster", "7") == "megacaps-forecaster-v7"
    assert deployment_name("9lives", "12") == "m-9lives-v12"
    long = deployment_name("a" * 63, "123456")
    assert long == "a" * 24 + "-v123456"
    assert len(long) == 32
    assert deployment_name("x", "1") == "x-v1"  # three characters at least


# --------------------------------------------------------------------------- factory


STOCKMODEL = {
    "apiVersion": "stockops.io/v1alpha1",
    "kind": "StockModel",
    "metadata": {"name": "megacaps", "namespace": "stockops"},
    "spec": {
        "tickers": list(TICKERS),
        "storage": {"path": "/data/bars"},
        "mlflow": {"trackingUri": "http://mlflow:5000", "modelName": MODEL},
        "serving": {
            "target": "azureml",
            "azureml": {
                "subscriptionId": "00000000-0000-0000-0000-000000000000",
                "resourceGroup": "rg-stockops",
                "workspace": "mlw-stockops",
                "endpointName": ENDPOINT,
            },
        },
    },
}


def test_build_target_connects_to_the_spec_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_IMAGE_ENV, IMAGE)

    built = build_target(StockModel.model_validate(STOCKMODEL), "http://mlflow:5000")

    assert built.name == "azureml"
    assert built.base_image == IMAGE
    assert built.ml_client.workspace_name == "mlw-stockops"
    assert built.ml_client.resource_group_name == "rg-stockops"


def test_the_spec_base_image_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_IMAGE_ENV, "from-env:1")
    manifest = copy.deepcopy(STOCKMODEL)
    manifest["spec"]["serving"]["azureml"]["baseImage"] = IMAGE
    built = build_target(StockModel.model_validate(manifest), "http://mlflow:5000")
    assert built.base_image == IMAGE


def test_build_target_needs_the_base_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BASE_IMAGE_ENV, raising=False)

    with pytest.raises(SettingsError, match=BASE_IMAGE_ENV):
        build_target(StockModel.model_validate(STOCKMODEL), "http://mlflow:5000")


def test_serving_version_reads_the_deployment_tag(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    deploy = target(fake, clock)
    assert deploy.serving_version() is None

    deploy.rollout(release(registry, "2"), policy())

    assert deploy.serving_version() == "2"


def test_smoke_request_is_the_saved_input_example(
    registry: str, fake: Any, clock: FakeClock
) -> None:
    requests: list[dict[str, Any]] = []

    def recording(deployment: str, request: dict[str, Any]) -> str:
        requests.append(request)
        return str(last_close_scorer(deployment, request))

    fake.scorer = recording

    target(fake, clock).rollout(release(registry, "1"), policy())

    bars = pd.DataFrame(requests[0]["bars"])
    assert sorted(bars["symbol"].unique()) == list(TICKERS)
    assert set(bars.columns) == {"symbol", "ts", "open", "high", "low", "close", "volume"}


# --------------------------------------------------------------------------- stockops deploy


def run_deploy(
    registry: str, fake: Any, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, dict[str, Any]]:
    """`stockops deploy -f ... --version 2` with the fake behind the azureml target."""
    import contextlib
    import io

    import yaml

    from stockops_model import cli
    from stockops_model.deploy import azureml

    manifest = tmp_path / "stockmodel.yaml"
    manifest.write_text(yaml.safe_dump(STOCKMODEL))
    monkeypatch.setattr(
        azureml, "build_target", lambda model, uri: target(fake, clock, model.spec.serving.azureml)
    )
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(tmp_path / "termination-log"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(
            ["deploy", "-f", str(manifest), "--version", "2", "--tracking-uri", registry]
        )
    return code, json.loads(stdout.getvalue().strip().splitlines()[-1])


def test_stockops_deploy_prints_the_result_line(
    registry: str, fake: Any, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target(fake, clock).rollout(release(registry, "1"), policy())

    code, line = run_deploy(registry, fake, clock, tmp_path, monkeypatch)

    assert code == 0
    assert line["target"] == "azureml"
    assert (line["serving_version"], line["previous_version"]) == ("2", "1")
    assert line["traffic"] == {"2": 100}
    assert line["steps"] == [10, 50, 100]  # the spec's default rollout policy
    assert line["succeeded"] is True


def test_stockops_deploy_exits_6_after_a_rollback(
    registry: str, fake: Any, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target(fake, clock).rollout(release(registry, "1"), policy())
    fake.fail_provisioning.add(V2)

    code, line = run_deploy(registry, fake, clock, tmp_path, monkeypatch)

    assert code == ExitCode.ROLLOUT_FAILED
    assert line["rolled_back"] is True
    assert line["serving_version"] == "1"
    assert line["traffic"] == {"1": 100}
