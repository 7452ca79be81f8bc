"""KServe for tests: its InferenceService CRD, and a fake of its controller that writes status.

There is no KServe nor Knative here (no kubelet, no Pods), so tests of the `kserve` deploy
target install KServe's real CRD (`install_crd`, from `tests/data/kserve/`) into the test API
server and run `FakeKServe`, a fake of what KServe's controller does in Knative mode for a
predictor, reduced to what a rollout watches:

- every change of the predictor spec other than `canaryTrafficPercent` makes a new revision
  (`<name>-predictor-00001`, ...), which gets Ready on the next reconcile, unless the test
  said its model version never gets ready or fails;
- traffic follows KServe's ksvc reconciler: with `canaryTrafficPercent` and a rolled-out
  revision, that percent on the latest ready revision (tag `latest`) and the rest on the
  rolled-out one (tag `prev`); otherwise 100 % on the latest ready revision;
- `latestRolledoutRevision` / `previousRolledoutRevision` move as KServe's PropagateStatus
  moves them; conditions `PredictorConfigurationReady`, `PredictorRouteReady`,
  `PredictorReady`, `IngressReady` and `Ready`; `url` and `address.url` as with the default
  domain `example.com`.

`FakeInferenceServices` keeps objects in memory for unit tests (FakeKServe reconciles on every
read, as if the controller ran between two polls); `FakeKServeController` runs FakeKServe
against the real API server, polling a namespace in a thread and writing `status`.

Limits: a fake, not KServe: no webhook defaults or validation beyond the CRD's schema, no
scale-to-zero, no tags' URLs, revisions never become unready once Ready, one namespace per
controller thread.
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import yaml

from stockops_model.deploy.kserve_manifests import ANNOTATION_VERSION, GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from stockops_model.testing.kube import KubeCluster

log = logging.getLogger(__name__)

KSERVE_VERSION = "v0.17.0"
CRD_NAME = f"{PLURAL}.{GROUP}"
_CRD_FILE = Path("tests") / "data" / "kserve" / "serving.kserve.io_inferenceservices.yaml.gz"

Behaviour = Literal["ready", "never-ready", "fail"]


def crd_manifest(path: Path | None = None) -> dict[str, Any]:
    """KServe's InferenceService CRD, read from the repository's tests/data/kserve/."""
    if path is None:
        for parent in Path(__file__).resolve().parents:
            if (parent / _CRD_FILE).is_file():
                path = parent / _CRD_FILE
                break
        else:
            raise FileNotFoundError(f"{_CRD_FILE} not found: run from a checkout of the repository")
    manifest: dict[str, Any] = yaml.safe_load(gzip.decompress(path.read_bytes()))
    return manifest


def install_crd(cluster: KubeCluster) -> dict[str, Any]:
    """Create the InferenceService CRD (server-side apply) and wait until it is Established."""
    return cluster.apply(crd_manifest(), crd_timeout_s=60.0)[0]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Revision:
    name: str
    template: str  # the predictor spec without canaryTrafficPercent, as JSON
    version: str | None  # the InferenceService's model-version annotation at creation
    ready: bool | None = None  # None while it starts, False once it failed
    reconciles: int = 0


@dataclass
class _Service:
    revisions: list[_Revision] = field(default_factory=list)
    rolled_out: str | None = None
    previous_rolled_out: str | None = None


class FakeKServe:
    """A fake of KServe's controller in Knative mode: revisions, traffic and status (see above).

    Args:
        behaviours: model version -> "never-ready" (stays Unknown) or "fail" (Ready=False,
            reason RevisionFailed); any other version gets Ready.
    """

    def __init__(self, behaviours: Mapping[str, Behaviour] | None = None) -> None:
        self.behaviours = dict(behaviours or {})
        self._services: dict[tuple[str, str], _Service] = {}
        # (version annotation, canaryTrafficPercent) of every predictor spec seen, in order.
        self.specs_seen: list[tuple[str | None, int | None]] = []
        self._lock = threading.Lock()

    def revisions(self, namespace: str, name: str) -> list[tuple[str, str | None, bool | None]]:
        """(revision, version, ready) of an InferenceService's predictor, oldest first."""
        with self._lock:
            service = self._services.get((namespace, name), _Service())
            return [(r.name, r.version, r.ready) for r in service.revisions]

    def reconcile(self, isvc: Mapping[str, Any]) -> dict[str, Any]:
        """The status KServe would write for `isvc` now (one controller step)."""
        with self._lock:
            return self._reconcile(isvc)

    def _reconcile(self, isvc: Mapping[str, Any]) -> dict[str, Any]:
        meta = isvc["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        service = self._services.setdefault((namespace, name), _Service())
        predictor = dict(isvc["spec"]["predictor"])
        canary = predictor.pop("canaryTrafficPercent", None)
        version = (meta.get("annotations") or {}).get(ANNOTATION_VERSION)
        seen = (version, None if canary is None else int(canary))
        if not self.specs_seen or self.specs_seen[-1] != seen:
            self.specs_seen.append(seen)
        template = json.dumps(predictor, sort_keys=True)
        if not service.revisions or service.revisions[-1].template != template:
            number = len(service.revisions) + 1
            service.revisions.append(_Revision(f"{name}-predictor-{number:05d}", template, version))
        latest = service.revisions[-1]
        latest.reconciles += 1
        if latest.ready is None and latest.reconciles > 1:
            behaviour = self.behaviours.get(str(latest.version), "ready")
            if behaviour == "ready":
                latest.ready = True
            elif behaviour == "fail":
                latest.ready = False
        ready = [r for r in service.revisions if r.ready]
        latest_ready = ready[-1].name if ready else None
        traffic = self._traffic(service, latest_ready, canary)
        self._propagate(service, latest_ready, latest.name, traffic)
        return self._status(isvc, service, latest, latest_ready, traffic)

    @staticmethod
    def _traffic(
        service: _Service, latest_ready: str | None, canary: int | None
    ) -> list[dict[str, Any]]:
        if latest_ready is None:
            return []
        if canary is not None and service.rolled_out:
            targets = [
                {
                    "latestRevision": True,
                    "percent": int(canary),
                    "revisionName": latest_ready,
                    "tag": "latest",
                }
            ]
            if canary < 100:
                targets.append(
                    {
                        "latestRevision": False,
                        "percent": 100 - int(canary),
                        "revisionName": service.rolled_out,
                        "tag": "prev",
                    }
                )
            return targets
        return [{"latestRevision": True, "percent": 100, "revisionName": latest_ready}]

    @staticmethod
    def _propagate(
        service: _Service,
        latest_ready: str | None,
        latest_created: str,
        traffic: list[dict[str, Any]],
    ) -> None:
        # KServe's InferenceServiceStatus.PropagateStatus, the rolled-out revision part.
        per_revision: dict[str, int] = {}
        for target in traffic:
            name = target["revisionName"]
            per_revision[name] = per_revision.get(name, 0) + target["percent"]
        for target in traffic:
            if target["revisionName"] != latest_ready or not target["latestRevision"]:
                continue
            if service.rolled_out != latest_ready:
                if target["percent"] == 100:
                    service.previous_rolled_out = service.rolled_out
                    service.rolled_out = latest_ready
            elif (
                latest_ready == latest_created
                and target["percent"] < 100
                and per_revision.get(target["revisionName"]) == 100
                and service.previous_rolled_out
            ):
                service.rolled_out = service.previous_rolled_out

    @staticmethod
    def _status(
        isvc: Mapping[str, Any],
        service: _Service,
        latest: _Revision,
        latest_ready: str | None,
        traffic: list[dict[str, Any]],
    ) -> dict[str, Any]:
        meta = isvc["metadata"]
        old = {c["type"]: c for c in (isvc.get("status") or {}).get("conditions") or []}

        def condition(
            kind: str, status: str, reason: str = "", message: str = ""
        ) -> dict[str, Any]:
            previous = old.get(kind)
            since = previous.get("lastTransitionTime") if previous else None
            if previous is None or previous.get("status") != status or not since:
                since = _now()
            out = {"type": kind, "status": status, "lastTransitionTime": since}
            if reason:
                out["reason"] = reason
            if message:
                out["message"] = message
            return out

        if latest.ready is True:
            configuration = condition("PredictorConfigurationReady", "True")
        elif latest.ready is False:
            configuration = condition(
                "PredictorConfigurationReady",
                "False",
                "RevisionFailed",
                f'Revision "{latest.name}" failed with message: container exited with code 1.',
            )
        else:
            configuration = condition(
                "PredictorConfigurationReady", "Unknown", "Deploying", f"{latest.name} starting"
            )
        route = condition("PredictorRouteReady", "True" if latest_ready else "Unknown")
        parts = [configuration, route]
        if any(p["status"] == "False" for p in parts):
            overall = "False"
        elif all(p["status"] == "True" for p in parts):
            overall = "True"
        else:
            overall = "Unknown"
        reason = configuration.get("reason", "")
        message = configuration.get("message", "")
        host = f"{meta['name']}.{meta['namespace']}"
        url = f"http://{host}.example.com"
        predictor: dict[str, Any] = {
            "latestCreatedRevision": latest.name,
            "traffic": traffic,
        }
        if latest_ready:
            predictor["latestReadyRevision"] = latest_ready
            predictor["url"] = f"http://{meta['name']}-predictor.{meta['namespace']}.example.com"
        if service.rolled_out:
            predictor["latestRolledoutRevision"] = service.rolled_out
        if service.previous_rolled_out:
            predictor["previousRolledoutRevision"] = service.previous_rolled_out
        status: dict[str, Any] = {
            "observedGeneration": meta.get("generation", 1),
            "deploymentMode": "Knative",
            "components": {"predictor": predictor},
            "conditions": [
                condition("IngressReady", "True" if latest_ready else "Unknown"),
                configuration,
                condition("PredictorReady", overall, reason, message),
                route,
                condition("Ready", overall, reason, message),
            ],
        }
        if latest_ready:
            status["url"] = url
            status["address"] = {"url": f"http://{host}.svc.cluster.local"}
        return status


class FakeInferenceServices:
    """An in-memory fake of the API server's InferenceServices for unit tests.

    `apply` replaces the spec and metadata the target manages (server-side apply by its one
    field manager); `get` lets `kserve` reconcile first, as if its controller ran between two
    polls. `applied` records every manifest applied, in order.
    """

    def __init__(self, kserve: FakeKServe) -> None:
        self.kserve = kserve
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((namespace, name))
        if found is None:
            return None
        found["status"] = self.kserve.reconcile(found)
        return copy.deepcopy(found)

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        wanted: dict[str, Any] = copy.deepcopy(dict(manifest))
        self.applied.append(wanted)
        meta = wanted["metadata"]
        key = (meta["namespace"], meta["name"])
        found = self.objects.get(key)
        if found is None:
            found = {**wanted, "metadata": {**meta, "generation": 1}}
            self.objects[key] = found
        else:
            if found["spec"] != wanted["spec"]:
                found["metadata"]["generation"] += 1
            found["spec"] = wanted["spec"]
            for part in ("labels", "annotations"):
                found["metadata"][part] = dict(meta.get(part) or {})
        return copy.deepcopy(found)


class FakeKServeController:
    """Run `FakeKServe` against a real API server for one namespace, in a thread.

    Reconciles the namespace's InferenceServices every `interval` seconds and writes each
    one's status (JSON patch of the status subresource) when it changes. Use as a context
    manager.
    """

    def __init__(
        self, api_client: Any, namespace: str, kserve: FakeKServe, interval: float = 0.2
    ) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.kserve = kserve
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kserve", daemon=True)
        self.errors: list[BaseException] = []

    def __enter__(self) -> FakeKServeController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        # A list every `interval` rather than a watch: a watch on a CRD established moments
        # ago can fail with "Too large resource version" until the watch cache catches up.
        while not self._stop.is_set():
            try:
                listed = cast(
                    "dict[str, Any]",
                    self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL),
                )
                for item in listed.get("items") or []:
                    self._reconcile(item["metadata"]["name"])
            except Exception as exc:  # keep going; the test reads `errors` if it fails
                log.warning("fake KServe controller: %s", exc)
                self.errors.append(exc)
            self._stop.wait(self.interval)

    def _reconcile(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        # A listed object can be older than the latest write (the target may have applied
        # again meanwhile): like a real controller, act on the current object.
        try:
            isvc = cast(
                "dict[str, Any]",
                self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
            )
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        status = self.kserve.reconcile(isvc)
        if status == isvc.get("status"):
            return
        self.api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            _content_type="application/json-patch+json",
        )
