"""`FakeMLClient`: a fake of azure-ai-ml's `MLClient` for the `azureml` deploy target's tests.

It is a FAKE, not Azure: it keeps the workspace in memory and answers the calls the target
makes (`models`, `environments`, `online_endpoints`, `online_deployments`), with the behaviour
of the service and of the SDK (azure-ai-ml 1.35, read in its source) that a rollout depends on:

- `get` of anything missing raises the SDK's `ResourceNotFoundError`.
- Provisioning states play over polls: a created or updated endpoint reports Creating or
  Updating for `busy_polls` gets, then Succeeded; a deployment Creating, then Succeeded (or
  Failed when injected). Pollers come back finished, as the SDK's `.result()` returns.
- While the endpoint is Creating/Updating, any update or delete under it is refused with the
  service's 409 Conflict, as an `HttpResponseError` (counted in `refused`).
- Endpoint updates go through the SDK's own preprocessing (`_strip_zeroes_from_traffic`:
  lowercase keys, 0 entries dropped) and serialisation (`_to_rest_online_endpoint`); the
  service then takes the map as sent: a missing or empty map sets every deployment to 0%.
  A map naming an unknown deployment, or not summing to 100, is refused (400).
- `get` of an endpoint lists deployments without traffic with 0, as the SDK does.
- Deployments are serialised with `_to_rest_object`; one that takes traffic cannot be
  deleted (400), as the service refuses it.
- `invoke` reads the request file and checks the deployment exists, as the SDK does, then
  answers through `scorer` (by default: the last close of each ticker, as JSON text).

Every call is recorded in `calls`; the wire forms in `endpoint_wire` and `deployment_wire`.
Failures are injected with `fail_provisioning`, `stuck_provisioning`, `invoke_answers` and
`refuse_traffic`.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.ai.ml.entities import (
    Environment,
    KubernetesOnlineEndpoint,
    ManagedOnlineEndpoint,
    Model,
    OnlineDeployment,
    OnlineEndpoint,
)
from azure.ai.ml.operations._online_endpoint_operations import _strip_zeroes_from_traffic
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

LOCATION = "westeurope"
Scorer = Callable[[str, dict[str, Any]], str]


def http_error(status: int, message: str) -> HttpResponseError:
    """An `HttpResponseError` as the SDK raises it for a service error answer."""
    error = HttpResponseError(message=message)
    error.status_code = status
    error.reason = {400: "Bad Request", 409: "Conflict"}.get(status, "Error")
    return error


class FakePoller:
    """A finished LRO poller (the fake's operations complete at once)."""

    def __init__(self, value: Any = None) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:
        return self._value

    def done(self) -> bool:
        return True

    def wait(self, timeout: float | None = None) -> None:
        return None

    def status(self) -> str:
        return "Succeeded"


def last_close_scorer(deployment: str, request: dict[str, Any]) -> str:
    """A stand-in for score.py: the last close of each ticker, as the script answers."""
    last: dict[str, dict[str, Any]] = {}
    for bar in request["bars"]:
        last[bar["symbol"]] = bar
    forecasts = [
        {"symbol": s, "ts": b["ts"], "forecast_close": b["close"], "horizon": 1}
        for s, b in sorted(last.items())
    ]
    return json.dumps({"model_name": "m", "model_version": deployment, "forecasts": forecasts})


@dataclass
class _States:
    """Provisioning states still to report on gets, then `final` for good."""

    final: str
    pending: list[str] = field(default_factory=list)

    def next(self) -> str:
        return self.pending.pop(0) if self.pending else self.final

    def peek(self) -> str:
        return self.pending[0] if self.pending else self.final


@dataclass
class _Endpoint:
    entity: OnlineEndpoint
    traffic: dict[str, int]
    states: _States


@dataclass
class _Deployment:
    entity: OnlineDeployment
    states: _States


class FakeMLClient:
    """A fake `MLClient`: see the module docstring."""

    def __init__(
        self, *, busy_polls: int = 2, storage: Path | None = None, scorer: Scorer | None = None
    ) -> None:
        self.busy_polls = busy_polls
        self.storage = storage  # where "uploaded" model folders are copied, if set
        self.scorer: Scorer = scorer or last_close_scorer
        self.calls: list[tuple[str, str]] = []
        self.refused: list[str] = []  # operations refused with 409 (endpoint busy)
        self.endpoint_wire: list[dict[str, Any]] = []
        self.deployment_wire: dict[str, dict[str, Any]] = {}
        self.fail_provisioning: set[str] = set()
        self.stuck_provisioning: set[str] = set()  # these stay Creating forever
        self.invoke_answers: dict[str, str | Exception] = {}
        self.refuse_traffic: Callable[[dict[str, int]], bool] = lambda traffic: False
        self.endpoints: dict[str, _Endpoint] = {}
        self.deployments: dict[tuple[str, str], _Deployment] = {}
        self.model_assets: dict[tuple[str, str], Model] = {}
        self.environment_assets: dict[tuple[str, str], Environment] = {}
        self.models = _FakeModels(self)
        self.environments = _FakeEnvironments(self)
        self.online_endpoints = _FakeOnlineEndpoints(self)
        self.online_deployments = _FakeOnlineDeployments(self)

    # ------------------------------------------------------------------ helpers for tests

    def busy(self, pending: int) -> list[str]:
        return ["Updating"] * pending

    def traffic(self, endpoint: str) -> dict[str, int]:
        """The traffic the service holds (deployments without traffic left out)."""
        return {k: v for k, v in self.endpoints[endpoint].traffic.items() if v}

    def deployment_names(self, endpoint: str) -> list[str]:
        return sorted(name for ep, name in self.deployments if ep == endpoint)

    def seed_endpoint(self, entity: OnlineEndpoint, pending: list[str] | None = None) -> None:
        """Put an existing endpoint in the workspace (state Succeeded after `pending`)."""
        self.endpoints[str(entity.name)] = _Endpoint(
            copy.deepcopy(entity), {}, _States("Succeeded", list(pending or []))
        )

    def seed_deployment(
        self, deployment: OnlineDeployment, traffic: int, state: str = "Succeeded"
    ) -> None:
        """Put an existing deployment under its endpoint with `traffic` percent."""
        endpoint, name = str(deployment.endpoint_name), str(deployment.name)
        self.deployments[(endpoint, name)] = _Deployment(copy.deepcopy(deployment), _States(state))
        if traffic:
            self.endpoints[endpoint].traffic[name] = traffic

    def _endpoint(self, name: str) -> _Endpoint:
        if name not in self.endpoints:
            raise ResourceNotFoundError(f"endpoint {name} not found")
        return self.endpoints[name]

    def _refuse_if_busy(self, endpoint: str, what: str) -> None:
        record = self._endpoint(endpoint)
        state = record.states.peek()
        if state in ("Creating", "Updating", "Deleting"):
            self.refused.append(what)
            raise http_error(
                409,
                f"(Conflict) Endpoint {endpoint} is in {state} state; another operation is "
                "in progress",
            )


class _FakeModels:
    def __init__(self, client: FakeMLClient) -> None:
        self.client = client

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        self.client.calls.append(("models.get", f"{name}:{version}"))
        if (name, str(version)) not in self.client.model_assets:
            raise ResourceNotFoundError(f"model {name}:{version} not found")
        return self.client.model_assets[(name, str(version))]

    def create_or_update(self, model: Model) -> Model:
        self.client.calls.append(("models.create_or_update", f"{model.name}:{model.version}"))
        key = (str(model.name), str(model.version))
        if key in self.client.model_assets:
            raise http_error(409, f"model {key[0]}:{key[1]} exists and is immutable")
        stored = copy.deepcopy(model)
        if self.client.storage is not None and model.path:
            target = self.client.storage / f"{key[0]}-{key[1]}"
            shutil.copytree(str(model.path), target)  # the upload
            stored.path = str(target)
        self.client.model_assets[key] = stored
        return stored


class _FakeEnvironments:
    def __init__(self, client: FakeMLClient) -> None:
        self.client = client

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Environment:
        self.client.calls.append(("environments.get", f"{name}:{version}"))
        if (name, str(version)) not in self.client.environment_assets:
            raise ResourceNotFoundError(f"environment {name}:{version} not found")
        return self.client.environment_assets[(name, str(version))]

    def create_or_update(self, environment: Environment) -> Environment:
        key = (str(environment.name), str(environment.version))
        self.client.calls.append(("environments.create_or_update", ":".join(key)))
        environment._to_dict()  # the SDK's schema must accept it
        self.client.environment_assets[key] = copy.deepcopy(environment)
        return environment


class _FakeOnlineEndpoints:
    def __init__(self, client: FakeMLClient) -> None:
        self.client = client

    def get(self, name: str, *, local: bool = False) -> OnlineEndpoint:
        self.client.calls.append(("online_endpoints.get", name))
        record = self.client._endpoint(name)
        state = record.states.next()
        traffic = dict(record.traffic)
        for (endpoint, deployment), _ in self.client.deployments.items():
            if endpoint == name and not traffic.get(deployment):
                traffic[deployment] = 0  # as the SDK's get fills in deployments without traffic
        kwargs: dict[str, Any] = {
            "name": name,
            "auth_mode": record.entity.auth_mode,
            "tags": dict(record.entity.tags or {}),
            "traffic": traffic,
            "provisioning_state": state,
            "scoring_uri": f"https://{name}.{LOCATION}.inference.ml.azure.com/score",
        }
        if isinstance(record.entity, KubernetesOnlineEndpoint):
            return KubernetesOnlineEndpoint(compute=record.entity.compute, **kwargs)
        return ManagedOnlineEndpoint(**kwargs)

    def begin_create_or_update(
        self, endpoint: OnlineEndpoint, *, local: bool = False
    ) -> FakePoller:
        client = self.client
        name = str(endpoint.name)
        # What the SDK's OnlineEndpointOperations does before it sends the body.
        if endpoint.traffic:
            endpoint.traffic = _strip_zeroes_from_traffic(endpoint.traffic)
        wire = endpoint._to_rest_online_endpoint(location=LOCATION).as_dict()
        client.calls.append(("online_endpoints.begin_create_or_update", name))
        traffic = {k: int(v) for k, v in (wire["properties"].get("traffic") or {}).items()}
        if name not in client.endpoints:
            client.endpoint_wire.append(wire)
            client.endpoints[name] = _Endpoint(
                copy.deepcopy(endpoint),
                traffic,
                _States("Succeeded", ["Creating"] * client.busy_polls),
            )
            return FakePoller(None)
        client._refuse_if_busy(name, f"update endpoint {name}")
        known = {d for e, d in client.deployments if e == name}
        unknown = sorted(set(traffic) - known)
        if unknown:
            raise http_error(400, f"traffic names deployment(s) {unknown} that do not exist")
        if traffic and sum(traffic.values()) != 100:
            raise http_error(400, f"traffic must sum to 100, got {traffic}")
        if client.refuse_traffic(traffic):
            raise http_error(400, f"injected failure updating traffic to {traffic}")
        client.endpoint_wire.append(wire)
        record = client.endpoints[name]
        record.traffic = traffic  # missing or empty: every deployment at 0%
        record.states = _States("Succeeded", ["Updating"] * client.busy_polls)
        return FakePoller(None)

    def invoke(
        self,
        endpoint_name: str,
        *,
        request_file: str | None = None,
        deployment_name: str | None = None,
        **kwargs: Any,
    ) -> str:
        client = self.client
        client.calls.append(("online_endpoints.invoke", f"{endpoint_name}/{deployment_name}"))
        with open(str(request_file), "rb") as handle:
            request = json.loads(handle.read())
        client._endpoint(endpoint_name)
        if deployment_name and (endpoint_name, deployment_name) not in client.deployments:
            raise http_error(404, f"deployment {deployment_name} not found for this endpoint")
        answer = client.invoke_answers.get(str(deployment_name))
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            return answer
        return client.scorer(str(deployment_name), request)


class _FakeOnlineDeployments:
    def __init__(self, client: FakeMLClient) -> None:
        self.client = client

    def get(self, name: str, endpoint_name: str, *, local: bool = False) -> OnlineDeployment:
        self.client.calls.append(("online_deployments.get", name))
        record = self.client.deployments.get((endpoint_name, name))
        if record is None:
            raise ResourceNotFoundError(f"deployment {name} not found")
        entity = copy.deepcopy(record.entity)
        entity._provisioning_state = record.states.next()
        return entity

    def list(self, endpoint_name: str, *, local: bool = False) -> list[OnlineDeployment]:
        self.client.calls.append(("online_deployments.list", endpoint_name))
        out = []
        for (endpoint, _), record in sorted(self.client.deployments.items()):
            if endpoint == endpoint_name:
                entity = copy.deepcopy(record.entity)
                entity._provisioning_state = record.states.peek()
                out.append(entity)
        return out

    def begin_create_or_update(self, deployment: OnlineDeployment, **kwargs: Any) -> FakePoller:
        client = self.client
        endpoint, name = str(deployment.endpoint_name), str(deployment.name)
        client.calls.append(("online_deployments.begin_create_or_update", name))
        client._endpoint(endpoint)  # the SDK gets the endpoint first
        # The concrete classes take the location, as the SDK's operation calls them.
        wire = deployment._to_rest_object(location=LOCATION).as_dict()  # type: ignore[call-arg]
        client._refuse_if_busy(endpoint, f"create deployment {name}")
        client.deployment_wire[name] = wire
        final = "Failed" if name in client.fail_provisioning else "Succeeded"
        final = "Creating" if name in client.stuck_provisioning else final
        client.deployments[(endpoint, name)] = _Deployment(
            copy.deepcopy(deployment), _States(final, ["Creating"] * client.busy_polls)
        )
        return FakePoller(deployment)

    def begin_delete(self, name: str, endpoint_name: str, *, local: bool = False) -> FakePoller:
        client = self.client
        client.calls.append(("online_deployments.begin_delete", name))
        if (endpoint_name, name) not in client.deployments:
            raise ResourceNotFoundError(f"deployment {name} not found")
        client._refuse_if_busy(endpoint_name, f"delete deployment {name}")
        if client.endpoints[endpoint_name].traffic.get(name):
            raise http_error(400, f"deployment {name} takes traffic and cannot be deleted")
        del client.deployments[(endpoint_name, name)]
        return FakePoller(None)
