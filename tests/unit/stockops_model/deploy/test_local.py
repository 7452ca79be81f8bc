"""The local target against the real MLflow registry, a fake and the real scoring server.

`FakeScoringServer` answers the routes of the scoring server contract that the local target
uses (/healthz, /readyz, GET /v1/models, POST /v1/models/reload), on 127.0.0.1. Like the
real server started with `--model models:/NAME@serving`, a reload reads the `serving` alias
from the real MLflow registry; the fake only pretends to load the version (some versions are
told to fail to load, or the reload is ignored). The versions it serves are empty runs'
folders: nothing is loaded for real. The last test runs the real `stockops serve` on naive
forecasts registered for real, and a version whose artifacts are not a model.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from stockops_model.deploy.base import Release, RolloutFailedError
from stockops_model.deploy.local import SERVING_ALIAS, LocalTarget, server_url
from stockops_model.errors import ExitCode, ServiceUnavailableError
from stockops_model.spec import LocalServingSpec, RolloutSpec
from stockops_model.testing import MlflowServer
from stockops_model.testing.ports import pick_free_port
from stockops_model.testing.scoring import scoring_server

POLICY = RolloutSpec.model_validate({"readinessTimeoutSeconds": 30})


class FakeClock:
    """A fake clock: `sleep` only moves `monotonic` on."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeScoringServer:
    """A fake `stockops serve --model models:/NAME@serving` (the routes deploy/local uses)."""

    def __init__(
        self,
        registry: MlflowClient,
        model_name: str,
        *,
        api_key: str | None = None,
        broken_versions: frozenset[str] = frozenset(),
        ignore_reloads: bool = False,
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self.api_key = api_key
        self.broken_versions = broken_versions
        self.ignore_reloads = ignore_reloads
        self.version: str | None = None
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> FakeScoringServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def reload(self) -> None:
        """Follow the alias, as the real server's poll does."""
        self.reloads += 1
        if self.ignore_reloads:
            return
        try:
            version = str(
                self.registry.get_model_version_by_alias(self.model_name, SERVING_ALIAS).version
            )
        except MlflowException:
            return  # no alias: keep what is loaded
        if version in self.broken_versions:
            self.last_reload_error = f"models:/{self.model_name}/{version}: cannot load the model"
            return
        self.version, self.last_reload_error = version, None

    def models_body(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "version": self.version,
            "uri": f"models:/{self.model_name}@{SERVING_ALIAS}",
            "alias": SERVING_ALIAS,
            "reloads": self.reloads,
            "last_reload_error": self.last_reload_error,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._send(200, {"status": "ok"})
                elif self.path == "/readyz":
                    self._send(200 if fake.version else 503, {})
                elif self.path == "/v1/models":
                    loaded = fake.version is not None
                    self._send(200 if loaded else 503, fake.models_body())
                else:
                    self._send(404, {})

            def do_POST(self) -> None:
                if self.path != "/v1/models/reload":
                    self._send(404, {})
                elif fake.api_key and self.headers.get("X-API-Key") != fake.api_key:
                    self._send(401, {"error": {"reason": "unauthorized", "message": "key"}})
                else:
                    fake.reload()
                    self._send(200 if fake.version else 503, fake.models_body())

        return Handler


@pytest.fixture
def registry(mlflow_server: MlflowServer) -> MlflowClient:
    return MlflowClient(mlflow_server.tracking_uri)


@pytest.fixture
def model_name(registry: MlflowClient, tmp_path: Path) -> str:
    """A registered model with versions 1, 2 and 3 (empty folders: the fake loads nothing)."""
    name = f"local-{uuid.uuid4().hex[:8]}"
    registry.create_registered_model(name)
    experiment = registry.create_experiment(name)
    for _ in range(3):
        run = registry.create_run(experiment)
        registry.log_text(run.info.run_id, "placeholder", "model/MLmodel")
        registry.create_model_version(
            name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        registry.set_terminated(run.info.run_id)
    return name


def alias(registry: MlflowClient, name: str) -> str | None:
    try:
        return str(registry.get_model_version_by_alias(name, SERVING_ALIAS).version)
    except MlflowException:
        return None


@contextlib.contextmanager
def serving(
    registry: MlflowClient, name: str, **fake: Any
) -> Iterator[tuple[FakeScoringServer, LocalTarget]]:
    api_key = fake.pop("client_key", fake.get("api_key"))
    with FakeScoringServer(registry, name, **fake) as server:
        target = LocalTarget(
            registry, server.url, api_key=api_key, clock=FakeClock(), poll_seconds=1.0
        )
        yield server, target


def test_a_first_rollout_sets_the_alias_and_the_server_loads_it(
    registry: MlflowClient, model_name: str
) -> None:
    with serving(registry, model_name) as (server, target):
        result = target.rollout(Release(model_name, "1", "unused"), POLICY)

        assert result.succeeded
        assert (result.serving_version, result.previous_version) == ("1", None)
        assert result.traffic == {"1": 100}
        assert result.steps == [100]
        assert result.endpoint_url == f"{server.url}/v1/predict"
        assert alias(registry, model_name) == "1"
        assert target.serving_version() == "1"


def test_a_new_version_moves_the_alias_and_the_server_follows(
    registry: MlflowClient, model_name: str
) -> None:
    with serving(registry, model_name) as (server, target):
        target.rollout(Release(model_name, "1", "unused"), POLICY)

        result = target.rollout(Release(model_name, "2", "unused"), POLICY)

        assert result.succeeded
        assert (result.serving_version, result.previous_version) == ("2", "1")
        assert alias(registry, model_name) == "2"
        assert server.version == "2"


def test_rolling_out_the_version_already_serving_changes_nothing(
    registry: MlflowClient, model_name: str
) -> None:
    with serving(registry, model_name) as (server, target):
        target.rollout(Release(model_name, "1", "unused"), POLICY)
        reloads = server.reloads

        result = target.rollout(Release(model_name, "1", "unused"), POLICY)

        assert result.succeeded
        assert "nothing changed" in result.message
        assert server.reloads == reloads


def test_a_version_the_server_cannot_load_is_rolled_back(
    registry: MlflowClient, model_name: str
) -> None:
    with serving(registry, model_name, broken_versions=frozenset({"2"})) as (server, target):
        target.rollout(Release(model_name, "1", "unused"), POLICY)

        with pytest.raises(RolloutFailedError) as failed:
            target.rollout(Release(model_name, "2", "unused"), POLICY)

        result = failed.value.result
        assert result.rolled_back
        assert (result.serving_version, result.previous_version) == ("1", "1")
        assert "cannot load the model" in result.message
        assert alias(registry, model_name) == "1"
        assert server.version == "1"


def test_a_first_rollout_that_fails_removes_the_alias_it_set(
    registry: MlflowClient, model_name: str
) -> None:
    with serving(registry, model_name, broken_versions=frozenset({"1"})) as (_, target):
        with pytest.raises(RolloutFailedError) as failed:
            target.rollout(Release(model_name, "1", "unused"), POLICY)

        assert failed.value.result.rolled_back
        assert failed.value.result.serving_version is None
        assert alias(registry, model_name) is None


def test_a_server_that_never_serves_the_version_is_rolled_back_after_the_timeout(
    registry: MlflowClient, model_name: str
) -> None:
    with serving(registry, model_name) as (server, target):
        target.rollout(Release(model_name, "1", "unused"), POLICY)
        server.ignore_reloads = True

        with pytest.raises(RolloutFailedError) as failed:
            target.rollout(Release(model_name, "2", "unused"), POLICY)

        assert failed.value.result.rolled_back
        assert "not served within 30 s" in failed.value.result.message
        assert "version 1 loaded" in failed.value.result.message
        assert alias(registry, model_name) == "1"


def test_without_auto_rollback_the_alias_stays_on_the_failed_version(
    registry: MlflowClient, model_name: str
) -> None:
    policy = POLICY.model_copy(update={"auto_rollback": False})
    with serving(registry, model_name, broken_versions=frozenset({"2"})) as (_, target):
        target.rollout(Release(model_name, "1", "unused"), POLICY)

        with pytest.raises(RolloutFailedError) as failed:
            target.rollout(Release(model_name, "2", "unused"), policy)

        assert not failed.value.result.rolled_back
        assert alias(registry, model_name) == "2"


def test_the_api_key_is_sent_and_a_refused_one_says_what_to_set(
    registry: MlflowClient, model_name: str
) -> None:
    with serving(registry, model_name, api_key="s3cret") as (_, target):
        assert target.rollout(Release(model_name, "1", "unused"), POLICY).succeeded
    with serving(registry, model_name, api_key="s3cret", client_key="wrong") as (_, target):
        with pytest.raises(RolloutFailedError, match="STOCKOPS_API_KEY") as failed:
            target.rollout(Release(model_name, "2", "unused"), POLICY)
        assert failed.value.result.rolled_back
        assert alias(registry, model_name) == "1"


def test_a_server_that_is_down_changes_nothing(registry: MlflowClient, model_name: str) -> None:
    target = LocalTarget(registry, f"http://127.0.0.1:{pick_free_port()}", clock=FakeClock())

    with pytest.raises(ServiceUnavailableError, match="stockops serve"):
        target.rollout(Release(model_name, "1", "unused"), POLICY)
    assert alias(registry, model_name) is None


def test_a_wildcard_bind_is_reached_on_loopback() -> None:
    assert server_url(LocalServingSpec(host="0.0.0.0", port=8081)) == "http://127.0.0.1:8081"
    assert server_url(LocalServingSpec(host="::1", port=80)) == "http://[::1]:80"


def test_stockops_deploy_prints_the_result_line_of_a_local_rollout(
    registry: MlflowClient,
    model_name: str,
    mlflow_server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stockops_model import cli

    with serving(registry, model_name) as (server, _):
        port = int(server.url.rsplit(":", 1)[1])
        manifest = tmp_path / "stockmodel.yaml"
        manifest.write_text(
            f"""
apiVersion: stockops.io/v1alpha1
kind: StockModel
metadata: {{name: local-deploy}}
spec:
  tickers: [SPY]
  storage: {{path: {tmp_path / "bars"}}}
  mlflow: {{trackingUri: "{mlflow_server.tracking_uri}", modelName: {model_name}}}
  serving:
    target: local
    local: {{host: 127.0.0.1, port: {port}}}
"""
        )
        monkeypatch.setenv("STOCKOPS_TERMINATION_LOG", str(tmp_path / "termination-log"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main(["deploy", "-f", str(manifest), "--version", "3"])

    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert code == ExitCode.OK
    assert line["target"] == "local"
    assert (line["serving_version"], line["succeeded"]) == ("3", True)
    assert line["endpoint_url"] == f"http://127.0.0.1:{port}/v1/predict"
    assert alias(registry, model_name) == "3"


# --- the real scoring server -----------------------------------------------------------------

DATA = Path(__file__).parents[3] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
API_KEY = "deploy-test-key"


def register_naive(tracking_uri: str, name: str) -> str:
    """Register the naive forecast (a real, loadable pyfunc) as a new version; its number."""
    import mlflow

    from stockops_model import registry
    from stockops_model.forecaster import NaiveForecaster
    from stockops_model.loaders import load_bars

    bars = load_bars(DATA, TICKERS)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name="naive"):
        info = registry.log_forecaster(
            NaiveForecaster(TICKERS, 1), bars, registered_model_name=name
        )
    return str(info.registered_model_version)


@contextlib.contextmanager
def real_server(tracking_uri: str, name: str, folder: Path) -> Iterator[str]:
    """`stockops serve --model models:/NAME@serving` with an API key, on a free port; its URL."""
    with scoring_server(
        f"models:/{name}@{SERVING_ALIAS}",
        tracking_uri,
        folder,
        api_key=API_KEY,
        poll_seconds=3600,  # only the deploy's reload moves it here, not the server's own poll
    ) as server:
        yield server.url


@pytest.mark.slow
def test_the_real_server_follows_rollouts_and_a_version_it_cannot_load_is_rolled_back(
    registry: MlflowClient, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    name = f"real-{uuid.uuid4().hex[:8]}"
    first = register_naive(mlflow_server.tracking_uri, name)
    second = register_naive(mlflow_server.tracking_uri, name)
    experiment = registry.get_experiment_by_name(name)
    assert experiment is not None
    run = registry.create_run(experiment.experiment_id)
    registry.log_text(run.info.run_id, "not a model", "model/README")
    broken = registry.create_model_version(
        name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    ).version
    policy = RolloutSpec.model_validate({"readinessTimeoutSeconds": 120})

    with real_server(mlflow_server.tracking_uri, name, tmp_path) as url:
        target = LocalTarget(registry, url, api_key=API_KEY)
        # nothing loaded yet, and the version cannot be: the timeout quotes the server's 503
        quick = RolloutSpec.model_validate({"readinessTimeoutSeconds": 10})
        with pytest.raises(RolloutFailedError) as never:
            target.rollout(Release(name, str(broken), "unused"), quick)
        assert never.value.result.rolled_back
        assert f"cannot load version {broken}" in never.value.result.message
        assert alias(registry, name) is None

        assert target.rollout(Release(name, first, "unused"), policy).serving_version == first
        result = target.rollout(Release(name, second, "unused"), policy)
        assert (result.serving_version, result.previous_version) == (second, first)
        # the swap is real: the server answers with the new version
        bars = [
            {
                "symbol": s,
                "ts": "2018-03-08T14:30:00Z",
                "open": 10,
                "high": 11,
                "low": 9,
                "close": 10.5,
                "volume": 100,
            }
            for s in TICKERS
        ]
        answer = httpx.post(
            f"{url}/v1/predict", json={"bars": bars}, headers={"X-API-Key": API_KEY}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == second

        with pytest.raises(RolloutFailedError) as failed:
            target.rollout(Release(name, str(broken), "unused"), policy)

        assert failed.value.result.rolled_back
        assert failed.value.result.serving_version == second
        assert f"cannot load version {broken}" in failed.value.result.message
        assert alias(registry, name) == second
        assert target.serving_version() == second
