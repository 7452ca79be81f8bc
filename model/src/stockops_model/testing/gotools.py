"""Tools the tests build from pinned Go modules: the Kubernetes control plane, helm, tofu.

Each tool is named by a `tool` directive of a small Go module under `tools/` in the
repository (`tools/kube`, `tools/helm`, `tools/tofu`), which pins its exact version and
dependencies in `go.mod` and `go.sum`. `install()` builds them with the machine's Go toolchain
and the Go module proxy into the shared cache (`STOCKOPS_CACHE`):
`<cache>/<module>/<version>-<hash of go.mod, go.sum and build flags>/<tool>`, published whole
by `install_once`, so a second run does nothing and a change of pin builds afresh.

Limits: needs Go 1.26.6 or newer on PATH (or in /usr/local/go) and a checkout of the
repository (the pins live there, not in the wheel); a first build takes minutes of CPU
(docs/testing-kube.md has the figures). Binaries are static (`CGO_ENABLED=0`) and stripped.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stockops_model.errors import ServiceUnavailableError
from stockops_model.testing.cache import cache_dir, install_once, is_installed
from stockops_model.testing.processes import run_logged

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.36.3"
HELM_VERSION = "v3.22.0"
TOFU_VERSION = "v1.12.6"
# The Kubernetes minor that helm's client libraries come from (k8s.io/client-go in
# tools/helm/go.mod): helm's default .Capabilities.KubeVersion for `helm template`.
HELM_KUBE_MINOR = "37"

_BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class _Tool:
    """One Go binary: the module folder under tools/ that pins it, its package, its link flags."""

    name: str
    module: str
    version: str
    package: str
    ldflags: str


def _kube_ldflags() -> str:
    major, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
    var = "k8s.io/component-base/version"
    # Without these the binaries report v0.0.0 from /version, and clients that compare
    # server versions (helm's kubeVersion check) would refuse them.
    return (
        f"-s -w -X {var}.gitVersion={KUBERNETES_VERSION} -X {var}.gitMajor={major}"
        f" -X {var}.gitMinor={minor} -X {var}.gitTreeState=clean"
    )


def _helm_ldflags() -> str:
    pkg = "helm.sh/helm/v3"
    return (
        f"-s -w -X {pkg}/internal/version.version={HELM_VERSION}"
        f" -X {pkg}/pkg/chartutil.k8sVersionMajor=1"
        f" -X {pkg}/pkg/chartutil.k8sVersionMinor={HELM_KUBE_MINOR}"
        f" -X {pkg}/pkg/lint/rules.k8sVersionMajor=1"
        f" -X {pkg}/pkg/lint/rules.k8sVersionMinor={HELM_KUBE_MINOR}"
    )


TOOLS = (
    _Tool(
        "kube-apiserver",
        "kube",
        KUBERNETES_VERSION,
        "k8s.io/kubernetes/cmd/kube-apiserver",
        _kube_ldflags(),
    ),
    _Tool(
        "kube-controller-manager",
        "kube",
        KUBERNETES_VERSION,
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        _kube_ldflags(),
    ),
    _Tool("helm", "helm", HELM_VERSION, "helm.sh/helm/v3/cmd/helm", _helm_ldflags()),
    # Without dev=no, OpenTofu calls itself a development build (its release flags).
    _Tool(
        "tofu",
        "tofu",
        TOFU_VERSION,
        "github.com/opentofu/opentofu/cmd/tofu",
        "-s -w -X github.com/opentofu/opentofu/version.dev=no",
    ),
)


def tools_dir() -> Path:
    """Return the repository's `tools/` folder, which pins the Go modules to build.

    Raises:
        ServiceUnavailableError: when this package is not run from a checkout of the repository.
    """
    for parent in Path(__file__).resolve().parents:
        if (parent / "tools" / "kube" / "go.mod").is_file():
            return parent / "tools"
    raise ServiceUnavailableError(
        f"tools/kube/go.mod not found above {Path(__file__).resolve()}: "
        "run from a checkout of the stockops repository"
    )


def _go_binary() -> str:
    for candidate in (shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ServiceUnavailableError("the Go toolchain (`go`) is not installed; install Go 1.26+")


def _modules(names: Sequence[str] | None = None) -> dict[str, list[_Tool]]:
    modules: dict[str, list[_Tool]] = {}
    for tool in TOOLS:
        if names is None or tool.name in names:
            modules.setdefault(tool.module, []).append(tool)
    return modules


def _install_dir(cache: Path, module: str, tools: Path) -> Path:
    """Return the cache folder of one module's binaries, named by version and build inputs."""
    members = _modules()[module]
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((tools / module / name).read_bytes())
    for tool in members:
        digest.update(f"{tool.name}\0{tool.package}\0{tool.ldflags}\0".encode())
    return cache / module / f"{members[0].version}-{digest.hexdigest()[:12]}"


