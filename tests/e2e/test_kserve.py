"""`stockops deploy` with the kserve target against a real API server with KServe's CRD.

The InferenceService CRD is KServe v0.17.0's own (tests/data/kserve), so the API server
validates and prunes what the target writes exactly as in a cluster with KServe. No KServe
runs here: `FakeKServeController` watches the namespace and writes each InferenceService's
status (revisions, Ready, the predictor's traffic split, the rolled-out revisions) the way
KServe's Knative mode does. `stockops deploy` runs in-process as a ServiceAccount that has
only the rights the deploy Job needs on InferenceServices.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from stockops_model import cli
from stockops_model.deploy.base import Release
from stockops_model.deploy.kserve_manifests import (
    ANNOTATION_PREVIOUS,
    ANNOTATION_VERSION,
    GROUP,
    PLURAL,
    VERSION,
    PredictorState,
    build_predictor,
)
from stockops_model.errors import ExitCode
from stockops_model.spec import StockModel, parse_resource
from stockops_model.testing.kserve import (
    Behaviour,
    FakeKServe,
    FakeKServeController,
    install_crd,
)
from stockops_model.testing.kube import KubeCluster

pytestmark = pytest.mark.kube

MODEL = "spy-lstm"
TRACKING = "http://mlflow.mlops.svc:5000"
IMAGE = "stockops-workload:0.1.0"

MANIFEST = """
apiVersion: stockops.io/v1alpha1
kind: StockModel
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  tickers: [SPY]
  storage: {{path: /data}}
  mlflow: {{trackingUri: "{tracking}", modelName: spy-forecaster}}
  serving:
    target: kserve
    kserve: {{minReplicas: 1, maxReplicas: 2}}
    rollout: {{canarySteps: [10, 50, 100], readinessTimeoutSeconds: 10, stepWaitSeconds: 0}}
