"""The operator against a real kube-apiserver, with the chart's RBAC and a fake kubelet.

Each test gets a fresh namespace with the chart's ServiceAccount, Role and RoleBinding
(rendered by the real helm with `watchNamespace` set to it), starts the operator as a real
process (`python -m stockops_operator`, as the chart's Deployment does) with a ServiceAccount
token, so least privilege is exercised, and runs `FakeKubelet` as the Job and Deployment
controllers.

Scheduling tests hold each train Job's container (`hold_jobs`) so a run lasts exactly as
long as the test wants: they are about Forbid, Replace, restarts, suspend, run-now and
history limits, and they train nothing. Every test ends by checking that the operator never
met a 403 (its RBAC was enough) and that the fake kubelet had no write refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stockops_model.testing.gotools import KUBERNETES_VERSION
from stockops_model.testing.kube import KubeCluster
from stockops_model.testing.ports import pick_free_port
from stockops_model.testing.scoring import ScoringServer, scoring_server

pytestmark = [pytest.mark.kube, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stockops"
GROUP_PATH = "/apis/stockops.io/v1alpha1/namespaces"


def _load_kubelet() -> Any:
    # tests/ is not a package (pytest's importlib mode): load the sibling module by path.
    spec = importlib.util.spec_from_file_location(
        "stockops_e2e_kubelet", Path(__file__).with_name("kubelet.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kubelet_module = _load_kubelet()
FakeKubelet = kubelet_module.FakeKubelet
KubeClient = kubelet_module.KubeClient


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def crds(kube_cluster: KubeCluster) -> None:
    """The stockops CRDs and kopf's peering CRDs, installed once."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        kube_cluster.apply(path.read_text())


@pytest.fixture(scope="session")
def admin(kube_cluster: KubeCluster) -> Iterator[Any]:
    client = KubeClient(kube_cluster.admin_kubeconfig())
    yield client
    client.close()


def bound_rules(
    docs: list[dict[str, Any]], namespace: str, account: str
) -> list[tuple[str, str, str, str | None]]:
    """One (verb, group, resource, namespace) per rule of each role bound to `account`."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Role")}
    rules: list[tuple[str, str, str, str | None]] = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == account
            and s.get("namespace", namespace) == namespace
            for s in binding.get("subjects") or []
        ):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", namespace)
        for rule in roles[(ref["kind"], ref["name"])].get("rules") or []:
            rules.append(
                (
                    rule["verbs"][0],
                    rule["apiGroups"][0],
                    rule["resources"][0],
                    scope if binding["kind"] == "RoleBinding" else None,
                )
            )
    return rules


def allowed(admin: Any, user: str, verb: str, group: str, resource: str, ns: str | None) -> bool:
    """What the API server's authorizer answers now (a SubjectAccessReview)."""
    resource, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": resource}
    if subresource:
        attributes["subresource"] = subresource
    if ns is not None:
        attributes["namespace"] = ns
    account_ns = user.split(":")[2]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{account_ns}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    answer = admin.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool((answer.get("status") or {}).get("allowed"))


@pytest.fixture
def operator_kubeconfig(
    kube_cluster: KubeCluster,
    namespace: str,
    helm: Callable[..., str],
    crds: None,
    admin: Any,
    eventually: Any,
) -> Path:
    """A kubeconfig of the chart's operator ServiceAccount, with only the chart's RBAC."""
    rendered = helm(
        "template",
        f"op-{namespace}",
        CHART,
        "--namespace",
        namespace,
        "--set",
        f"watchNamespace={namespace}",
        "--kube-version",
        KUBERNETES_VERSION,  # render for the server under test
    )
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    # The operator itself runs as a test process, and nothing here would serve a Service.
    wanted = [d for d in docs if d["kind"] not in ("Deployment", "Service")]
    kube_cluster.apply(wanted, namespace=namespace)
    operator_sa = next(
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] != "stockops-workload"
    )
    # The RBAC authorizer reads roles and bindings from an informer cache, a moment behind the
    # writes: an operator started at once could meet a 403 that the teardown then reports.
    user = f"system:serviceaccount:{namespace}:{operator_sa}"
    rules = bound_rules(wanted, namespace, operator_sa)
    assert rules
    eventually(
        lambda: all(allowed(admin, user, *rule) for rule in rules),
        what=lambda: (
            "the chart's roles and bindings in effect for the operator (refused: "
            f"{[rule for rule in rules if not allowed(admin, user, *rule)]})"
        ),
    )
    return kube_cluster.kubeconfig_for_service_account(namespace, operator_sa)


