"""Operator scale benchmark: 200 StockModels with schedules against a real kube-apiserver.

Starts the test control plane (etcd, kube-apiserver v1.36, garbage collector), installs the
CRDs and the chart's RBAC for one namespace (rendered by the real helm), and runs the operator
as a real process (`python -m stockops_operator`) with the chart's ServiceAccount and its
default settings (schedule tick 10 s, model poll 30 s, peering off since there is one
replica). Then it creates N StockModels, each with a RetrainSchedule that asks for a run at
once (`stockops.io/run-now`), as fast as one client can, and measures for each schedule the
time from its create call returning to the first train Job appearing on a watch of Jobs.
There is no kubelet: Jobs only need to exist. The StockModels' MLflow URI points at a closed
port, so each reconcile also pays for one refused connection, as with MLflow down.

It also reads the operator's resident memory (VmRSS, and the peak VmHWM) once every Job
exists and again after one more model-poll period, and the requests the API server served.

Prints a table and ends with `reconcile_p99_s: N`. Writes the `## operator_scale` section
of docs/benchmarks.md. Run: `uv run python bench/operator_scale.py` (about 2 minutes;
`--models 20` for a quick look). Needs the kube tools built (`make services` or the e2e
fixture builds them on first use).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from stockops_model.testing.gotools import KUBERNETES_VERSION, install, run_helm
from stockops_model.testing.kube import KubeCluster
from stockops_model.testing.ports import pick_free_port

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "stockops"
DOC = ROOT / "docs" / "benchmarks.md"
NAMESPACE = "bench"
SECTION = "## operator_scale"
NOTE = """
Each schedule asks for a run at creation (`stockops.io/run-now`), so the latency is the
operator's reaction time, not a wait for a cron instant. Where the time goes: the API server
is now the busiest process (its CPU row above), then the operator. Each StockModel with its
schedule costs the operator about 14 requests: kopf's finalizer and diff-base patches (4),
the spec ConfigMap and two Deployments (3 server-side applies), two Job lists, the Job, two
status writes and two Events, plus now and then a GET of a StockModel that kopf's index
does not hold yet. The rest of the per-model count is the bench's own creates and the ticks
of schedules whose runs stay active (there is no kubelet to finish them: each such tick
lists the schedule's Jobs). One client creates the objects while the operator works, so the
creates share the API server with it and take longer than when the operator lagged behind.

At steady state Job lists are the operator's only API calls: those ticks, and each
StockModel's tick listing its deploy Jobs (it checks its workloads against kopf's indexes;
an idle schedule's tick reads nothing). The GETs of StockModels and RetrainSchedules in
that window come from another client, most likely the garbage collector checking owners.

The load average says how much other work shared the two cores: with other helpers' tests
running (load 9.5), the code before 94577c5 measured p50 4.49 s, p99 9.03 s, 8.8 s of
operator CPU and 23.2 s of kube-apiserver CPU.

Before the operator's Kubernetes client moved from httpx to aiohttp, schedules read their
StockModel from a kopf index and wrote their status once per run (commits 32ab18e, e1a5292,
94577c5), the same command measured on this machine: p50 20.5 s, p99 49.0 s, 36.9 s of
operator CPU (load 1.5); p50 26.0 s, p99 90.5 s, 37.0 s of operator CPU, kube-apiserver
28.4 s, 25.0 requests per model, operator CPU share at steady state 33.1% (load 5.4); this
section then showed p50 27.3 s, p99 82.3 s, 43.4 s of operator CPU (load 8.4). About half of
that operator CPU was httpcore's connection pool (it rescanned every queued request against
every connection) and failed imports of `sniffio` on each lock it created. Commit ce648f1
then took the steady state from 50.3 to 33.2 API requests a second (StockModel ticks no
longer GET their workloads). See docs/operator.md, Scale.
"""


def admin_client(cluster: KubeCluster, workdir: Path) -> httpx.Client:
    config = yaml.safe_load(cluster.admin_kubeconfig().read_text())
    cluster_cfg, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster_cfg["certificate-authority-data"]).decode()
    )
    cert, key = workdir / "bench.crt", workdir / "bench.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    context.load_cert_chain(str(cert), str(key))
    return httpx.Client(base_url=cluster_cfg["server"], verify=context, timeout=60)


def install_rbac(cluster: KubeCluster) -> Path:
    """CRDs, the namespace and the chart's RBAC; returns the operator SA's kubeconfig."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        cluster.apply(path.read_text())
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    rendered = run_helm(
        "template",
        "bench",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--set",
        f"watchNamespace={NAMESPACE}",
        "--set",
        "peering.enabled=false",
        "--kube-version",
        KUBERNETES_VERSION,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    cluster.apply([d for d in docs if d["kind"] not in ("Deployment", "Service")], NAMESPACE)
    operator_sa = next(
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] != "stockops-workload"
    )
    return cluster.kubeconfig_for_service_account(NAMESPACE, operator_sa)


