"""A fake kubelet with the Job and Deployment controllers, for a control plane with no nodes.

The test control plane runs a real kube-apiserver and garbage collector but no kubelet, no
scheduler and no workload controllers. `FakeKubelet` plays those parts for one namespace, so
the operator under test sees Jobs and Deployments behave as in a cluster:

* Jobs: for each new Job it records `startTime`, creates a Pod object (labels
  `batch.kubernetes.io/job-name`, `job-name`, `controller-uid`; a controller owner reference to
  the Job, so the garbage collector removes it with the Job) and runs the container's command
  as a local process. When the process exits it writes the Pod's terminated state with the
  termination message, and the Job's status the way the Job controller does: `succeeded` /
  `failed` counts, `SuccessCriteriaMet`+`Complete` or `FailureTarget`+`Failed` conditions,
  `completionTime`. `backoffLimit` (a new Pod per retry), `podFailurePolicy` FailJob rules on
  exit codes, `activeDeadlineSeconds` (the process is killed, reason DeadlineExceeded) and
  `ttlSecondsAfterFinished` are honoured. A deleted Job's process is killed.
* Objects deleted while it works on them (the operator replacing a run, the garbage collector
  removing a Deployment) are let go, as the real controllers do: a 404 on a status write or a
  delete is not an error. A Pod whose ConfigMap volume does not exist yet is not started until
  it does (the real kubelet retries the mount). Such a Job is also listed in
  `jobs_before_configmaps` when the kubelet first sees it: the operator must not create a train
  Job before its StockModel's spec ConfigMap, and the tests assert the list stays empty. (The
  kubelet polls, so a Job whose ConfigMap follows within one poll can go unnoticed; a Job
  whose ConfigMap never comes cannot.)
* Deployments: one process per Deployment for its current Pod template (Recreate: a new
  template kills the old process first); a process that exits is restarted after a back-off,
  as `restartPolicy: Always` does. Status: `observedGeneration`, `replicas`,
  `updatedReplicas`, `readyReplicas`, `availableReplicas` and the `Available` condition.

Each Pod gets a folder: ConfigMap volumes are written there as files, emptyDirs are empty
folders, and every argument or env value that starts with a `mountPath` is rewritten to that
folder. Env comes from `value`, `secretKeyRef`, `configMapKeyRef` and the `metadata.name`/
`metadata.namespace` field refs. The termination message file is private to the Pod (the real
kubelet mounts one per container at `/dev/termination-log`): its path is handed to the process
in `STOCKOPS_TERMINATION_LOG`, which `stockops train` honours. With
`terminationMessagePolicy: FallbackToLogsOnError`, a failed container with an empty message
gets the tail of its log, as the kubelet does.

Limits: one container per Pod, `replicas` 0 or 1, no probes, no image (the command runs from
the test's virtual environment), no resource limits, no Pods for Deployments.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

log = logging.getLogger(__name__)

FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
RESTART_BACKOFF_S = 2.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


class KubeClient:
    """Blocking JSON calls as the cluster admin (the fake kubelet's own identity)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        folder = kubeconfig.parent
        cert, key = folder / "fake-kubelet.crt", folder / "fake-kubelet.key"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        context.load_cert_chain(str(cert), str(key))
        self.http = httpx.Client(base_url=cluster["server"], verify=context, timeout=30)

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        response = self.http.request(
            method,
            path,
            json=body,
            params=params,
            headers={"Content-Type": content_type} if body is not None else None,
        )
        # GET of a missing object is an answer; DELETE of one is done already.
        if response.status_code == 404 and method in ("GET", "DELETE"):
            return None
        response.raise_for_status()
        return response.json()

    def patch_status(self, path: str, status: Mapping[str, Any]) -> bool:
        """Merge `status` into the object at `path`; False if it was deleted meanwhile."""
        response = self.http.request(
            "PATCH",
            path + "/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True


class VolumeNotReadyError(Exception):
    """A ConfigMap a Pod mounts does not exist (yet); the kubelet retries on its next round."""


class HeldProcess:
    """A container that runs until the test releases it (`FakeKubelet.release`)."""

    def __init__(self) -> None:
        self.pid = 0
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


@dataclass
class Attempt:
    """One local process standing for one container of one Pod."""

    process: subprocess.Popen[bytes] | HeldProcess
    folder: Path
    pod_name: str | None
    started: str
    log_path: Path
    termination_path: Path
    message_policy: str

    def kill(self) -> None:
        if isinstance(self.process, HeldProcess):
            if self.process.returncode is None:
                self.process.returncode = 137
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def message(self, exit_code: int) -> str:
        text = (
            self.termination_path.read_text(errors="replace")
            if self.termination_path.exists()
            else ""
        )
        if not text.strip() and exit_code != 0 and self.message_policy == "FallbackToLogsOnError":
            lines = self.log_path.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
            text = "\n".join(lines)[-FALLBACK_LOG_BYTES:]
        return text[-4096:]


@dataclass
class JobState:
    uid: str
    name: str
    failed: int = 0
    attempt: Attempt | None = None
    done: bool = False


@dataclass
class DeploymentState:
    uid: str
    template_key: str
    attempt: Attempt | None = None
    restart_at: float = 0.0
    restarts: int = 0


@dataclass
class FakeKubelet:
    """Plays kubelet, Job controller and Deployment controller for one namespace.

    Use as a context manager (or `start()` / `stop()`); `errors` lists anything the API server
    refused, which a test should assert is empty.

    With `hold_jobs`, a Job's Pod is created and reported Running but no process starts: the
    Job stays active until the test calls `release(job, exit_code)`. Tests of scheduling
    semantics (Forbid, Replace, restarts) use it to control how long a run lasts; they do not
    train and record no training result. With `run_deployments` off, Deployments are left
    unavailable (no feed or sink processes) for tests that are about Jobs only.
    """

    kubeconfig: Path
    namespace: str
    work_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    hold_jobs: bool = False
    run_deployments: bool = True
    poll_s: float = 0.2
    errors: list[str] = field(default_factory=list)
    jobs: dict[str, JobState] = field(default_factory=dict)
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    started_pods: list[str] = field(default_factory=list)
    jobs_before_configmaps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api = KubeClient(self.kubeconfig)
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)

    def __enter__(self) -> FakeKubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def release(self, job_name: str, exit_code: int = 0) -> None:
        """End a held Job's current container with `exit_code`.

        Raises:
            KeyError: no held container of that Job is running.
        """
        with self._lock:
            for state in self.jobs.values():
                attempt = state.attempt
                if (
                    state.name == job_name
                    and attempt is not None
                    and isinstance(attempt.process, HeldProcess)
                    and attempt.process.returncode is None
                ):
                    attempt.process.returncode = exit_code
                    return
        raise KeyError(f"no held container of Job {job_name} is running")

    def running_jobs(self) -> list[str]:
        """Names of the Jobs whose container is running now."""
        with self._lock:
            return sorted(
                s.name
                for s in self.jobs.values()
                if s.attempt is not None and s.attempt.process.poll() is None
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        attempts = [s.attempt for s in self.jobs.values()]
        attempts += [s.attempt for s in self.deployments.values()]
        for attempt in attempts:
            if attempt is not None:
                attempt.kill()
        self.api.close()

    # --- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._sync_jobs()
                    if self.run_deployments:
                        self._sync_deployments()
            except httpx.HTTPStatusError as exc:
                self.errors.append(f"{exc.request.method} {exc.request.url}: {exc.response.text}")
                log.warning("fake kubelet: %s", self.errors[-1])
            except Exception as exc:  # keep playing the kubelet; the test sees the error
                self.errors.append(repr(exc))
                log.exception("fake kubelet failed a sync")
            self._stop.wait(self.poll_s)

    def _jobs_path(self, name: str | None = None) -> str:
        base = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        return base if name is None else f"{base}/{name}"

    def _sync_jobs(self) -> None:
        listed = self.api.call("GET", self._jobs_path())["items"]
        seen: set[str] = set()
        for job in listed:
            meta = job["metadata"]
            key = meta["uid"]
            seen.add(key)
            if key not in self.jobs:
                self._note_missing_configmaps(job)
            state = self.jobs.setdefault(key, JobState(uid=key, name=meta["name"]))
            if meta.get("deletionTimestamp"):
                if state.attempt is not None:
                    state.attempt.kill()
                    state.attempt = None
                continue
            self._sync_job(job, state)
        for key, state in list(self.jobs.items()):
            if key not in seen:
                if state.attempt is not None:
                    state.attempt.kill()
                del self.jobs[key]

    def _note_missing_configmaps(self, job: Mapping[str, Any]) -> None:
        """Record a Job first seen while a ConfigMap its Pods mount does not exist."""
        pod_spec = job["spec"]["template"]["spec"]
        for volume in pod_spec.get("volumes") or []:
            source = volume.get("configMap")
            if source is None or source.get("optional"):
                continue
            path = f"/api/v1/namespaces/{self.namespace}/configmaps/{source['name']}"
            if self.api.call("GET", path) is None:
                self.jobs_before_configmaps.append(
                    f"{job['metadata']['name']} (ConfigMap {source['name']})"
                )

    def _sync_job(self, job: dict[str, Any], state: JobState) -> None:
        meta, spec = job["metadata"], job["spec"]
        status = job.get("status") or {}
        path = self._jobs_path(meta["name"])
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if finished:
            state.done = True
            ttl = spec.get("ttlSecondsAfterFinished")
            finished_at = _parse(status.get("completionTime")) or _parse(
                next(
                    (
                        c.get("lastTransitionTime")
                        for c in status.get("conditions") or []
                        if c.get("type") == "Failed"
                    ),
                    None,
                )
            )
            expired = (
                ttl is not None
                and finished_at is not None
                and (datetime.now(UTC) - finished_at).total_seconds() >= ttl
            )
            if expired:
                self.api.call("DELETE", path, {"propagationPolicy": "Background"})
            return
        if spec.get("suspend"):
            return
        if not status.get("startTime"):
            self.api.patch_status(path, {"startTime": _now(), "active": 0})
            return  # the next round sees the startTime and starts the first Pod
        started = _parse(status["startTime"])
        deadline = spec.get("activeDeadlineSeconds")
        if (
            deadline is not None
            and started is not None
            and (datetime.now(UTC) - started).total_seconds() > deadline
        ):
            if state.attempt is not None:
                state.attempt.kill()
                self._finish_pod(state.attempt, 137, "DeadlineExceeded")
                state.attempt = None
            self._fail_job(
                path, state, "DeadlineExceeded", "Job was active longer than specified deadline"
            )
            return
        if state.attempt is None:
            try:
                state.attempt = self._start_job_pod(job, state)
            except VolumeNotReadyError as waiting:
                log.info("fake kubelet: Job %s waits: %s", meta["name"], waiting)
                return
            self.api.patch_status(path, {"active": 1, "ready": 1})
            return
        code = state.attempt.process.poll()
        if code is None:
            return
        self._finish_pod(state.attempt, code, "Completed" if code == 0 else "Error")
        attempt, state.attempt = state.attempt, None
        if code == 0:
            self.api.patch_status(
                path,
                {
                    "active": 0,
                    "ready": 0,
                    "succeeded": 1,
                    "completionTime": _now(),
                    "conditions": [
                        _condition(
                            "SuccessCriteriaMet",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        ),
                        _condition(
                            "Complete",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        ),
                    ],
                },
            )
            state.done = True
            return
        state.failed += 1
        container = spec["template"]["spec"]["containers"][0]["name"]
        if _fail_job_rule(spec, container, code):
            self._fail_job(
                path,
                state,
                "PodFailurePolicy",
                f"Container {container} for pod {self.namespace}/{attempt.pod_name} failed "
                f"with exit code {code} matching FailJob rule at index 0",
            )
        elif state.failed > int(spec.get("backoffLimit", 6)):
            self._fail_job(
                path, state, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
        else:
            self.api.patch_status(path, {"active": 0, "ready": 0, "failed": state.failed})

    def _fail_job(self, path: str, state: JobState, reason: str, message: str) -> None:
        self.api.patch_status(
            path,
            {
                "active": 0,
                "ready": 0,
                "failed": max(state.failed, 1),
                "conditions": [
                    _condition("FailureTarget", reason, message),
                    _condition("Failed", reason, message),
                ],
            },
        )
        state.done = True

    def _start_job_pod(self, job: dict[str, Any], state: JobState) -> Attempt:
        meta = job["metadata"]
        template = job["spec"]["template"]
        pod_name = f"{meta['name']}-{secrets.token_hex(3)}"
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "batch.kubernetes.io/job-name": meta["name"],
            "job-name": meta["name"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "controller-uid": meta["uid"],
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": self.namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        if self.hold_jobs:
            folder = self.work_dir / pod_name
            folder.mkdir(parents=True, exist_ok=True)
            attempt = Attempt(
                process=HeldProcess(),
                folder=folder,
                pod_name=pod_name,
                started=_now(),
                log_path=folder / "log",
                termination_path=folder / "termination-log",
                message_policy="File",
            )
        else:
            # Before the Pod object exists, so a missing volume (VolumeNotReadyError) leaves nothing
            # behind and the next round starts the Job's one Pod.
            attempt = self._launch(template["spec"], pod_name)
        try:
            self.api.call("POST", f"/api/v1/namespaces/{self.namespace}/pods", pod)
        except BaseException:
            attempt.kill()
            raise
        self.started_pods.append(pod_name)
        self.api.patch_status(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod_name}",
            {
                "phase": "Running",
                "startTime": attempt.started,
                "containerStatuses": [
                    _container_status(template["spec"], {"running": {"startedAt": attempt.started}})
                ],
            },
        )
        return attempt

    def _finish_pod(self, attempt: Attempt, code: int, reason: str) -> None:
        if attempt.pod_name is None:
            return
        path = f"/api/v1/namespaces/{self.namespace}/pods/{attempt.pod_name}"
        pod = self.api.call("GET", path)
        if pod is None:
            return
        terminated = {
            "exitCode": code,
            "reason": reason,
            "message": attempt.message(code),
            "startedAt": attempt.started,
            "finishedAt": _now(),
        }
        self.api.patch_status(
            path,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [_container_status(pod["spec"], {"terminated": terminated})],
            },
        )

    # --- Deployments --------------------------------------------------------------------------

    def _sync_deployments(self) -> None:
        base = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        listed = self.api.call("GET", base)["items"]
        seen: set[str] = set()
        for dep in listed:
            meta, spec = dep["metadata"], dep["spec"]
            key = meta["uid"]
            seen.add(key)
            template_key = repr(spec["template"])
            state = self.deployments.get(key)
            if state is not None and state.template_key != template_key:
                if state.attempt is not None:  # Recreate: old Pods go before new ones start
                    state.attempt.kill()
                state = None
            if state is None:
                state = self.deployments[key] = DeploymentState(uid=key, template_key=template_key)
            want = int(spec.get("replicas", 1)) > 0 and not meta.get("deletionTimestamp")
            running = state.attempt is not None and state.attempt.process.poll() is None
            if not want and state.attempt is not None:
                state.attempt.kill()
                state.attempt, running = None, False
            if want and not running and time.monotonic() >= state.restart_at:
                try:
                    attempt = self._launch(spec["template"]["spec"], None)
                except VolumeNotReadyError as waiting:
                    log.info("fake kubelet: Deployment %s waits: %s", meta["name"], waiting)
                else:
                    if state.attempt is not None:
                        state.restarts += 1
                    state.attempt = attempt
                    state.restart_at = time.monotonic() + RESTART_BACKOFF_S * (1 + state.restarts)
                    running = True
            ready = 1 if running else 0
            status = dep.get("status") or {}
            desired = {
                "observedGeneration": meta.get("generation", 1),
                "replicas": 1 if want else 0,
                "updatedReplicas": 1 if want else 0,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": (1 if want else 0) - ready,
            }
            if any(status.get(k, 0) != v for k, v in desired.items()):
                desired["conditions"] = [
                    {
                        "type": "Available",
                        "status": "True" if ready or not want else "False",
                        "reason": "MinimumReplicasAvailable"
                        if ready
                        else "MinimumReplicasUnavailable",
                        "message": "fake kubelet",
                        "lastUpdateTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ]
                self.api.patch_status(f"{base}/{meta['name']}", desired)
        for key, state in list(self.deployments.items()):
            if key not in seen:
                if state.attempt is not None:
                    state.attempt.kill()
                del self.deployments[key]

    # --- processes ----------------------------------------------------------------------------

    def _launch(self, pod_spec: Mapping[str, Any], pod_name: str | None) -> Attempt:
        container = pod_spec["containers"][0]
        folder = self.work_dir / (pod_name or f"deploy-{secrets.token_hex(4)}")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            mounts = self._materialise_volumes(pod_spec, container, folder)
        except VolumeNotReadyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        def local(value: str) -> str:
            for mount_path, target in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    return str(target) + value[len(mount_path.rstrip("/")) :]
            return value

        argv = [local(a) for a in [*container.get("command", []), *container.get("args", [])]]
        executable = shutil.which(argv[0])
        if executable is None:
            raise FileNotFoundError(f"{argv[0]} is not on PATH")
        termination = folder / "termination-log"
        termination.write_text("")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(folder),
            "TMPDIR": str(mounts.get("/tmp", folder)),
            "STOCKOPS_TERMINATION_LOG": str(termination),
            **self.extra_env,
        }
        for var in container.get("env") or []:
            value = self._env_value(var, pod_name)
            if value is not None:
                env[var["name"]] = local(value)
        log_path = folder / "log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [executable, *argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=folder,
                start_new_session=True,
            )
        return Attempt(
            process=process,
            folder=folder,
            pod_name=pod_name,
            started=_now(),
            log_path=log_path,
            termination_path=termination,
            message_policy=container.get("terminationMessagePolicy", "File"),
        )

    def _materialise_volumes(
        self, pod_spec: Mapping[str, Any], container: Mapping[str, Any], folder: Path
    ) -> dict[str, Path]:
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            target = folder / "volumes" / mount["name"]
            target.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                cm = self.api.call("GET", f"/api/v1/namespaces/{self.namespace}/configmaps/{name}")
                if cm is None:
                    raise VolumeNotReadyError(
                        f"ConfigMap {name} of volume {mount['name']} is missing"
                    )
                for key, text in (cm.get("data") or {}).items():
                    (target / key).write_text(text)
            elif "secret" in volume:
                name = volume["secret"]["secretName"]
                secret = self.api.call("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
                for key, data in ((secret or {}).get("data") or {}).items():
                    (target / key).write_bytes(base64.b64decode(data))
            mounts[mount["mountPath"]] = target
        return mounts

    def _env_value(self, var: Mapping[str, Any], pod_name: str | None) -> str | None:
        if "value" in var:
            return str(var["value"])
        source = var.get("valueFrom") or {}
        for kind, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if kind in source:
                ref = source[kind]
                obj = self.api.call(
                    "GET", f"/api/v1/namespaces/{self.namespace}/{plural}/{ref['name']}"
                )
                data = (obj or {}).get("data") or {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return None
                    raise KeyError(f"{kind} {ref['name']}/{ref['key']} is missing")
                raw = data[ref["key"]]
                return base64.b64decode(raw).decode() if kind == "secretKeyRef" else str(raw)
        field_path = (source.get("fieldRef") or {}).get("fieldPath")
        if field_path == "metadata.namespace":
            return self.namespace
        if field_path == "metadata.name":
            return pod_name or ""
        return None


def _condition(type_: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _container_status(pod_spec: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    container = pod_spec["containers"][0]
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": dict(state),
    }


def _fail_job_rule(spec: Mapping[str, Any], container: str, code: int) -> bool:
    for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
        exits = rule.get("onExitCodes")
        if rule.get("action") != "FailJob" or not exits:
            continue
        if exits.get("containerName") not in (None, container):
            continue
        values = set(exits.get("values") or [])
        matched = code in values if exits.get("operator") == "In" else code not in values
        if matched:
            return True
    return False