def binary(name: str, cache: Path | None = None) -> Path:
    """Return where `install` puts a tool (`kube-apiserver`, `helm`, `tofu`, ...)."""
    for tool in TOOLS:
        if tool.name == name:
            return _install_dir(cache or cache_dir(), tool.module, tools_dir()) / name
    raise KeyError(name)


def install(cache: Path | None = None, names: Sequence[str] | None = None) -> None:
    """Build the tools (all, or those in `names`) into the cache unless they are there.

    A module's binaries are built together and published at once, so asking for one
    `kube` tool builds both. Build logs go to `<cache>/logs/build-<tool>.log`.

    Raises:
        ServiceUnavailableError: when Go or the pinned modules are missing, or a build fails
            (the message quotes the end of the build log).
    """
    cache = cache or cache_dir()
    tools = tools_dir()
    for module in _modules(names):
        target = _install_dir(cache, module, tools)
        if not is_installed(target):
            install_once(target, functools.partial(_build, module, cache=cache, tools=tools))


def _build(module: str, staging: Path, *, cache: Path, tools: Path) -> None:
    go = _go_binary()
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    env.setdefault("GOTOOLCHAIN", "local")
    for tool in _modules()[module]:
        log.info("building %s %s with Go (minutes on a fresh machine)", tool.name, tool.version)
        started = time.monotonic()
        run_logged(
            [
                go,
                "build",
                "-trimpath",
                f"-ldflags={tool.ldflags}",
                "-o",
                str(staging / tool.name),
                tool.package,
            ],
            cache / "logs" / f"build-{tool.name}.log",
            what=f"go build {tool.package}",
            timeout=_BUILD_TIMEOUT_S,
            env=env,
            cwd=tools / module,
        )
        log.info("built %s in %.0f s", tool.name, time.monotonic() - started)


class ToolFailedError(subprocess.CalledProcessError):
    """A tool exited non-zero; unlike its base class, the message quotes what it said."""

    def __str__(self) -> str:
        # `helm lint` and `tofu fmt -check` print their findings on stdout, not stderr.
        return f"{super().__str__()}\n{self.stdout[-4000:]}{self.stderr}"


def run_tool(
    name: str,
    *args: str,
    cache: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a built tool with `args` and return its completed process (output as text).

    helm's cache, config and data folders go under `<cache>/helm-home`, and tofu reads an empty
    CLI configuration, so a test never depends on the user's helm repositories nor tofu
    settings (a `TF_CLI_CONFIG_FILE` naming a missing file would make tofu print a warning).

    Raises:
        ToolFailedError: when the tool exits non-zero; its message quotes the tool's output.
    """
    cache = cache or cache_dir()
    home = cache / "helm-home"
    tofurc = cache / "tofu-home" / "tofurc"
    if name == "tofu" and not tofurc.is_file():
        tofurc.parent.mkdir(parents=True, exist_ok=True)
        tofurc.write_text("# empty: tests use no provider mirrors nor credentials\n")
    private = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "TF_CLI_CONFIG_FILE": str(tofurc),
    }
    result = subprocess.run(
        [str(binary(name, cache)), *args],
        env={**os.environ, **private, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ToolFailedError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def run_helm(
    *args: str,
    cache: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the built helm (see `run_tool`)."""
    return run_tool("helm", *args, cache=cache, env=env, cwd=cwd)


def run_tofu(
    *args: str,
    cache: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the built OpenTofu, e.g. `run_tofu("fmt", "-check", "-recursive", cwd=infra)`."""
    return run_tool("tofu", *args, cache=cache, env=env, cwd=cwd)
