"""The `local` target: point the local scoring server (`stockops serve`) at a new version.

The local server runs `stockops serve --model models:/NAME@serving` and follows the
registered model's `serving` alias (see docs/serving.md: an alias URI is polled and
hot-swapped, `POST /v1/models/reload` polls at once). Rolling out version V:

1. read the `serving` alias (the previous version) and check the server answers;
2. if the alias is V already and the server reports V and is ready, change nothing;
3. move the alias to V and `POST /v1/models/reload` (with `X-API-Key` from
   `STOCKOPS_API_KEY` when set);
4. wait up to `readinessTimeoutSeconds` until `GET /v1/models` reports V (and the registered
   model's name) and `/readyz` is 200;
5. on failure (the reload reports a load error, or V is not served in time) with
   `autoRollback`: the alias goes back to the previous version (or is deleted if there was
   none), the server reloads, and `RolloutFailedError` says what serves now.

The smoke test is the server's: it swaps a version in only after one finite forecast on
synthetic bars (`server.slot.warm_up`), so `GET /v1/models` reporting V means V forecast once.

Limits: one server, so there are no canary steps (`steps` is `[100]`); no prediction on real
bars is made here (that needs `min_bars` recent bars per ticker). The server must be running:
one that does not answer before anything changed raises `ServiceUnavailableError`. A host of
0.0.0.0 or :: (bind everywhere) is reached on the loopback address.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import httpx

from stockops_model.deploy.base import (
    Clock,
    Release,
    RolloutFailedError,
    RolloutResult,
    SystemClock,
)
from stockops_model.errors import ServiceUnavailableError
from stockops_model.server.command import API_KEY_ENV, API_KEY_HEADER  # light: no FastAPI
from stockops_model.spec import LocalServingSpec, RolloutSpec, StockModel
from stockops_model.tracking import is_not_found

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SERVING_ALIAS = "serving"
POLL_SECONDS = 0.5
_REQUEST_TIMEOUT_S = 10.0


def server_url(settings: LocalServingSpec) -> str:
    """The base URL of the local server (`http://host:port`), loopback for a wildcard bind."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _error_message(reply: httpx.Response) -> str | None:
    """The `error.message` of the server's error body, if it has one."""
    try:
        error = reply.json().get("error") or {}
    except ValueError:
        return None
    message = error.get("message") if isinstance(error, dict) else None
    return f"{reply.status_code}: {message}" if message else None


class _NotServingError(Exception):
    """The server did not come to serve the new version (internal)."""