class Operator:
    """`python -m stockops_operator` as a child process; can be killed and started again."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "STOCKOPS_NAMESPACE": namespace,
            "STOCKOPS_PEERING_NAME": "stockops",
            "STOCKOPS_SCHEDULE_TICK_SECONDS": "1",
            "STOCKOPS_MODEL_POLL_SECONDS": "2",
            "STOCKOPS_METRICS_PORT": "0",
            "STOCKOPS_LIVENESS_PORT": str(pick_free_port()),
            "STOCKOPS_LOG_JSON": "true",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stockops_operator"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no chance to tidy up, as when a node dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def operator(operator_kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(operator_kubeconfig, namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    text = op.log()
    assert "HTTP 403" not in text, text[-4000:]
    assert "forbidden" not in text.lower(), text[-4000:]


@pytest.fixture
def kubelet(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Any]:
    fake = FakeKubelet(
        kubeconfig=kube_cluster.admin_kubeconfig(),
        namespace=namespace,
        work_dir=tmp_path / "pods",
        hold_jobs=True,
        run_deployments=False,
    )
    with fake:
        yield fake
    assert fake.errors == []
    assert fake.jobs_before_configmaps == []


# --------------------------------------------------------------------------- helpers


def stockmodel(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "stockops.io/v1alpha1",
        "kind": "StockModel",
        "metadata": {"name": name},
        "spec": {
            "tickers": ["AAPL", "MSFT"],
            "source": {"type": "replay", "replay": {"path": str(ROOT / "tests" / "data")}},
            "storage": {"path": "bars"},
            "mlflow": {"trackingUri": "http://127.0.0.1:9", "modelName": f"{name}-forecaster"},
        },
    }


def schedule(name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stockops.io/v1alpha1",
        "kind": "RetrainSchedule",
        "metadata": {"name": name},
        "spec": {"modelRef": {"name": model}, **spec},
    }


def jobs(admin: Any, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    params = {"labelSelector": selector} if selector else None
    items = admin.call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", params=params)["items"]
    return [j for j in items if not j["metadata"].get("deletionTimestamp")]


def job_names(admin: Any, namespace: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in jobs(admin, namespace))


def jobs_counted(admin: Any, namespace: str, count: int) -> list[str] | None:
    """The Job names once there are exactly `count` of them, else None (keep polling)."""
    names = job_names(admin, namespace)
    return names if len(names) == count else None


def get(admin: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    obj = admin.call("GET", f"{GROUP_PATH}/{namespace}/{plural}/{name}")
    assert obj is not None
    return dict(obj)


def patch(admin: Any, namespace: str, plural: str, name: str, body: dict[str, Any]) -> None:
    admin.call(
        "PATCH", f"{GROUP_PATH}/{namespace}/{plural}/{name}", body, "application/merge-patch+json"
    )


def wait_for_next_instants(
    admin: Any, namespace: str, name: str, count: int, eventually: Any, timeout: float = 120
) -> None:
    """Wait until the schedule's nextScheduleTime has moved `count` times (runs came due)."""
    seen: list[str] = []

    def moved() -> bool:
        status = get(admin, namespace, "retrainschedules", name).get("status") or {}
        nxt = status.get("nextScheduleTime")
        if nxt and (not seen or seen[-1] != nxt):
            seen.append(nxt)
        return len(seen) > count

    eventually(moved, timeout=timeout, what=f"{count} scheduled instants passing")


