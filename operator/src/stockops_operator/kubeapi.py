"""A small async client for the few Kubernetes API calls the operator makes.

kopf watches the custom resources and posts Events with its own client; this one creates,
applies, lists and deletes the objects the operator owns (ConfigMaps, Deployments, Jobs) and
writes status, over plain JSON with httpx. It reads the same credentials kopf does: the
kubeconfig in `KUBECONFIG` (tests, development) or the Pod's ServiceAccount (in a cluster,
re-reading the token file on each request, as projected tokens rotate).

Errors: `KubeApiError` carries the HTTP status; `retryable` says whether trying again later
can help (timeouts, 409 conflicts on writes, 429, 5xx; also 403 so an RBAC fix is picked up).

Limits: no exec-plugin or OIDC auth-provider kubeconfigs; no watch (kopf does that).
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

FIELD_MANAGER = "stockops-operator"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeApiError(Exception):
    """The API server refused a call or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status in (0, 403, 409, 429) or self.status >= 500


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: `apps/v1` + `deployments`."""

    api_version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        out = f"{root}/namespaces/{quote(namespace)}/{self.plural}"
        if name is not None:
            out += "/" + quote(name)
        if sub is not None:
            out += "/" + sub
        return out


CONFIGMAPS = Resource("v1", "configmaps")
PODS = Resource("v1", "pods")
DEPLOYMENTS = Resource("apps/v1", "deployments")
JOBS = Resource("batch/v1", "jobs")
STOCKMODELS = Resource("stockops.io/v1alpha1", "stockmodels")
RETRAINSCHEDULES = Resource("stockops.io/v1alpha1", "retrainschedules")
_BY_KIND = {
    "ConfigMap": CONFIGMAPS,
    "Deployment": DEPLOYMENTS,
    "Job": JOBS,
    "Pod": PODS,
    "StockModel": STOCKMODELS,
    "RetrainSchedule": RETRAINSCHEDULES,
}


def resource_of(manifest: Mapping[str, Any]) -> Resource:
    """The `Resource` of a manifest, from its kind."""
    return _BY_KIND[str(manifest["kind"])]


class _TokenFileAuth(httpx.Auth):
    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self.path.read_text().strip()
        yield request


class _TokenAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self.token
        yield request


def _write_temp(data: str, suffix: str) -> str:
    # ssl needs files for client certificates; they live as long as the process.
    handle = tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False)  # noqa: SIM115
    with handle:
        handle.write(base64.b64decode(data))
    return handle.name


def _from_kubeconfig(path: str) -> tuple[str, ssl.SSLContext, httpx.Auth | None]:
    config = yaml.safe_load(Path(path).read_text()) or {}
    ctx_name = config.get("current-context")
    context = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    ssl_ctx = ssl.create_default_context()
    if cluster.get("certificate-authority-data"):
        ssl_ctx.load_verify_locations(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif cluster.get("certificate-authority"):
        ssl_ctx.load_verify_locations(cafile=cluster["certificate-authority"])
    if cluster.get("insecure-skip-tls-verify"):
        ssl_ctx.check_hostname = False
        ssl_ctx.verify_mode = ssl.CERT_NONE
    cert = user.get("client-certificate") or (
        _write_temp(user["client-certificate-data"], ".crt")
        if user.get("client-certificate-data")
        else None
    )
    key = user.get("client-key") or (
        _write_temp(user["client-key-data"], ".key") if user.get("client-key-data") else None
    )
    if cert and key:
        ssl_ctx.load_cert_chain(cert, key)
    auth: httpx.Auth | None = None
    if user.get("token"):
        auth = _TokenAuth(str(user["token"]))
    elif user.get("tokenFile"):
        auth = _TokenFileAuth(Path(user["tokenFile"]))
    return str(cluster["server"]), ssl_ctx, auth


class KubeApi:
    """JSON calls to the API server; one instance per operator process."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @classmethod
    def from_environment(cls, timeout: float = 30.0) -> KubeApi:
        """Connect with `KUBECONFIG` if set, else with the Pod's ServiceAccount."""
        kubeconfig = os.environ.get("KUBECONFIG")
        auth: httpx.Auth | None
        if kubeconfig:
            server, ssl_ctx, auth = _from_kubeconfig(kubeconfig.split(os.pathsep)[0])
        else:
            host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            server = f"https://{host}:{port}"
            ssl_ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
            auth = _TokenFileAuth(SA_DIR / "token")
        # Keep every connection of a burst alive: a new TLS handshake per request costs more
        # CPU than the request itself when hundreds of objects are created at once.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        client = httpx.AsyncClient(
            base_url=server, verify=ssl_ctx, auth=auth, timeout=timeout, limits=limits
        )
        return cls(client)

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        try:
            response = await self.client.request(
                method,
                path,
                json=body,
                params=params,
                headers={"Content-Type": content_type} if body is not None else None,
            )
        except httpx.HTTPError as exc:
            raise KubeApiError(0, f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise KubeApiError(response.status_code, f"{method} {path}: {message}")
        return response.json()

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            result: dict[str, Any] = await self._call("GET", resource.path(namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list_objects(
        self, resource: Resource, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """Objects matching a label selector."""
        result = await self._call(
            "GET", resource.path(namespace), params={"labelSelector": label_selector}
        )
        return list(result.get("items") or [])

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create an object; False if one with that name already exists (not an error)."""
        resource = resource_of(manifest)
        try:
            await self._call(
                "POST", resource.path(manifest["metadata"]["namespace"]), body=manifest
            )
        except KubeApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking over conflicting fields."""
        meta = manifest["metadata"]
        result: dict[str, Any] = await self._call(
            "PATCH",
            resource_of(manifest).path(meta["namespace"], meta["name"]),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        return result

    async def patch_status(
        self, resource: Resource, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patch the status subresource (None values remove fields)."""
        try:
            await self._call(
                "PATCH",
                resource.path(namespace, name, "status"),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except KubeApiError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to report on
                raise

    async def patch_annotations(
        self, resource: Resource, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        """Merge-patch annotations of an object (None removes one)."""
        await self._call(
            "PATCH",
            resource.path(namespace, name),
            body={"metadata": {"annotations": dict(annotations)}},
            content_type="application/merge-patch+json",
        )

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete with background propagation (dependents go via the GC); False if absent."""
        try:
            await self._call(
                "DELETE",
                resource.path(namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True
