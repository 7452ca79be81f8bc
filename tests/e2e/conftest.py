"""Fixtures for end-to-end tests against a real kube-apiserver, etcd and garbage collector.

`kube_cluster` builds the binaries on first use (minutes on a fresh machine; `make services`
does it ahead of pytest) and starts one control plane for the whole session. Each test that
needs isolation takes `namespace`, a fresh namespace created as admin. `helm` and `tofu` run
the built tools without a cluster (lint, template, fmt); `tiny_chart` is a one-template chart.
`eventually` polls a condition with a deadline, for what controllers do asynchronously (the
garbage collector, the RBAC authorizer's cache, the operator, kopf's Event queue). Its default
deadline is generous: CI runs the API server, etcd, the operator and the data services on the
same two cores, and a deadline only costs time when a test is failing anyway.
"""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from stockops_model.testing.cache import cache_dir
from stockops_model.testing.gotools import run_helm, run_tofu
from stockops_model.testing.kube import KubeCluster, install


class Eventually(Protocol):
    """Poll `condition` until it returns a truthy value, which is returned.

    `what` names the condition in the failure message; a callable is asked at that moment
    (to say what is still missing).
    """

    def __call__(
        self,
        condition: Callable[[], Any],
        timeout: float = ...,
        what: str | Callable[[], str] = ...,
    ) -> Any: ...


@pytest.fixture(scope="session")
def kube_cache() -> Path:
    """The cache folder with kube-apiserver, kube-controller-manager and helm, built if needed."""
    folder = cache_dir()
    install(folder)
    return folder


@pytest.fixture(scope="session")
def kube_cluster(
    kube_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """One real control plane for the session: etcd, kube-apiserver (RBAC), garbage collector."""
    cluster = KubeCluster(kube_cache, work_dir=tmp_path_factory.mktemp("kube"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> str:
    """A new namespace for one test, created as admin (never deleted: no namespace controller)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture(scope="session")
def helm(kube_cache: Path) -> Callable[..., str]:
    """Run the built helm with the given arguments and return its stdout (raises on failure)."""

    def run(*args: str | Path) -> str:
        return run_helm(*(str(a) for a in args), cache=kube_cache).stdout

    return run


@pytest.fixture(scope="session")
def tofu(kube_cache: Path) -> Callable[..., str]:
    """Run the built OpenTofu with the given arguments and return its stdout (raises on failure).

    Pass `cwd=` as a keyword to run it in a folder.
    """

    def run(*args: str | Path, cwd: Path | None = None) -> str:
        return run_tofu(*(str(a) for a in args), cache=kube_cache, cwd=cwd).stdout

    return run


@pytest.fixture
def tiny_chart(tmp_path: Path) -> Path:
    """A one-template chart (a ConfigMap named after the release) written to `tmp_path`."""
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\ndescription: a chart made by a test\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\nreplicas: 2\n")
    (chart / "templates" / "configmap.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: {{ .Release.Name }}-settings
              labels:
                app.kubernetes.io/managed-by: {{ .Release.Service }}
            data:
              greeting: {{ .Values.greeting | quote }}
              replicas: {{ .Values.replicas | quote }}
            """
        )
    )
    return chart


@pytest.fixture
def eventually() -> Eventually:
    """Poll a condition every 0.2 s until it holds or `timeout` s pass (then the test fails)."""

    def poll(
        condition: Callable[[], Any],
        timeout: float = 120.0,
        what: str | Callable[[], str] = "condition",
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                name = what() if callable(what) else what
                pytest.fail(f"{name} did not hold within {timeout:.0f} s")
            time.sleep(0.2)

    return poll