def stockmodel(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "stockops.io/v1alpha1",
        "kind": "StockModel",
        "metadata": {"name": f"m{i:03d}", "namespace": NAMESPACE},
        "spec": {
            "tickers": ["AAPL", "MSFT"],
            "source": {"type": "synthetic"},
            "storage": {"path": "bars"},
            "mlflow": {"trackingUri": "http://127.0.0.1:9", "modelName": f"m{i:03d}"},
        },
    }


def schedule(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "stockops.io/v1alpha1",
        "kind": "RetrainSchedule",
        "metadata": {
            "name": f"m{i:03d}-every-15m",
            "namespace": NAMESPACE,
            "annotations": {"stockops.io/run-now": "bench"},
        },
        "spec": {"modelRef": {"name": f"m{i:03d}"}, "interval": "15m"},
    }


def watch_jobs(client: httpx.Client, seen: dict[str, float], stop: threading.Event) -> None:
    """Record when each schedule's first Job is seen (a watch: no polling delay)."""
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    while not stop.is_set():
        try:
            _watch_once(client, path, seen, stop)
        except httpx.HTTPError:
            if stop.is_set():  # the API server went away at the end of the run
                return
            raise


def _watch_once(
    client: httpx.Client, path: str, seen: dict[str, float], stop: threading.Event
) -> None:
    params = {"watch": "true", "timeoutSeconds": "30", "allowWatchBookmarks": "false"}
    with client.stream("GET", path, params=params, timeout=None) as response:
        for line in response.iter_lines():
            now = time.monotonic()
            if not line:
                continue
            event = json.loads(line)
            labels = event["object"]["metadata"].get("labels") or {}
            owner = labels.get("stockops.io/schedule")
            if event["type"] == "ADDED" and owner and owner not in seen:
                seen[owner] = now
            if stop.is_set():
                return


def memory_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def request_counts(client: httpx.Client) -> dict[tuple[str, str, str], float]:
    """Requests the API server has served so far, by (verb, resource, subresource).

    From its own `apiserver_request_total`; watches are counted once, when they open.
    """
    counts: dict[tuple[str, str, str], float] = {}
    for line in client.get("/metrics").text.splitlines():
        match = REQUEST_LINE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        counts[key] = counts.get(key, 0.0) + float(match["value"])
    return counts


