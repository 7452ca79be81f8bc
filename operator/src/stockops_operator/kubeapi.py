"""A small async client for the few Kubernetes API calls the operator makes.

kopf watches the custom resources and posts Events with its own client; this one creates,
applies, lists and deletes the objects the operator owns (ConfigMaps, Deployments, Jobs) and
writes status, over plain JSON with aiohttp (kopf's own HTTP library, so nothing more is
loaded). It reads the same credentials kopf does: the kubeconfig in `KUBECONFIG` (tests,
development) or the Pod's ServiceAccount (in a cluster, re-reading the token file on each
request, as projected tokens rotate).

Why aiohttp and not httpx: under a burst of creations httpcore's connection pool rescans
every queued request against every connection on each assignment, and looks up `sniffio`
with a failed import each time it creates a lock; measured with cProfile on
bench/operator_scale.py, that was about half of the operator's CPU time.

Errors: `KubeApiError` carries the HTTP status; `retryable` says whether trying again later
can help (timeouts, 409 conflicts on writes, 429, 5xx; also 403 so an RBAC fix is picked up).

Limits: no exec-plugin or OIDC auth-provider kubeconfigs; no watch (kopf does that). The
client must be created inside the running event loop (kopf's startup handler).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
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


# A callable giving the Authorization header of the next request (None: client certificate).
AuthHeader = Callable[[], str | None]


def _no_auth() -> str | None:
    return None


def _token_auth(token: str) -> AuthHeader:
    return lambda: "Bearer " + token


def _token_file_auth(path: Path) -> AuthHeader:
    return lambda: "Bearer " + path.read_text().strip()


def _write_temp(data: str, suffix: str) -> str:
    # ssl needs files for client certificates; they live as long as the process.
    handle = tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False)  # noqa: SIM115
    with handle:
        handle.write(base64.b64decode(data))
    return handle.name


def _from_kubeconfig(path: str) -> tuple[str, ssl.SSLContext, AuthHeader]:
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
    auth: AuthHeader = _no_auth
    if user.get("token"):
        auth = _token_auth(str(user["token"]))
    elif user.get("tokenFile"):
        auth = _token_file_auth(Path(user["tokenFile"]))
    return str(cluster["server"]), ssl_ctx, auth


class KubeApi:
    """JSON calls to the API server; one instance per operator process."""

    def __init__(self, session: aiohttp.ClientSession, server: str, auth: AuthHeader) -> None:
        self.session = session
        self.server = server.rstrip("/")
        self.auth = auth

    @classmethod
    def from_environment(cls, timeout: float = 30.0, connections: int = 16) -> KubeApi:
        """Connect with `KUBECONFIG` if set, else with the Pod's ServiceAccount.

        Args:
            timeout: to connect, and between two reads of an answer, in seconds (waiting
                for a free connection is not limited, as with kopf's own client).
            connections: kept-alive connections at most; more requests wait for one. Keeping
                them alive matters: a new TLS handshake per request would cost more CPU
                than the request itself. bench/operator_scale.py was measured with 16.
        """
        kubeconfig = os.environ.get("KUBECONFIG")
        auth: AuthHeader
        if kubeconfig:
            server, ssl_ctx, auth = _from_kubeconfig(kubeconfig.split(os.pathsep)[0])
        else:
            host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            server = f"https://{host}:{port}"
            ssl_ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
            auth = _token_file_auth(SA_DIR / "token")
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            # Proxies and ~/.netrc are ignored, as kopf does by default.
            trust_env=False,
        )
        return cls(session, server, auth)

    async def close(self) -> None:
        await self.session.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json"}
        authorization = self.auth()
        if authorization is not None:
            headers["Authorization"] = authorization
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        try:
            async with self.session.request(
                method, self.server + path, data=data, params=params, headers=headers
            ) as response:
                status, raw = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise KubeApiError(0, f"{method} {path}: {exc!r}") from exc
        if status >= 400:
            text = raw.decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            raise KubeApiError(status, f"{method} {path}: {message}")
        return json.loads(raw)

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

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create an object and return it as created; None if one with that name already
        exists (not an error)."""
        resource = resource_of(manifest)
        try:
            created: dict[str, Any] = await self._call(
                "POST", resource.path(manifest["metadata"]["namespace"]), body=manifest
            )
        except KubeApiError as exc:
            if exc.status == 409:
                return None
            raise
        return created

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