class LocalTarget:
    """Roll versions out to the local scoring server through the `serving` alias."""

    name = "local"

    def __init__(
        self,
        registry: MlflowClient,
        base_url: str,
        *,
        api_key: str | None = None,
        clock: Clock | None = None,
        poll_seconds: float = POLL_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.registry = registry
        self.base_url = base_url.rstrip("/")
        self.clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._not_loaded = "no model loaded (503)"  # what the last 503 said
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=_REQUEST_TIMEOUT_S,
            transport=transport,
        )

    def close(self) -> None:
        """Close the HTTP connections to the server."""
        self.http.close()

    @property
    def endpoint_url(self) -> str:
        return f"{self.base_url}/v1/predict"

    # -- what is there ------------------------------------------------------------------------

    def alias_version(self, model_name: str) -> str | None:
        """The version under the `serving` alias, None when there is no such alias (or model).

        Raises:
            ServiceUnavailableError: the registry cannot be read.
        """
        from mlflow.exceptions import MlflowException

        try:
            return str(self.registry.get_model_version_by_alias(model_name, SERVING_ALIAS).version)
        except MlflowException as exc:
            if is_not_found(exc):
                return None
            raise ServiceUnavailableError(f"MLflow registry: {exc}") from None

    def _loaded(self) -> dict[str, Any] | None:
        """GET /v1/models: the loaded model, None while none is (503)."""
        reply = self.http.get("/v1/models")
        if reply.status_code == 503:
            self._not_loaded = _error_message(reply) or "no model loaded (503)"
            return None
        reply.raise_for_status()
        body: dict[str, Any] = reply.json()
        return body

    def serving_version(self) -> str | None:
        try:
            loaded = self._loaded()
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"local server {self.base_url}: {exc}") from None
        return None if loaded is None else str(loaded.get("version"))

    def _ready(self) -> bool:
        return self.http.get("/readyz").status_code == 200

    # -- the rollout --------------------------------------------------------------------------

    def rollout(self, release: Release, policy: RolloutSpec) -> RolloutResult:
        name, version = release.model_name, release.version
        previous = self.alias_version(name)
        try:
            self.http.get("/healthz").raise_for_status()
            loaded = self._loaded()
            ready = self._ready()
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"local server {self.base_url} does not answer ({exc}); start it with "
                f"`stockops serve --model models:/{name}@{SERVING_ALIAS}`"
            ) from None
        reported = None if loaded is None else str(loaded.get("version"))
        if previous == version and reported == version and ready:
            return self._result(
                release,
                serving=version,
                previous=previous,
                message=f"version {version} already serves; nothing changed",
                steps=[],
            )
        self.registry.set_registered_model_alias(name, SERVING_ALIAS, version)
        log.info("alias %s of %s -> version %s (was %s)", SERVING_ALIAS, name, version, previous)
        try:
            self._reload(release, policy)
            self._wait_serving(release, policy)
        except _NotServingError as exc:
            return self._fail(release, policy, previous, str(exc))
        return self._result(
            release,
            serving=version,
            previous=previous,
            message=f"version {version} serves (was {previous or 'none'})",
        )

    def _reload(self, release: Release, policy: RolloutSpec) -> None:
        try:
            # Loading a model can take a while: the reload answers once it is done.
            reply = self.http.post(
                "/v1/models/reload", timeout=float(policy.readiness_timeout_seconds)
            )
        except httpx.HTTPError as exc:
            # The server polls the alias on its own too: keep waiting for it.
            log.warning("reload request failed (%s); waiting for the server's own poll", exc)
            return
        if reply.status_code == 401:
            raise _NotServingError(f"the server refused the reload (401): set {API_KEY_ENV}")
        if reply.status_code >= 400 and reply.status_code != 503:
            raise _NotServingError(f"reload answered {reply.status_code}: {reply.text[:300]}")
        if reply.status_code == 200:
            body = reply.json()
            error = body.get("last_reload_error")
            if str(body.get("version")) != release.version and error:
                raise _NotServingError(f"the server could not load {release.model_uri}: {error}")

    def _wait_serving(self, release: Release, policy: RolloutSpec) -> None:
        deadline = self.clock.monotonic() + policy.readiness_timeout_seconds
        last = "no answer yet"
        while True:
            try:
                loaded = self._loaded()
                if loaded is None:
                    last = self._not_loaded
                elif str(loaded.get("version")) != release.version:
                    last = f"version {loaded.get('version')} loaded"
                    if loaded.get("last_reload_error"):
                        last += f", last reload error: {loaded['last_reload_error']}"
                elif loaded.get("name") != release.model_name:
                    raise _NotServingError(
                        f"the server serves {loaded.get('name')!r}, not {release.model_name!r}"
                    )
                elif self._ready():
                    return
                else:
                    last = "/readyz is not 200"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if self.clock.monotonic() >= deadline:
                raise _NotServingError(
                    f"version {release.version} not served within "
                    f"{policy.readiness_timeout_seconds} s ({last})"
                )
            self.clock.sleep(self.poll_seconds)

    def _fail(
        self, release: Release, policy: RolloutSpec, previous: str | None, why: str
    ) -> RolloutResult:
        name = release.model_name
        if not policy.auto_rollback:
            message = f"{why}; autoRollback is off, the alias stays on {release.version}"
            raise RolloutFailedError(
                message,
                self._result(release, serving=None, previous=previous, message=message),
            )
        if previous is None:
            self.registry.delete_registered_model_alias(name, SERVING_ALIAS)
        else:
            self.registry.set_registered_model_alias(name, SERVING_ALIAS, previous)
        try:
            self.http.post("/v1/models/reload", timeout=float(policy.readiness_timeout_seconds))
            serving = self.serving_version()
        except (httpx.HTTPError, ServiceUnavailableError) as exc:
            log.warning("reload after the rollback failed: %s", exc)
            serving = None
        restored = (
            f"alias {SERVING_ALIAS} back on version {previous}"
            if previous
            else (f"alias {SERVING_ALIAS} removed (there was none before)")
        )
        message = f"{why}; rolled back: {restored}"
        log.warning("%s", message)
        result = self._result(
            release, serving=serving, previous=previous, message=message, rolled_back=True
        )
        raise RolloutFailedError(message, result)

    def _result(
        self,
        release: Release,
        *,
        serving: str | None,
        previous: str | None,
        message: str,
        rolled_back: bool = False,
        steps: list[int] | None = None,
    ) -> RolloutResult:
        return RolloutResult(
            target=self.name,
            requested_version=release.version,
            serving_version=serving,
            previous_version=previous,
            endpoint_url=self.endpoint_url,
            traffic={serving: 100} if serving else {},
            rolled_back=rolled_back,
            message=message,
            # One server: the new version takes all traffic at once.
            steps=([100] if serving == release.version else []) if steps is None else steps,
        )


def build_target(model: StockModel, tracking_uri: str) -> LocalTarget:
    """The local target of `model`: its `spec.serving.local` server and the MLflow registry."""
    from stockops_model.tracking import connect_mlflow

    return LocalTarget(
        connect_mlflow(tracking_uri),
        server_url(model.spec.serving.local),
        api_key=os.environ.get(API_KEY_ENV) or None,
    )
