"""The Helm chart charts/stockops: lint, render, values schema, package, and RBAC on a real server.

Rendering uses the real `helm` built by the harness. The RBAC tests apply the rendered roles to
the real kube-apiserver and ask it (SubjectAccessReview) what the operator's ServiceAccount may
do, so least privilege is checked by the authorizer rather than by reading YAML.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from stockops_model import crds
from stockops_model.testing.kube import KUBERNETES_VERSION, KubeCluster
from stockops_operator import kubeapi
from stockops_operator.settings import PREFIX, Settings

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stockops"
Helm = Callable[..., str]
# The chart requires Kubernetes >= 1.30; say which one `helm template` renders for.
KUBE_VERSION = ("--kube-version", KUBERNETES_VERSION)


def _render(
    helm: Helm, *args: str, namespace: str = "stockops", release: str = "ops"
) -> list[dict[str, Any]]:
    text = helm("template", release, str(CHART), "--namespace", namespace, *KUBE_VERSION, *args)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_chart_lints(helm: Helm) -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set", "watchNamespace=models")


def test_default_render_is_cluster_wide(helm: Helm) -> None:
    docs = _render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ClusterKopfPeering",
        ]
    )
    (peering,) = _by_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "stockops"


def test_operator_pod_is_locked_down(helm: Helm) -> None:
    (deployment,) = _by_kind(_render(helm), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "ops-stockops"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["command"] == ["python", "-m", "stockops_operator"]


def test_every_operator_env_var_is_a_setting(helm: Helm) -> None:
    """A chart value that the operator does not read would be silently ignored."""
    docs = _render(
        helm,
        "--set-string",
        "workload.resources.train.requests.cpu=2",
        "--set",
        "watchNamespace=models",
    )
    (deployment,) = _by_kind(docs, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    known = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)} | {
        PREFIX + "RESOURCES_JSON"
    }
    assert set(env) <= known
    assert env["STOCKOPS_NAMESPACE"] == "models"
    assert env["STOCKOPS_PEERING_NAME"] == "stockops"
    assert env["STOCKOPS_RESOURCES_JSON"] == '{"train":{"requests":{"cpu":"2"}}}'
    assert env["STOCKOPS_WORKLOAD_IMAGE"] == "stockops-workload:0.1.0"
    assert env["STOCKOPS_LOG_JSON"] == "true"


def test_single_namespace_render_uses_roles(helm: Helm) -> None:
    docs = _render(helm, "--set", "watchNamespace=models")
    (role,) = _by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "models"
    (binding,) = _by_kind(docs, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ops-stockops", "namespace": "stockops"}
    ]
    (peering,) = _by_kind(docs, "KopfPeering")
    assert peering["metadata"]["namespace"] == "models"
    cluster_rules = [r for c in _by_kind(docs, "ClusterRole") for r in c["rules"]]
    writes = [r for r in cluster_rules if set(r["verbs"]) - {"get", "list", "watch"}]
    aggregated = {"stockmodels", "retrainschedules"}  # the admin/edit aggregation for users
    assert all(set(r["resources"]) <= aggregated for r in writes)
    workload_sa = [
        sa
        for sa in _by_kind(docs, "ServiceAccount")
        if sa["metadata"]["name"] == "stockops-workload"
    ]
    assert workload_sa[0]["metadata"]["namespace"] == "models"


def test_workload_identity_annotates_the_workload_service_account(helm: Helm) -> None:
    client_id = "11111111-1111-1111-1111-111111111111"
    docs = _render(
        helm,
        "--set",
        "workload.azureWorkloadIdentity.enabled=true",
        "--set",
        f"workload.azureWorkloadIdentity.clientId={client_id}",
    )
    (workload_sa,) = [
        sa
        for sa in _by_kind(docs, "ServiceAccount")
        if sa["metadata"]["name"] == "stockops-workload"
    ]
    assert workload_sa["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": client_id
    }


@pytest.mark.parametrize(
    "bad",
    [
        "watchNamespace=Not_A_Namespace",
        "replicaCount=-1",
        "operator.logLevel=LOUD",
        "workload.azureWorkloadIdentity.clientId=not-a-guid",
        "typo=1",
    ],
)
def test_values_schema_refuses_bad_values(helm: Helm, bad: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as caught:
        helm("template", "ops", str(CHART), *KUBE_VERSION, "--set", bad)
    assert "values don't meet the specifications of the schema" in str(caught.value.stderr)


def test_crds_ship_with_the_chart_and_its_package(helm: Helm, tmp_path: Path) -> None:
    docs = _render(helm, "--include-crds")
    names = {d["metadata"]["name"] for d in _by_kind(docs, "CustomResourceDefinition")}
    assert names == {
        "stockmodels.stockops.io",
        "retrainschedules.stockops.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    helm("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("stockops-*.tgz")
    with tarfile.open(package) as tar:
        for definition in crds.DEFINITIONS:
            member = tar.extractfile(f"stockops/crds/{definition.file_name}")
            assert member is not None
            assert member.read() == (ROOT / "crds" / definition.file_name).read_bytes()


# --------------------------------------------------------------------------- RBAC, for real


def _can(
    cluster: KubeCluster, user: str, verb: str, resource: str, namespace: str, group: str = ""
) -> bool:
    resource, _, sub = resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=sub or None,
                namespace=namespace or None,
            ),
        )
    )
    answer = client.AuthorizationV1Api(cluster.api_client()).create_subject_access_review(review)
    return answer.status is not None and bool(answer.status.allowed)


@pytest.mark.parametrize("scope", ["cluster-wide", "one-namespace"])
def test_rbac_grants_what_the_operator_does_and_nothing_more(
    kube_cluster: KubeCluster, helm: Helm, namespace: str, scope: str, eventually: Any
) -> None:
    release = f"r{namespace[-6:]}"
    args = ["--set", f"watchNamespace={namespace}"] if scope == "one-namespace" else []
    docs = _render(
        helm,
        "--set",
        "rbac.aggregateToDefaultRoles=false",
        *args,
        namespace=namespace,
        release=release,
    )
    rbac = [
        d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    ]
    kube_cluster.apply(rbac, namespace=namespace)
    user = f"system:serviceaccount:{namespace}:{release}-stockops"

    allowed = [  # (verb, resource, namespace, group)
        (verb, resource, namespace, group)
        for verb, resource, group in [
            ("watch", "stockmodels", "stockops.io"),
            ("patch", "stockmodels", "stockops.io"),
            ("patch", "retrainschedules/status", "stockops.io"),
            ("update", "stockmodels/finalizers", "stockops.io"),
            ("create", "jobs", "batch"),
            ("delete", "jobs", "batch"),
            ("create", "deployments", "apps"),
            ("create", "configmaps", ""),
            ("list", "pods", ""),
            ("get", "pods/log", ""),
            ("create", "events", ""),
            ("create", "events", "events.k8s.io"),
        ]
    ]
    # Every kind the operator's API client knows, it may at least read.
    for value in vars(kubeapi).values():
        if isinstance(value, kubeapi.Resource):
            group = value.api_version.rpartition("/")[0]
            allowed += [(verb, value.plural, namespace, group) for verb in ("get", "list")]
    if scope == "cluster-wide":
        allowed.append(("patch", "clusterkopfpeerings", "", "kopf.dev"))
    else:
        allowed.append(("patch", "kopfpeerings", namespace, "kopf.dev"))
    allowed.append(("watch", "customresourcedefinitions", "", "apiextensions.k8s.io"))

    def missing() -> list[tuple[str, str, str, str]]:
        return [grant for grant in allowed if not _can(kube_cluster, user, *grant)]

    # The authorizer reads roles and bindings from an informer cache, a moment behind the
    # writes: wait until every grant is in effect, so each refusal below is a real one.
    eventually(
        lambda: not missing(),
        what=lambda: f"every grant of the chart's roles in effect (refused: {missing()})",
    )
    denied = [
        ("get", "secrets", ""),
        ("create", "pods", ""),
        ("create", "stockmodels", "stockops.io"),
        ("delete", "stockmodels", "stockops.io"),
        ("create", "roles", "rbac.authorization.k8s.io"),
        ("create", "serviceaccounts/token", ""),
        ("patch", "nodes", ""),
    ]
    for verb, resource, group in denied:
        assert not _can(kube_cluster, user, verb, resource, namespace, group), (verb, resource)
    assert not _can(
        kube_cluster, user, "create", "customresourcedefinitions", "", "apiextensions.k8s.io"
    )
    if scope == "one-namespace":
        assert not _can(kube_cluster, user, "create", "jobs", "default", "batch")


def test_kserve_rbac_lets_the_workload_manage_inference_services_only(
    kube_cluster: KubeCluster, helm: Helm, namespace: str, eventually: Any
) -> None:
    release = f"k{namespace[-6:]}"
    assert not [d for d in _render(helm) if d["metadata"]["name"].endswith("-kserve-deployer")], (
        "off by default"
    )
    docs = _render(
        helm,
        "--set",
        f"watchNamespace={namespace}",
        "--set",
        "workload.kserve.rbac=true",
        namespace=namespace,
        release=release,
    )
    deployer = [d for d in docs if d["metadata"]["name"] == f"{release}-stockops-kserve-deployer"]
    assert sorted(d["kind"] for d in deployer) == ["ClusterRole", "RoleBinding"]
    kube_cluster.apply(deployer, namespace=namespace)
    user = f"system:serviceaccount:{namespace}:stockops-workload"
    group = "serving.kserve.io"
    eventually(
        lambda: _can(kube_cluster, user, "patch", "inferenceservices", namespace, group),
        what="the kserve-deployer binding in effect",
    )
    for verb in ("get", "create"):
        assert _can(kube_cluster, user, verb, "inferenceservices", namespace, group), verb
    for verb in ("delete", "list", "update"):
        assert not _can(kube_cluster, user, verb, "inferenceservices", namespace, group), verb
    assert not _can(kube_cluster, user, "create", "inferenceservices", "default", group)
    assert not _can(kube_cluster, user, "get", "secrets", namespace, "")
    assert not _can(kube_cluster, user, "create", "stockmodels", namespace, "stockops.io")


def test_helm_install_creates_everything_on_a_real_server(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    release = f"i{namespace[-6:]}"
    kube_cluster.helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"watchNamespace={namespace}",
        "--set",
        "rbac.aggregateToDefaultRoles=false",
    )
    api = kube_cluster.api_client()
    deployment: Any = client.AppsV1Api(api).read_namespaced_deployment(
        f"{release}-stockops", namespace
    )
    assert deployment.spec.template.spec.service_account_name == f"{release}-stockops"
    extensions = client.ApiextensionsV1Api(api)
    for name in (
        "stockmodels.stockops.io",
        "retrainschedules.stockops.io",
        "kopfpeerings.kopf.dev",
    ):
        crd: Any = extensions.read_custom_resource_definition(name)
        assert crd.metadata.name == name
    peering: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", "stockops"
    )
    assert peering["metadata"]["name"] == "stockops"
    kube_cluster.helm("uninstall", release, "--namespace", namespace)
    # Helm never deletes the CRDs of crds/, so uninstalling keeps every StockModel.
    assert extensions.read_custom_resource_definition("stockmodels.stockops.io")