def request_delta(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> list[tuple[str, int]]:
    """Requests served between two readings, largest first, as ("VERB resource/sub", n)."""
    rows = []
    for key, value in after.items():
        n = int(value - before.get(key, 0.0))
        if n > 0:
            verb, resource, sub = key
            rows.append((f"{verb} {resource}" + (f"/{sub}" if sub else ""), n))
    return sorted(rows, key=lambda r: -r[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def write_doc(table: str, command: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = f"{SECTION}\n\n{table}\nCommand: `{command}`, run on {when}.\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(body + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200, help="StockModels (with schedules)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--profile", type=Path, help="run the operator under cProfile into PATH")
    args = parser.parse_args()

    install(names=["kube-apiserver", "helm"])
    work = Path(tempfile.mkdtemp(prefix="stockops-bench-"))
    with KubeCluster(work_dir=work / "kube") as cluster:
        client = admin_client(cluster, work)
        kubeconfig = install_rbac(cluster)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "STOCKOPS_NAMESPACE": NAMESPACE,
            "STOCKOPS_PEERING_NAME": "",
            "STOCKOPS_METRICS_PORT": str(pick_free_port()),
            "STOCKOPS_LIVENESS_PORT": "0",
            "STOCKOPS_LOG_JSON": "true",
        }
        log_path = work / "operator.log"
        with log_path.open("wb") as log:
            profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
            operator = subprocess.Popen(
                [sys.executable, *profile, "-m", "stockops_operator"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            # Ready when its metrics endpoint answers and kopf has listed the (empty) kinds.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{env['STOCKOPS_METRICS_PORT']}/metrics")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            time.sleep(3)
            idle_rss, _ = memory_kib(operator.pid)
            cpu_idle = cpu_seconds(operator.pid)
            load_before = os.getloadavg()[0]
            requests_before = request_counts(client)
            services = {name: pid for name, proc in cluster.processes.items() if (pid := proc.pid)}
            services_before = {name: cpu_seconds(pid) for name, pid in services.items()}

            seen: dict[str, float] = {}
            stop = threading.Event()
            watcher = threading.Thread(target=watch_jobs, args=(client, seen, stop), daemon=True)
            watcher.start()
            time.sleep(0.5)
            created: dict[str, float] = {}
            started = time.monotonic()
            for i in range(args.models):
                for manifest in (stockmodel(i), schedule(i)):
                    plural = (
                        "stockmodels" if manifest["kind"] == "StockModel" else "retrainschedules"
                    )
                    response = client.post(
                        f"/apis/stockops.io/v1alpha1/namespaces/{NAMESPACE}/{plural}", json=manifest
                    )
                    response.raise_for_status()
                created[manifest["metadata"]["name"]] = time.monotonic()
            create_s = time.monotonic() - started
            deadline = time.monotonic() + 600
            while len(seen) < args.models and time.monotonic() < deadline:
                time.sleep(0.2)
            all_jobs_s = time.monotonic() - started
            rss_busy, _ = memory_kib(operator.pid)
            cpu_busy = cpu_seconds(operator.pid) - cpu_idle
            requests = request_delta(requests_before, request_counts(client))
            services_cpu = {
                name: cpu_seconds(pid) - services_before[name] for name, pid in services.items()
            }
            # One more model-poll period of steady state: every timer ticks at least once
            # (the schedules' runs stay active, as there is no kubelet to finish them).
            cpu_before_steady, steady_started = cpu_seconds(operator.pid), time.monotonic()
            requests_before_steady = request_counts(client)
            time.sleep(35)
            rss_steady, peak = memory_kib(operator.pid)
            steady_s = time.monotonic() - steady_started
            steady_cpu_share = (cpu_seconds(operator.pid) - cpu_before_steady) / steady_s
            steady_requests = request_delta(requests_before_steady, request_counts(client))
            steady_rate = sum(n for _, n in steady_requests) / steady_s
            stop.set()
            jobs = client.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs").json()["items"]
        finally:
            os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # kopf waits for every timer to end; the measurement is done, do not wait.
                os.killpg(operator.pid, signal.SIGKILL)
                operator.wait(timeout=30)
        client.close()

    missing = sorted(set(created) - set(seen))
    latencies = [seen[name] - created[name] for name in created if name in seen]
    per_schedule: dict[str, int] = {}
    for job in jobs:
        owner = job["metadata"]["labels"].get("stockops.io/schedule")
        per_schedule[owner] = per_schedule.get(owner, 0) + 1
    duplicates = sum(1 for n in per_schedule.values() if n > 1)
    total = sum(n for _, n in requests)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    rows = [
        ("StockModels + RetrainSchedules created", f"{args.models} + {args.models}"),
        ("time to create them (one client)", f"{create_s:.1f} s"),
        ("time until every first Job existed", f"{all_jobs_s:.1f} s"),
        ("create -> first Job, p50", f"{p50:.2f} s"),
        ("create -> first Job, p99", f"{p99:.2f} s"),
        ("create -> first Job, max", f"{max(latencies):.2f} s"),
        ("create -> first Job, mean", f"{statistics.fmean(latencies):.2f} s"),
        ("schedules without a Job", str(len(missing))),
        ("schedules with more than one Job", str(duplicates)),
        ("operator CPU until every first Job existed", f"{cpu_busy:.1f} s"),
        (
            "CPU of " + " / ".join(services_cpu) + " in that time",
            " / ".join(f"{v:.1f}" for v in services_cpu.values()) + " s",
        ),
        (
            "API requests in that time (all clients)",
            f"{total} ({total / args.models:.1f} per model)",
        ),
        ("operator CPU share in the 35 s after (timer ticks only)", f"{steady_cpu_share:.1%}"),
        ("API requests per second in the 35 s after (all clients)", f"{steady_rate:.1f}"),
        ("machine load average (1 min) before the run", f"{load_before:.1f}"),
        (
            "operator RSS idle / busy / steady / peak",
            f"{idle_rss / 1024:.0f} / {rss_busy / 1024:.0f} / {rss_steady / 1024:.0f} / "
            f"{peak / 1024:.0f} MiB",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    table = "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    machine = (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"kube-apiserver {KUBERNETES_VERSION}"
    )
    print(f"machine: {machine}")
    # Every client's requests (the bench's creates and watch, the garbage collector's and
    # the operator's), from the create burst until every first Job existed.
    print("API requests in that time, by verb and resource:")
    for what, n in requests:
        print(f"  {n:6d}  {what}")
    print("API requests in the 35 s after, by verb and resource:")
    for what, n in steady_requests:
        print(f"  {n:6d}  {what}")
    if not args.no_doc:
        write_doc(
            table
            + f"\nMachine: {machine}; the API server, etcd and the operator share the cores.\n"
            + NOTE,
            f"uv run python bench/operator_scale.py --models {args.models}",
        )
    print(f"reconcile_p99_s: {p99:.2f}")
    return 1 if missing or duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