def events(admin: Any, namespace: str, name: str) -> list[str]:
    items = admin.call("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e["reason"] for e in items if e["involvedObject"]["name"] == name]


# --------------------------------------------------------------------------- scenarios


def test_forbid_keeps_one_run_and_starts_the_owed_one_after(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    kube_cluster.apply(
        [
            stockmodel("demo"),
            schedule("every3s", "demo", interval="3s", concurrencyPolicy="Forbid"),
        ],
        namespace=namespace,
    )
    (first,) = eventually(lambda: job_names(admin, namespace), what="the first train Job")
    eventually(lambda: kubelet.running_jobs() == [first], what="the first run running")

    wait_for_next_instants(admin, namespace, "every3s", 3, eventually)

    assert job_names(admin, namespace) == [first]
    status = get(admin, namespace, "retrainschedules", "every3s")["status"]
    assert [a["name"] for a in status["active"]] == [first]
    # kopf posts Events from a background queue, so they may trail the Jobs.
    eventually(lambda: "RunBlocked" in events(admin, namespace, "every3s"), what="RunBlocked")

    kubelet.release(first, exit_code=0)
    names = eventually(lambda: jobs_counted(admin, namespace, 2), what="the owed run")
    assert first in names
    status = eventually(
        lambda: (
            (s := get(admin, namespace, "retrainschedules", "every3s")["status"]).get("lastRun")
            and s
        ),
        what="the first run recorded",
    )
    assert status["lastRun"]["jobName"] == first
    assert status["lastRun"]["outcome"] == "Succeeded"
    assert status["lastSuccessfulTime"]


def test_replace_deletes_the_active_run(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    # The first run is a run-now request on a suspended schedule, so it is replaced only when
    # the test resumes the schedule, after its Pod exists. (With 3 s between instants, a run
    # could be replaced before a loaded kubelet made the Pod the GC is meant to remove.)
    manifest = schedule("every3s", "demo", interval="3s", concurrencyPolicy="Replace", suspend=True)
    manifest["metadata"]["annotations"] = {"stockops.io/run-now": "first"}
    kube_cluster.apply([stockmodel("demo"), manifest], namespace=namespace)
    (first,) = eventually(lambda: job_names(admin, namespace), what="the run-now Job")
    pods = f"/api/v1/namespaces/{namespace}/pods"
    eventually(
        lambda: admin.call("GET", pods, params={"labelSelector": f"job-name={first}"})["items"],
        what="its Pod",
    )

    patch(admin, namespace, "retrainschedules", "every3s", {"spec": {"suspend": False}})
    second = eventually(
        lambda: next((j for j in jobs(admin, namespace) if j["metadata"]["name"] != first), None),
        what="a scheduled run",
    )

    assert first not in job_names(admin, namespace)
    # The garbage collector removes the replaced run's Pod with its Job.
    eventually(
        lambda: not admin.call("GET", pods, params={"labelSelector": f"job-name={first}"})["items"],
        what="the replaced run's Pod deleted by the garbage collector",
    )
    # kopf posts Events from a background queue, so they may trail the Jobs.
    eventually(lambda: "RunReplaced" in events(admin, namespace, "every3s"), what="RunReplaced")

    # The next instant replaces the scheduled run in turn; no sample may see two runs at once.
    def replaced_again() -> dict[str, Any] | None:
        current = jobs(admin, namespace)
        assert len(current) <= 1, [j["metadata"]["name"] for j in current]
        names = {first, second["metadata"]["name"]}
        return current[0] if current and current[0]["metadata"]["name"] not in names else None

    third = eventually(replaced_again, what="the scheduled run replaced by the next one")
    at = "stockops.io/scheduled-time"
    assert third["metadata"]["annotations"][at] > second["metadata"]["annotations"][at]


def test_operator_killed_mid_run_and_restarted_duplicates_nothing(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    kube_cluster.apply(
        [
            stockmodel("demo"),
            schedule("every3s", "demo", interval="3s", concurrencyPolicy="Forbid"),
        ],
        namespace=namespace,
    )
    (first,) = eventually(lambda: job_names(admin, namespace), what="the first train Job")
    eventually(lambda: kubelet.running_jobs() == [first], what="the first run running")

    operator.kill()
    # While the operator is down, several scheduled instants pass (the run is still active).
    before = get(admin, namespace, "retrainschedules", "every3s")["status"]["nextScheduleTime"]
    eventually(lambda: time.time() > _epoch(before) + 7, timeout=60, what="two instants while down")
    operator.start()
    # The new replica draws a new random priority: if it is below the killed one's, kopf
    # keeps it paused until that peering record expires (60 s after its last keepalive).
    wait_for_next_instants(admin, namespace, "every3s", 1, eventually, timeout=240)

    assert job_names(admin, namespace) == [first]
    status = get(admin, namespace, "retrainschedules", "every3s")["status"]
    assert [a["name"] for a in status["active"]] == [first]

    kubelet.release(first, exit_code=0)
    later = eventually(lambda: jobs_counted(admin, namespace, 2), what="the next run")
    wait_for_next_instants(admin, namespace, "every3s", 1, eventually)
    # Exactly one run was started for all the instants missed: no storm, no duplicate.
    assert len(job_names(admin, namespace)) == 2
    (second,) = [n for n in later if n != first]
    scheduled = [
        j["metadata"]["annotations"]["stockops.io/scheduled-time"]
        for j in jobs(admin, namespace)
        if j["metadata"]["name"] == second
    ]
    assert scheduled
    assert scheduled[0] > before


def test_suspend_stops_scheduled_runs_and_resume_restarts_them(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    kube_cluster.apply(
        [
            stockmodel("demo"),
            schedule("every3s", "demo", interval="3s", suspend=True, startingDeadlineSeconds=5),
        ],
        namespace=namespace,
    )
    status = eventually(
        lambda: (get(admin, namespace, "retrainschedules", "every3s").get("status") or {}).get(
            "observedGeneration"
        ),
        what="the schedule reconciled",
    )
    assert status
    # Suspended: instants pass, nothing starts, and no next run is announced.
    created = get(admin, namespace, "retrainschedules", "every3s")["metadata"]["creationTimestamp"]
    eventually(
        lambda: time.time() > _epoch(created) + 8, timeout=60, what="two instants while suspended"
    )
    assert job_names(admin, namespace) == []
    assert "nextScheduleTime" not in get(admin, namespace, "retrainschedules", "every3s")["status"]

    patch(admin, namespace, "retrainschedules", "every3s", {"spec": {"suspend": False}})
    eventually(lambda: job_names(admin, namespace), what="a run after resume")
    annotations = jobs(admin, namespace)[0]["metadata"]["annotations"]
    assert annotations["stockops.io/scheduled-time"] > created


def test_run_now_annotation_starts_exactly_one_run_per_value(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    kube_cluster.apply(
        [
            stockmodel("demo"),
            schedule(
                "nightly",
                "demo",
                schedule="0 3 * * *",
                timeZone="America/New_York",
                concurrencyPolicy="Allow",
            ),
        ],
        namespace=namespace,
    )
    eventually(
        lambda: (get(admin, namespace, "retrainschedules", "nightly").get("status") or {}).get(
            "nextScheduleTime"
        ),
        what="the schedule reconciled",
    )
    patch(
        admin,
        namespace,
        "retrainschedules",
        "nightly",
        {"metadata": {"annotations": {"stockops.io/run-now": "first"}}},
    )
    (first,) = eventually(lambda: job_names(admin, namespace), what="the run-now Job")
    eventually(lambda: first in kubelet.running_jobs(), what="the run-now Job running")
    eventually(
        lambda: (
            get(admin, namespace, "retrainschedules", "nightly")["metadata"]["annotations"].get(
                "stockops.io/run-now-handled"
            )
            == "first"
        ),
        what="the request marked handled",
    )
    kubelet.release(first)
    eventually(
        lambda: (get(admin, namespace, "retrainschedules", "nightly").get("status") or {}).get(
            "lastRun"
        ),
        what="the run recorded",
    )
    assert job_names(admin, namespace) == [first]

    patch(
        admin,
        namespace,
        "retrainschedules",
        "nightly",
        {"metadata": {"annotations": {"stockops.io/run-now": "second"}}},
    )
    names = eventually(
        lambda: jobs_counted(admin, namespace, 2),
        what="a second run-now Job",
    )
    assert first in names
    job = next(j for j in jobs(admin, namespace) if j["metadata"]["name"] != first)
    assert job["metadata"]["labels"]["stockops.io/trigger"] == "manual"


def test_history_limits_delete_old_runs(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    kube_cluster.apply(
        [
            stockmodel("demo"),
            schedule(
                "every3s",
                "demo",
                interval="3s",
                successfulRunsHistoryLimit=1,
                failedRunsHistoryLimit=1,
                backoffLimit=0,  # one Pod per run: a failed run is finished at once
            ),
        ],
        namespace=namespace,
    )
    finished: list[str] = []
    for code in (0, 0, 1, 1):
        name = eventually(
            lambda: next((n for n in kubelet.running_jobs() if n not in finished), None),
            what="the next run",
        )
        kubelet.release(name, exit_code=code)
        finished.append(name)
    eventually(
        lambda: (
            set(finished).intersection(job_names(admin, namespace)) == {finished[1], finished[3]}
        ),
        what="only the newest success and the newest failure kept",
    )
    # finished[2] is pruned only once finished[3] ended, and only after the status write that
    # records it: with the old runs gone, lastRun already names the newest one.
    last = get(admin, namespace, "retrainschedules", "every3s")["status"]["lastRun"]
    assert last["jobName"] == finished[3]
    assert last["outcome"] == "Failed"


def test_stockmodel_owns_its_workloads_and_deleting_it_removes_them(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    kube_cluster.apply(stockmodel("demo"), namespace=namespace)
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    selector = {"labelSelector": "stockops.io/model=demo"}
    eventually(
        lambda: len(admin.call("GET", deployments, params=selector)["items"]) == 2,
        what="feed and sink",
    )
    cm = admin.call("GET", f"{configmaps}/demo-spec")
    manifest = json.loads(cm["data"]["stockmodel.json"])
    assert manifest["spec"]["tickers"] == ["AAPL", "MSFT"]
    status = eventually(
        lambda: (
            (s := get(admin, namespace, "stockmodels", "demo").get("status"))
            and s.get("conditions")
            and s
        ),
        what="StockModel conditions",
    )
    types = {c["type"]: c for c in status["conditions"]}
    assert set(types) == {"Ready", "Ingesting", "ModelAvailable", "Deployed"}
    assert all(c["observedGeneration"] == 1 for c in types.values())
    # MLflow is not reachable at that URI: said so, not crashed.
    assert types["ModelAvailable"]["status"] == "Unknown"
    assert types["Ready"]["status"] == "False"

    admin.call(
        "DELETE", f"{GROUP_PATH}/{namespace}/stockmodels/demo", {"propagationPolicy": "Background"}
    )
    eventually(
        lambda: not admin.call("GET", deployments, params=selector)["items"],
        what="Deployments collected",
    )
    eventually(
        lambda: admin.call("GET", f"{configmaps}/demo-spec") is None,
        what="spec ConfigMap collected",
    )


def test_invalid_spec_that_passes_the_schema_is_reported_in_status(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    # A cron expression the CRD's pattern accepts but no cron parser does.
    kube_cluster.apply(
        [stockmodel("demo"), schedule("bad", "demo", schedule="61 * * * *")], namespace=namespace
    )
    status = eventually(
        lambda: (
            (s := get(admin, namespace, "retrainschedules", "bad").get("status"))
            and s.get("conditions")
            and s
        ),
        what="the InvalidSpec condition",
    )
    (ready,) = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.schedule" in ready["message"]
    eventually(lambda: "InvalidSpec" in events(admin, namespace, "bad"), what="an Event")
    assert job_names(admin, namespace) == []


def test_a_run_waits_for_an_invalid_stockmodel_and_starts_once_it_is_fixed(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kubelet: Any,
    eventually: Any,
) -> None:
    # 1.00000000000000001 is 1.0 as the CEL rule's double, above 1 as the spec's decimal.
    model = stockmodel("demo")
    model["spec"]["training"] = {"learningRate": "1.00000000000000001"}
    manifest = schedule("nightly", "demo", schedule="0 3 * * *")
    manifest["metadata"]["annotations"] = {"stockops.io/run-now": "try-it"}
    kube_cluster.apply([model, manifest], namespace=namespace)

    def ready() -> dict[str, Any] | None:
        status = get(admin, namespace, "retrainschedules", "nightly").get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)

    held = eventually(
        lambda: (c := ready()) and c["reason"] == "ModelInvalid" and c,
        what="Ready=False, ModelInvalid",
    )
    assert held["status"] == "False"
    assert "learningRate" in held["message"]
    assert "the run-now request 'try-it'" in held["message"]
    # The status write comes after the decision: had a Job been created, it would exist now.
    assert job_names(admin, namespace) == []
    eventually(lambda: "ModelInvalid" in events(admin, namespace, "nightly"), what="an Event")
    annotations = get(admin, namespace, "retrainschedules", "nightly")["metadata"]["annotations"]
    assert "stockops.io/run-now-handled" not in annotations  # still pending

    patch(admin, namespace, "stockmodels", "demo", {"spec": {"training": {"learningRate": "0.5"}}})
    (name,) = eventually(lambda: jobs_counted(admin, namespace, 1), what="the held run started")
    assert name.startswith("nightly-now-")
    eventually(lambda: (c := ready()) and c["status"] == "True", what="Ready=True again")
    assert events(admin, namespace, "nightly").count("ModelInvalid") == 1


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def running_kubelet(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Any]:
    """A fake kubelet that runs each Job's real command (here: `stockops train`)."""
    fake = FakeKubelet(
        kubeconfig=kube_cluster.admin_kubeconfig(),
        namespace=namespace,
        work_dir=tmp_path / "pods",
        run_deployments=False,
    )
    with fake:
        yield fake
    assert fake.errors == []
    assert fake.jobs_before_configmaps == []


def test_a_train_run_without_data_fails_at_once_and_says_why(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    running_kubelet: Any,
    eventually: Any,
) -> None:
    # The real `stockops train` runs on the mounted spec; its store (a local folder in the
    # Pod) has no bars, so it exits 4 (invalid data). The Job's podFailurePolicy fails the
    # Job at once instead of spending its three retries.
    manifest = schedule("nightly", "demo", schedule="0 3 * * *", backoffLimit=3)
    manifest["metadata"]["annotations"] = {"stockops.io/run-now": "try-it"}
    kube_cluster.apply([stockmodel("demo"), manifest], namespace=namespace)

    status = eventually(
        lambda: (
            (get(admin, namespace, "retrainschedules", "nightly").get("status") or {}).get(
                "lastRun"
            )
            and get(admin, namespace, "retrainschedules", "nightly")["status"]
        ),
        timeout=180,
        what="the run recorded",
    )

    last = status["lastRun"]
    assert last["outcome"] == "Failed"
    assert "PodFailurePolicy" in last["reason"]
    assert "exit code 4" in last["reason"]
    assert "decision" not in last
    (job,) = jobs(admin, namespace)
    # Applied together, the StockModel's spec ConfigMap came first: the run waited for it.
    configmap = admin.call("GET", f"/api/v1/namespaces/{namespace}/configmaps/demo-spec")
    assert _epoch(job["metadata"]["creationTimestamp"]) >= _epoch(
        configmap["metadata"]["creationTimestamp"]
    )
    pods = admin.call(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods",
        params={"labelSelector": f"job-name={job['metadata']['name']}"},
    )["items"]
    assert len(pods) == 1  # no retry of a run that cannot succeed
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 4
    # FallbackToLogsOnError: the message is the tail of the log, which names the problem.
    assert "no bars for AAPL, MSFT" in terminated["message"]
    eventually(lambda: "RunFailed" in events(admin, namespace, "nightly"), what="an Event")


def test_feed_and_sink_run_from_the_stockmodel_and_land_bars(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kafka: Any,
    tmp_path: Path,
    eventually: Any,
) -> None:
    # The real `stockops feed` (replaying recorded bars) and `stockops sink` run as the
    # StockModel's Deployments, against the real broker; the sink lands Parquet day objects
    # in its storage path (`bars`, relative to its Pod folder) under the prefix `bars`.
    model = stockmodel("demo")
    model["spec"]["tickers"] = ["AMZN", "AXP"]
    model["spec"]["source"] = {
        "type": "replay",
        "topic": f"bars.{namespace}",
        "kafka": {"bootstrapServers": kafka.bootstrap},
        "replay": {"path": str(ROOT / "tests" / "data" / "bars-2018-1min"), "speed": 600},
    }
    fake = FakeKubelet(
        kubeconfig=kube_cluster.admin_kubeconfig(),
        namespace=namespace,
        work_dir=tmp_path / "pods",
    )
    with fake:
        kube_cluster.apply(model, namespace=namespace)
        eventually(
            lambda: any(
                c["type"] == "Ingesting" and c["status"] == "True"
                for c in (get(admin, namespace, "stockmodels", "demo").get("status") or {}).get(
                    "conditions", []
                )
            ),
            timeout=120,
            what="Ingesting=True",
        )
        landed = eventually(
            lambda: sorted((tmp_path / "pods").glob("*/bars/bars/AMZN/2018/*/*.parquet")),
            timeout=180,
            what="AMZN day objects written by the sink",
        )
        assert landed[0].stat().st_size > 0

        admin.call(
            "DELETE",
            f"{GROUP_PATH}/{namespace}/stockmodels/demo",
            {"propagationPolicy": "Background"},
        )
        # The garbage collector deletes the Deployments; their processes stop with them.
        eventually(lambda: not fake.deployments, timeout=120, what="feed and sink stopped")
    assert fake.errors == []


@pytest.fixture
def local_server(namespace: str, mlflow_server: Any, tmp_path: Path) -> Iterator[ScoringServer]:
    """`stockops serve` following the `serving` alias of `fc-<namespace>`, as the local
    target expects it (started before any model exists: it polls until one is deployed)."""
    with scoring_server(
        f"models:/fc-{namespace}@serving",
        mlflow_server.tracking_uri,
        tmp_path / "serve",
        store_url=(tmp_path / "store").as_uri(),
        poll_seconds=5,
    ) as server:
        yield server


@pytest.mark.mlflow
def test_the_whole_loop_from_replayed_bars_to_a_served_forecast(
    kube_cluster: KubeCluster,
    namespace: str,
    admin: Any,
    operator: Operator,
    kafka: Any,
    mlflow_server: Any,
    tmp_path: Path,
    eventually: Any,
    local_server: ScoringServer,
) -> None:
    # feed -> Kafka -> sink -> store, then a real `stockops train` run started by hand: the
    # naive forecast is registered as the first champion, a challenger is trained and
    # gated, and the decision with its metrics beside the naive forecast's lands in status.
    # The production version then differs from the serving one, so a deploy Job rolls it out
    # to the local scoring server; status and Events tell the story, and the endpoint answers.
    store = tmp_path / "store"
    model_name = f"fc-{namespace}"
    port = local_server.port
    model = stockmodel("demo")
    model["spec"].update(
        tickers=["AMZN", "AXP"],
        source={
            "type": "replay",
            "topic": f"bars.{namespace}",
            "kafka": {"bootstrapServers": kafka.bootstrap},
            "replay": {"path": str(ROOT / "tests" / "data" / "bars-2018-1min"), "speed": 0},
        },
        storage={"path": str(store)},
        training={"epochs": 2, "batchSize": 256},
        mlflow={"trackingUri": mlflow_server.tracking_uri, "modelName": model_name},
        serving={
            "target": "local",
            "local": {"port": port},
            "rollout": {"readinessTimeoutSeconds": 300},
        },
    )
    fake = FakeKubelet(
        kubeconfig=kube_cluster.admin_kubeconfig(), namespace=namespace, work_dir=tmp_path / "pods"
    )
    with fake:
        kube_cluster.apply(model, namespace=namespace)
        for ticker in ("AMZN", "AXP"):
            eventually(
                lambda t=ticker: len(list(store.glob(f"bars/{t}/2018/*/*.parquet"))) >= 3,
                timeout=300,
                what=f"{ticker} bars landed",
            )
        manifest = schedule("nightly", "demo", schedule="0 3 * * *", activeDeadlineSeconds=1800)
        manifest["metadata"]["annotations"] = {"stockops.io/run-now": "first"}
        kube_cluster.apply(manifest, namespace=namespace)

        def last_run() -> dict[str, Any] | None:
            status = get(admin, namespace, "retrainschedules", "nightly").get("status") or {}
            return status.get("lastRun")

        run = eventually(last_run, timeout=900, what="the train run recorded")
        assert run["outcome"] == "Succeeded", run
        assert run["decision"] in ("promoted", "kept")
        assert set(run["metrics"]) >= {"model", "naive"}
        assert float(run["metrics"]["naive"]["rmse"]) > 0
        assert float(run["metrics"]["model"]["rmse"]) > 0

        promoted = run["decision"] == "promoted"

        def trained() -> dict[str, Any] | None:
            # The StockModel learns of a promotion at its next MLflow poll, after the result.
            status = get(admin, namespace, "stockmodels", "demo").get("status") or {}
            training, production = status.get("lastTraining"), status.get("productionVersion")
            if not training or not production:
                return None
            if promoted and production != training.get("challengerVersion"):
                return None
            return status

        status = eventually(
            trained, timeout=120, what="the StockModel's production version and last training"
        )
        assert status["lastTraining"]["decision"] == run["decision"]
        challenger = status["lastTraining"]["challengerVersion"]
        assert challenger
        production = status["productionVersion"]
        if not promoted:
            assert production != challenger
        # One deploy Job per version: after a promotion the champion's may exist as well.
        eventually(
            lambda: [
                j
                for j in jobs(admin, namespace, "app.kubernetes.io/component=deploy")
                if j["metadata"]["annotations"]["stockops.io/model-version"] == production
            ],
            timeout=120,
            what=f"a deploy Job of the production version {production}",
        )

        def deployed() -> dict[str, Any] | None:
            status = get(admin, namespace, "stockmodels", "demo").get("status") or {}
            ready = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if status.get("servingVersion") != production or ready.get("Ready") != "True":
                return None
            return status

        status = eventually(deployed, timeout=300, what=f"version {production} deployed, Ready")
        assert status["endpointUrl"] == f"http://127.0.0.1:{port}/v1/predict"
        rollout = status["lastRollout"]
        assert rollout["outcome"] == "Succeeded", rollout
        assert rollout["target"] == "local"
        assert rollout["servingVersion"] == production
        assert rollout["traffic"] == {production: 100}
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Deployed"]["reason"] == "Serving"
        assert all(conditions[t]["status"] == "True" for t in ("Ingesting", "ModelAvailable"))
        assert {c["observedGeneration"] for c in status["conditions"]} == {
            get(admin, namespace, "stockmodels", "demo")["metadata"]["generation"]
        }
        told = events(admin, namespace, "demo")
        for reason in ("DeployStarted", "Serving", "Ready"):
            assert reason in told, told

        # The endpoint in status answers with the version the operator says is serving.
        answer = httpx.post(
            status["endpointUrl"], json={"bars": recent_bars("AMZN", 300)}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == production
        assert [f["symbol"] for f in answer.json()["forecasts"]] == ["AMZN"]
    assert local_server.process.running, local_server.log_path.read_text()[-4000:]
    assert fake.errors == []


def recent_bars(symbol: str, count: int) -> list[dict[str, Any]]:
    """The last `count` bars of a ticker in tests/data, as POST /v1/predict takes them."""
    from stockops_model.loaders import load_bars

    bars = load_bars(ROOT / "tests" / "data" / "bars-2018-1min", symbols=(symbol,)).tail(count)
    wire = bars.assign(symbol=symbol, ts=[t.isoformat() for t in bars["ts"]])
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    return [
        dict(zip(columns, row, strict=True)) for row in wire.loc[:, columns].to_numpy().tolist()
    ]


def test_two_replicas_in_one_peering_never_both_act(
    namespace: str,
    admin: Any,
    operator_kubeconfig: Path,
    kubelet: Any,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    eventually: Any,
) -> None:
    # Fixed priorities make the roles known in advance: the low one starts alone and acts,
    # then must pause as soon as the high one joins the peering. (A replica that starts
    # while a higher one is already there stays paused from the start and logs nothing.)
    standby = Operator(operator_kubeconfig, namespace, tmp_path / "replica-low.log")
    standby.env["STOCKOPS_PEERING_PRIORITY"] = "100"
    active = Operator(operator_kubeconfig, namespace, tmp_path / "replica-high.log")
    active.env["STOCKOPS_PEERING_PRIORITY"] = "200"
    replicas = [standby, active]
    try:
        standby.start()
        eventually(
            lambda: "Resuming operations" in standby.log(),
            timeout=300,
            what="the first replica acting alone",
        )
        active.start()
        eventually(
            lambda: "Pausing operations in favour of" in standby.log(),
            timeout=300,
            what="the low-priority replica pausing in favour of the high-priority one",
        )
        manifest = schedule("nightly", "demo", schedule="0 3 * * *")
        manifest["metadata"]["annotations"] = {"stockops.io/run-now": "one"}
        kube_cluster.apply([stockmodel("demo"), manifest], namespace=namespace)
        eventually(lambda: len(job_names(admin, namespace)) == 1, what="the run-now Job")
        eventually(lambda: "created train Job" in active.log(), what="the active replica acting")
        assert "created train Job" not in standby.log()
        assert "Handler" not in standby.log()
    finally:
        for replica in replicas:
            replica.stop()


def test_a_restarted_replica_with_its_peering_id_acts_at_once_and_a_new_one_waits_its_lifetime(
    namespace: str,
    admin: Any,
    operator_kubeconfig: Path,
    kubelet: Any,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    eventually: Any,
) -> None:
    # The chart sets STOCKOPS_PEERING_ID to the Pod's name, so a container restarted after a
    # crash keeps it; a replacement Pod (new name) waits for the dead record to expire.
    peering_path = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/stockops"

    def record(identity: str) -> dict[str, Any] | None:
        peering = admin.call("GET", peering_path) or {}
        found = (peering.get("status") or {}).get(identity)
        return dict(found) if found else None

    def deadline(rec: dict[str, Any]) -> float:
        return _epoch(rec["lastseen"]) + int(rec["lifetime"])

    def run_now(value: str) -> str:
        patch(
            admin,
            namespace,
            "retrainschedules",
            "nightly",
            {"metadata": {"annotations": {"stockops.io/run-now": value}}},
        )
        job = eventually(
            lambda: next(
                (
                    j
                    for j in jobs(admin, namespace)
                    if j["metadata"]["annotations"].get("stockops.io/run-now") == value
                ),
                None,
            ),
            timeout=240,
            what=f"the Job of run-now {value!r}",
        )
        return str(job["metadata"]["creationTimestamp"])

    first = Operator(operator_kubeconfig, namespace, tmp_path / "first.log")
    first.env.update(STOCKOPS_PEERING_ID="replica-0", STOCKOPS_PEERING_PRIORITY="200")
    try:
        first.start()
        kube_cluster.apply(
            [
                stockmodel("demo"),
                schedule("nightly", "demo", schedule="0 3 * * *", concurrencyPolicy="Allow"),
            ],
            namespace=namespace,
        )
        run_now("one")
        first.kill()
        dead = record("replica-0")
        assert dead is not None

        # The same identity with a LOWER priority: kopf takes the dead record as its own, so
        # the run starts while that record is still live (a stranger would wait for it).
        first.env.update(STOCKOPS_PEERING_PRIORITY="100", STOCKOPS_PEERING_LIFETIME="15")
        first.start()
        created = run_now("two")
        # creationTimestamp is cut to the second: the Job existed by `created` + 1 s.
        assert _epoch(created) + 1 <= deadline(dead)
        first.kill()
        dead = record("replica-0")
        assert dead is not None
        assert int(dead["lifetime"]) == 15

        # A new identity, lower priority: it waits until the dead record (15 s) expires.
        second = Operator(operator_kubeconfig, namespace, tmp_path / "second.log")
        second.env.update(STOCKOPS_PEERING_ID="replica-1", STOCKOPS_PEERING_PRIORITY="50")
        second.start()
        try:
            created = run_now("three")
            assert _epoch(created) >= int(deadline(dead))  # creation time is to the second
        finally:
            second.stop()
            assert "HTTP 403" not in second.log()
    finally:
        first.stop()
        assert "HTTP 403" not in first.log()
