"""The test control plane is a real Kubernetes: authentication, RBAC, CRDs, GC and helm work.

These tests guard the harness every operator e2e test stands on: if RBAC were off, a
least-privilege test of the chart's Role would pass for the wrong reason; if the garbage
collector were not running, "deleting a StockModel removes everything it owns" could not fail.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from stockops_model.testing.gotools import KUBERNETES_VERSION
from stockops_model.testing.kube import KubeCluster

pytestmark = pytest.mark.kube


def _core(cluster: KubeCluster, kubeconfig: Path | None = None) -> Any:
    return client.CoreV1Api(cluster.api_client(kubeconfig))


def _config_map(name: str, data: dict[str, str], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **metadata},
        "data": data,
    }


def test_server_reports_the_pinned_kubernetes_release(kube_cluster: KubeCluster) -> None:
    version = client.VersionApi(kube_cluster.api_client()).get_code()

    assert version.git_version == KUBERNETES_VERSION


def test_admin_creates_a_config_map_in_a_new_namespace(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.apply(_config_map("settings", {"tickers": "AAPL,MSFT"}), namespace=namespace)

    stored = _core(kube_cluster).read_namespaced_config_map("settings", namespace)

    assert stored.data == {"tickers": "AAPL,MSFT"}
    assert stored.metadata.uid


def test_service_account_token_authenticates_as_that_service_account(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kubeconfig = kube_cluster.kubeconfig_for_service_account(namespace, "operator")
    api = client.AuthenticationV1Api(kube_cluster.api_client(kubeconfig))

    review: Any = api.create_self_subject_review(client.V1SelfSubjectReview())

    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:operator"


def test_service_account_without_rbac_is_forbidden(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kubeconfig = kube_cluster.kubeconfig_for_service_account(namespace, "nobody")

    with pytest.raises(ApiException) as refused:
        _core(kube_cluster, kubeconfig).list_namespaced_config_map(namespace)

    assert refused.value.status == 403


def _allowed(cluster: KubeCluster, user: str, verb: str, resource: str, namespace: str) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=resource, namespace=namespace
            ),
        )
    )
    answer = client.AuthorizationV1Api(cluster.api_client()).create_subject_access_review(review)
    return answer.status is not None and bool(answer.status.allowed)


def test_role_binding_grants_exactly_the_verbs_of_its_role(
    kube_cluster: KubeCluster, namespace: str, eventually: Any
) -> None:
    kubeconfig = kube_cluster.kubeconfig_for_service_account(namespace, "reader")
    kube_cluster.apply(
        textwrap.dedent(
            f"""
            apiVersion: rbac.authorization.k8s.io/v1
            kind: Role
            metadata: {{name: config-reader, namespace: {namespace}}}
            rules:
              - apiGroups: [""]
                resources: [configmaps]
                verbs: [get, list]
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: RoleBinding
            metadata: {{name: config-reader, namespace: {namespace}}}
            roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-reader}}
            subjects:
              - {{kind: ServiceAccount, name: reader, namespace: {namespace}}}
            """
        )
    )
    kube_cluster.apply(_config_map("visible", {"k": "v"}), namespace=namespace)
    reader = _core(kube_cluster, kubeconfig)
    # The authorizer reads roles and bindings from an informer cache, a moment behind the
    # writes: wait until the binding is in effect, so the refused create below is a real "no".
    eventually(
        lambda: _allowed(
            kube_cluster,
            f"system:serviceaccount:{namespace}:reader",
            "list",
            "configmaps",
            namespace,
        ),
        what="the RoleBinding in effect",
    )

    names = [item.metadata.name for item in reader.list_namespaced_config_map(namespace).items]
    with pytest.raises(ApiException) as refused:
        reader.create_namespaced_config_map(namespace, _config_map("written", {"k": "v"}))

    assert "visible" in names
    assert refused.value.status == 403


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.stockops.io}
spec:
  group: e2e.stockops.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
"""


def test_crd_becomes_established_and_validates_its_resources(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    applied = kube_cluster.apply(
        [
            *yaml.safe_load_all(CRD),
            {
                "apiVersion": "e2e.stockops.io/v1",
                "kind": "Widget",
                "metadata": {"name": "small", "namespace": namespace},
                "spec": {"size": 3},
            },
        ]
    )
    conditions = {c["type"]: c["status"] for c in applied[0]["status"]["conditions"]}
    custom: Any = client.CustomObjectsApi(kube_cluster.api_client())
    with pytest.raises(ApiException) as invalid:
        kube_cluster.apply(
            {
                "apiVersion": "e2e.stockops.io/v1",
                "kind": "Widget",
                "metadata": {"name": "empty", "namespace": namespace},
                "spec": {"size": 0},
            }
        )

    stored = custom.get_namespaced_custom_object(
        "e2e.stockops.io", "v1", namespace, "widgets", "small"
    )
    assert conditions.get("Established") == "True"
    assert stored["spec"] == {"size": 3}
    assert invalid.value.status == 422
    assert "spec.size" in str(invalid.value.body)


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(
    kube_cluster: KubeCluster, namespace: str, eventually: Any
) -> None:
    core = _core(kube_cluster)
    owner = kube_cluster.apply(_config_map("owner", {"role": "owner"}), namespace=namespace)[0]
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    kube_cluster.apply(
        [
            _config_map("dependent", {"role": "dependent"}, ownerReferences=[reference]),
            _config_map("bystander", {"role": "bystander"}),
        ],
        namespace=namespace,
    )

    core.delete_namespaced_config_map(
        "owner", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    eventually(dependent_gone, what="garbage collection of the dependent ConfigMap")
    remaining = [item.metadata.name for item in core.list_namespaced_config_map(namespace).items]
    assert "bystander" in remaining
    assert "owner" not in remaining


def test_helm_installs_a_release_into_the_cluster(
    kube_cluster: KubeCluster, namespace: str, tiny_chart: Path
) -> None:
    kube_cluster.helm("install", "rel", str(tiny_chart), "--namespace", namespace)

    stored = _core(kube_cluster).read_namespaced_config_map("rel-settings", namespace)
    assert stored.data == {"greeting": "hello", "replicas": "2"}
    assert stored.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