"""


@pytest.fixture(scope="module")
def kserve_crd(kube_cluster: KubeCluster) -> None:
    install_crd(kube_cluster)


@pytest.fixture
def deployer(kube_cluster: KubeCluster, namespace: str, kserve_crd: None, tmp_path: Path) -> Path:
    """A kubeconfig of a ServiceAccount allowed only get/create/patch on InferenceServices."""
    kube_cluster.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "deploy", "namespace": namespace},
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "resources": [PLURAL],
                        "verbs": ["get", "create", "patch"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "deploy", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "deploy",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "deploy", "namespace": namespace}],
            },
        ]
    )
    return kube_cluster.kubeconfig_for_service_account(namespace, "deploy")


@contextlib.contextmanager
def fake_kserve(
    cluster: KubeCluster, namespace: str, behaviours: Mapping[str, Behaviour] | None = None
) -> Iterator[FakeKServe]:
    kserve = FakeKServe(behaviours)
    with FakeKServeController(cluster.api_client(), namespace, kserve) as controller:
        yield kserve
    assert controller.errors == [], "the fake KServe controller failed to write a status"


def deploy(
    version: str,
    namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, dict[str, Any]]:
    """Run `stockops deploy --version V` as the deployer; return its exit code and JSON line."""
    manifest = tmp_path / "stockmodel.yaml"
    manifest.write_text(MANIFEST.format(name=MODEL, namespace=namespace, tracking=TRACKING))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("STOCKOPS_WORKLOAD_IMAGE", IMAGE)
    monkeypatch.setenv("STOCKOPS_TERMINATION_LOG", str(tmp_path / "termination-log"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["deploy", "-f", str(manifest), "--version", version])
    return code, json.loads(out.getvalue().strip().splitlines()[-1])


def read_isvc(cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(cluster.api_client())
    return cast(
        "dict[str, Any]", api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, MODEL)
    )


def predictor_args(isvc: Mapping[str, Any]) -> list[str]:
    args: list[str] = isvc["spec"]["predictor"]["containers"][0]["args"]
    return args


def test_a_new_version_goes_through_the_canary_steps_to_all_traffic(
    kube_cluster: KubeCluster,
    namespace: str,
    deployer: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fake_kserve(kube_cluster, namespace) as kserve:
        code, first = deploy("1", namespace, deployer, tmp_path, monkeypatch)
        assert (code, first["serving_version"], first["steps"]) == (0, "1", [100])
        assert first["endpoint_url"] == f"http://{MODEL}.{namespace}.example.com/v1/predict"

        code, second = deploy("2", namespace, deployer, tmp_path, monkeypatch)

    assert code == ExitCode.OK
    assert second["succeeded"]
    assert (second["serving_version"], second["previous_version"]) == ("2", "1")
    assert second["steps"] == [10, 50, 100]
    assert second["traffic"] == {"2": 100}
    seen = kserve.specs_seen
    assert seen.index(("2", 10)) < seen.index(("2", 50)) < seen.index(("2", None))
    isvc = read_isvc(kube_cluster, namespace)
    assert "models:/spy-forecaster/2" in predictor_args(isvc)
    assert isvc["metadata"]["annotations"][ANNOTATION_PREVIOUS] == "1"
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    # the API server kept every field written: none unknown to KServe's schema was pruned
    model = parse_resource(
        yaml.safe_load(MANIFEST.format(name=MODEL, namespace=namespace, tracking=TRACKING))
    )
    assert isinstance(model, StockModel)
    built = build_predictor(model, Release("spy-forecaster", "2", TRACKING), image=IMAGE)
    assert isvc["spec"]["predictor"] == built
    state = PredictorState.of(isvc)
    assert state.traffic == {f"{MODEL}-predictor-00002": 100}
    component = isvc["status"]["components"]["predictor"]
    assert component["latestRolledoutRevision"] == f"{MODEL}-predictor-00002"
    assert component["previousRolledoutRevision"] == f"{MODEL}-predictor-00001"


@pytest.mark.parametrize("behaviour", ["fail", "never-ready"])
def test_a_version_that_does_not_get_ready_is_rolled_back_in_the_object(
    kube_cluster: KubeCluster,
    namespace: str,
    deployer: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    eventually: Any,
    behaviour: Behaviour,
) -> None:
    with fake_kserve(kube_cluster, namespace, {"3": behaviour}) as kserve:
        deploy("2", namespace, deployer, tmp_path, monkeypatch)

        code, line = deploy("3", namespace, deployer, tmp_path, monkeypatch)

        # The last write (the old spec without canaryTrafficPercent) is not waited for by
        # the target: the old version has all traffic already, on the previous revision.
        restored = f"{MODEL}-predictor-00003"
        eventually(
            lambda: (
                PredictorState.of(read_isvc(kube_cluster, namespace)).traffic == {restored: 100}
            ),
            what="all traffic on the restored revision",
        )
        isvc = read_isvc(kube_cluster, namespace)

    assert code == ExitCode.ROLLOUT_FAILED
    assert line["rolled_back"]
    assert not line["succeeded"]
    assert (line["requested_version"], line["serving_version"]) == ("3", "2")
    assert line["traffic"] == {"2": 100}
    assert isvc["metadata"]["annotations"][ANNOTATION_VERSION] == "2"
    assert "models:/spy-forecaster/2" in predictor_args(isvc)
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    # revision 2 ran version 3 and never served; revision 3 is version 2 again, with it all
    revisions = kserve.revisions(namespace, MODEL)
    assert [(version, ready) for _, version, ready in revisions] == [
        ("2", True),
        ("3", False if behaviour == "fail" else None),
        ("2", True),
    ]
    assert PredictorState.of(isvc).ready == "True"
    assert kserve.specs_seen.index(("3", 10)) < kserve.specs_seen.index(("2", None), 1)


def test_a_deployer_without_rights_changes_nothing_and_is_told_which_it_needs(
    kube_cluster: KubeCluster,
    namespace: str,
    kserve_crd: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nobody = kube_cluster.kubeconfig_for_service_account(namespace, "nobody")
    manifest = tmp_path / "stockmodel.yaml"
    manifest.write_text(MANIFEST.format(name=MODEL, namespace=namespace, tracking=TRACKING))
    monkeypatch.setenv("KUBECONFIG", str(nobody))
    monkeypatch.setenv("STOCKOPS_WORKLOAD_IMAGE", IMAGE)
    errors = io.StringIO()

    with contextlib.redirect_stderr(errors):
        code = cli.main(["deploy", "-f", str(manifest), "--version", "1"])

    assert code == ExitCode.UNAVAILABLE
    assert "needs get, create and patch" in errors.getvalue()
    listed = client.CustomObjectsApi(kube_cluster.api_client()).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    assert cast("dict[str, Any]", listed)["items"] == []
