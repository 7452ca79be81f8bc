"""Scoring throughput: `stockops serve` against `mlflow models serve`, same model, same client.

One network forecaster with the spec's defaults (window 32, the default indicators, LSTM(50)
with attention; trained for `--epochs` epochs on AMZN and AXP bars, because speed, not
accuracy, is measured here) is registered on a real MLflow server started for the run
(`stockops_model.testing.services.running`). Both servers load that version,
`models:/NAME/1`, from the registry and listen on 127.0.0.1:

* A: `stockops serve --model models:/NAME/1` with an API key (`POST /v1/predict`,
  `{"bars": [...]}`, header X-API-Key);
* B: `mlflow models serve -m models:/NAME/1 --env-manager local` (one worker, its default;
  `POST /invocations`, `{"dataframe_records": [...]}`), the pyfunc over the same forecaster.

Every request is one window: the last `min_bars` bars of one ticker (237 with the defaults),
cut from the real bars at 64 different end points, alternating tickers; both servers get the
same bodies in the same order, pre-encoded, and both must answer the same forecast.

Each client in `--clients` sends `--requests` requests to each server with `--concurrency`
in flight, in `--rounds` alternating rounds (A, B, A, B, ...) so that load from other work
on the machine falls on both; a round stops early at `--round-limit` seconds (the count it
reached is then reported). Two load generators, both asyncio in this process:

* `httpx`: one `httpx.AsyncClient`, as a Python caller of the server would use it;
* `raw`: keep-alive sockets writing pre-built HTTP/1.1 requests, which costs the shared cores
  next to nothing (0.1 ms of CPU a request). On 2 cores the client competes with the server
  it measures, and httpx costs 1.2-1.5 ms of CPU per request, about what `stockops serve`
  spends answering one, so the httpx figures are partly the client's (each client's
  ceiling, GET /healthz of A, is printed first).

Prints per client and server: requests, errors, p50 and p99 latency, throughput, the server's
CPU per request (its process group's user+system time over the rounds) and the client's;
the last line is `serve_throughput_ratio: N`, A's requests/s over B's with the first client
of `--clients` (httpx by default). Run: `uv run python bench/serving.py` (about 4 minutes on
2 cores, of which under a minute is training and the servers' start-ups); docs/benchmarks.md
records the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from stockops_model.testing.ports import LOOPBACK, pick_free_port
from stockops_model.testing.processes import ServiceProcess, tail
from stockops_model.testing.services import running

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
MODEL_NAME = "bench-serving"
API_KEY = "bench-serving-key"
BODIES = 64
# Guard against a server that never comes up, sized for a loaded 2-core machine.
READY_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------- the model
def train_and_register(tracking_uri: str, data: Path, epochs: int) -> tuple[pd.DataFrame, int]:
    """Train the default network briefly, register it as `MODEL_NAME` version 1; its min_bars."""
    import mlflow

    from stockops_model import registry
    from stockops_model.forecaster import InputSpec
    from stockops_model.hyperparameters import Hyperparameters
    from stockops_model.loaders import load_bars
    from stockops_model.spec import default_indicators
    from stockops_model.training import train_forecaster

    bars = load_bars(data, TICKERS)
    inputs = InputSpec(TICKERS, tuple(default_indicators()), 32, 1, "return")
    params = Hyperparameters(window=32, horizon=1, epochs=epochs)
    started = time.perf_counter()
    result = train_forecaster(bars, inputs, params)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run(run_name="serving"):
        info = registry.log_forecaster(result.forecaster, bars, registered_model_name=MODEL_NAME)
    if str(info.registered_model_version) != "1":
        raise RuntimeError(f"expected version 1 of a fresh registry, got {info}")
    print(
        f"model: {MODEL_NAME} version 1, window 32, {len(inputs.columns)} features, "
        f"min_bars {inputs.min_bars}, {len(result.history['loss'])} epoch(s), "
        f"trained and registered in {time.perf_counter() - started:.1f} s"
    )
    return bars, inputs.min_bars


def request_records(bars: pd.DataFrame, min_bars: int, count: int) -> list[list[dict[str, Any]]]:
    """`count` single-window inputs: the last `min_bars` bars of one ticker at spread ends."""
    out: list[list[dict[str, Any]]] = []
    per_ticker = {s: g.reset_index(drop=True) for s, g in bars.groupby("symbol", sort=True)}
    for i in range(count):
        symbol = TICKERS[i % len(TICKERS)]
        group = per_ticker[symbol]
        # End points spread over the last few hundred bars, so no two bodies are equal.
        end = len(group) - (i // len(TICKERS)) * 7
        window = group.iloc[end - min_bars : end]
        out.append(
            [
                {
                    "symbol": symbol,
                    "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "open": float(o),
                    "high": float(h),
                    "low": float(lo),
                    "close": float(c),
                    "volume": float(v),
                }
                for ts, o, h, lo, c, v in zip(
                    window["ts"],
                    window["open"],
                    window["high"],
                    window["low"],
                    window["close"],
                    window["volume"],
                    strict=True,
                )
            ]
        )
    return out


# --------------------------------------------------------------------------- the servers
@dataclass
class Server:
    """One server under test: how to start it, where to send a request, and in what form."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    headers: dict[str, str]
    wrap: str  # the JSON key the bar records go under
    port: int = field(default_factory=pick_free_port)
    process: ServiceProcess | None = None
    started_at: float = 0.0
    ready_s: float = 0.0

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def bodies(self, records: Sequence[list[dict[str, Any]]]) -> list[bytes]:
        return [json.dumps({self.wrap: r}, separators=(",", ":")).encode() for r in records]

    def start(self, folder: Path) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.process = ServiceProcess(self.name, argv, folder / f"{self.name}.log", env=self.env)
        self.started_at = time.monotonic()
        self.process.start()

    def wait_ready(self) -> None:
        assert self.process is not None

        def ready() -> bool:
            try:
                return httpx.get(self.base + self.ready_path, timeout=2.0).status_code == 200
            except httpx.HTTPError:
                return False

        self.process.wait_ready(ready, timeout=READY_TIMEOUT_S, interval=0.25)
        # From its own start: both start at once, and the second is waited for after the first.
        self.ready_s = time.monotonic() - self.started_at

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process in the server's process group (Linux)."""
        pgid = self.process.pid if self.process is not None else None
        if pgid is None:
            return math.nan
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    total += int(fields[11]) + int(fields[12])
        return total / ticks

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def build_servers(tracking_uri: str) -> tuple[Server, Server]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("STOCKOPS_API_KEY", None)
    uri = f"models:/{MODEL_NAME}/1"
    ours = Server(
        name="stockops-serve",
        argv=[
            sys.executable,
            "-c",
            "import sys; from stockops_model.cli import main; sys.exit(main())",
            "serve",
            "--model",
            uri,
            "--tracking-uri",
            tracking_uri,
            "--host",
            LOOPBACK,
            "--port",
            "{port}",
        ],
        env=dict(env, STOCKOPS_API_KEY=API_KEY),
        ready_path="/readyz",
        predict_path="/v1/predict",
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
        wrap="bars",
    )
    theirs = Server(
        name="mlflow-models-serve",
        argv=[
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "--host",
            LOOPBACK,
            "--port",
            "{port}",
        ],
        env=env,
        ready_path="/ping",
        predict_path="/invocations",
        headers={"Content-Type": "application/json"},
        wrap="dataframe_records",
    )
    return ours, theirs


@contextlib.contextmanager
def serving(servers: Sequence[Server], folder: Path) -> Iterator[None]:
    """Start every server at once (their start-ups overlap), wait for each, stop them all."""
    try:
        for server in servers:
            server.start(folder)
        for server in servers:
            server.wait_ready()
            print(f"{server.name}: ready in {server.ready_s:.1f} s on {server.base}")
        yield
    finally:
        for server in servers:
            server.stop()


def forecast_of(server: Server, answer: dict[str, Any]) -> float:
    rows = answer["forecasts"] if server.wrap == "bars" else answer["predictions"]
    if len(rows) != 1:
        raise RuntimeError(f"{server.name}: expected one forecast, got {answer}")
    return float(rows[0]["forecast_close"])


def check_same_forecasts(
    servers: Sequence[Server], records: Sequence[list[dict[str, Any]]]
) -> None:
    """Both servers answer each of a few bodies, with the same forecast close."""
    for record in records[:4]:
        values = []
        for server in servers:
            response = httpx.post(
                server.base + server.predict_path,
                content=server.bodies([record])[0],
                headers=server.headers,
                timeout=120.0,
            )
            if response.status_code != 200:
                raise RuntimeError(
                    f"{server.name} answered {response.status_code}: {response.text[:500]}\n"
                    + (tail(server.process.log_path) if server.process else "")
                )
            values.append(forecast_of(server, response.json()))
        if not math.isclose(values[0], values[1], rel_tol=1e-6):
            raise RuntimeError(f"the servers disagree on {record[-1]['symbol']}: {values}")
    print(f"same forecast from both servers on 4 bodies (e.g. {values[0]:.4f})")


# --------------------------------------------------------------------------- the clients
Outcome = tuple[list[float], Counter[int], float]


async def drive_httpx(
    base: str,
    path: str,
    bodies: Sequence[bytes] | None,
    headers: dict[str, str],
    total: int,
    concurrency: int,
    limit_s: float,
) -> Outcome:
    """Send `total` requests with `concurrency` in flight through one httpx.AsyncClient
    (POST `bodies` in turn, or GET when None); the latencies of the 200s, the other
    statuses, and the wall time."""
    latencies: list[float] = []
    errors: Counter[int] = Counter()
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0, headers=headers) as client:
        started = time.perf_counter()
        stop_at = started + limit_s

        async def worker() -> None:
            nonlocal sent
            while sent < total and time.perf_counter() < stop_at:
                i = sent
                sent += 1
                t0 = time.perf_counter()
                if bodies is None:
                    response = await client.get(base + path)
                else:
                    response = await client.post(base + path, content=bodies[i % len(bodies)])
                elapsed = time.perf_counter() - t0
                if response.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors[response.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked body); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    fields = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in lines[1:] if line)
    }
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return status


async def drive_raw(
    base: str,
    path: str,
    bodies: Sequence[bytes] | None,
    headers: dict[str, str],
    total: int,
    concurrency: int,
    limit_s: float,
) -> Outcome:
    """Like `drive_httpx`, over `concurrency` keep-alive sockets with pre-built requests:
    a load generator that costs the shared cores next to nothing (about 0.1 ms of CPU a
    request here, httpx 1.2-1.5 ms)."""
    host_port = base.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if bodies is None:
        requests = [f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\n{extra}\r\n".encode()]
    else:
        requests = [
            f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
            for body in bodies
        ]
    latencies: list[float] = []
    errors: Counter[int] = Counter()
    sent = 0
    started = time.perf_counter()
    stop_at = started + limit_s

    async def worker() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent < total and time.perf_counter() < stop_at:
                i = sent
                sent += 1
                t0 = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status = await read_response(reader)
                elapsed = time.perf_counter() - t0
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors[status] += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


CLIENTS = {"httpx": drive_httpx, "raw": drive_raw}


@dataclass
class Round:
    server: str
    latencies: list[float]
    errors: Counter[int]
    seconds: float
    cpu_s: float
    client_cpu_s: float


def run_round(
    server: Server,
    client: str,
    bodies: Sequence[bytes],
    total: int,
    concurrency: int,
    limit_s: float,
) -> Round:
    cpu_before, client_before = server.cpu_seconds(), time.process_time()
    drive = CLIENTS[client]
    latencies, errors, seconds = asyncio.run(
        drive(server.base, server.predict_path, bodies, server.headers, total, concurrency, limit_s)
    )
    result = Round(
        server.name,
        latencies,
        errors,
        seconds,
        server.cpu_seconds() - cpu_before,
        time.process_time() - client_before,
    )
    answered = len(latencies) + sum(errors.values())
    note = "" if answered >= total else " (stopped at the time limit)"
    print(
        f"  {client} -> {server.name}: {len(latencies)} ok, {sum(errors.values())} errors in "
        f"{seconds:.1f} s = {len(latencies) / seconds:.0f}/s{note}"
    )
    return result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Summary:
    server: str
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    per_s: float
    cpu_ms: float
    client_cpu_ms: float


def summarise(rounds: Sequence[Round]) -> Summary:
    latencies = [x for r in rounds for x in r.latencies]
    done = len(latencies)
    seconds = sum(r.seconds for r in rounds)
    return Summary(
        server=rounds[0].server,
        requests=done,
        errors=sum(sum(r.errors.values()) for r in rounds),
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        per_s=done / seconds if seconds else math.nan,
        cpu_ms=sum(r.cpu_s for r in rounds) / done * 1000 if done else math.nan,
        client_cpu_ms=sum(r.client_cpu_s for r in rounds) / done * 1000 if done else math.nan,
    )


def compare(
    client: str,
    ours: Server,
    theirs: Server,
    records: Sequence[list[dict[str, Any]]],
    args: argparse.Namespace,
) -> tuple[Summary, Summary]:
    """The client's ceiling, then A, B, A, B, ... rounds; the two servers' summaries."""
    ceiling, _, ceiling_s = asyncio.run(
        CLIENTS[client](ours.base, "/healthz", None, {}, args.requests, args.concurrency, 60.0)
    )
    print(
        f"{client} client ceiling (GET /healthz of stockops serve): "
        f"{len(ceiling) / ceiling_s:.0f}/s, p50 {percentile(ceiling, 50) * 1000:.1f} ms"
    )
    per_round = args.requests // (args.rounds // 2)
    rounds: dict[str, list[Round]] = {ours.name: [], theirs.name: []}
    for k in range(args.rounds):
        server = ours if k % 2 == 0 else theirs
        rounds[server.name].append(
            run_round(
                server,
                client,
                server.bodies(records),
                per_round,
                args.concurrency,
                args.round_limit,
            )
        )
    return summarise(rounds[ours.name]), summarise(rounds[theirs.name])


def report(client: str, a: Summary, b: Summary) -> float:
    """Print one client's table; return the throughput ratio (A over B)."""
    print(f"\n{client} client:")
    print(
        "| server | requests | errors | p50 (ms) | p99 (ms) | requests/s "
        "| server CPU ms/request | client CPU ms/request |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in (a, b):
        print(
            f"| {s.server} | {s.requests} | {s.errors} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | "
            f"{s.per_s:.0f} | {s.cpu_ms:.1f} | {s.client_cpu_ms:.2f} |"
        )
    if a.errors or b.errors:
        print("errors were answered: the figures count only the 200s")
    ratio = a.per_s / b.per_s if b.per_s else math.nan
    print(
        f"{client}: throughput ratio {ratio:.2f}, p99 {a.p99_ms:.1f} vs {b.p99_ms:.1f} ms, "
        f"server CPU per request {b.cpu_ms / a.cpu_ms:.2f}x less"
    )
    return ratio


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per server")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds in all")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--round-limit", type=float, default=300.0, help="seconds per round")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of the model")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of bar CSVs")
    parser.add_argument(
        "--clients",
        default="httpx,raw",
        help="load generators, comma-separated (httpx, raw); the first gives the last line",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    if args.rounds < 2 or args.rounds % 2:
        parser.error("--rounds must be even and at least 2 (A, B, A, B, ...)")
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not clients or any(c not in CLIENTS for c in clients):
        parser.error(f"--clients: choose from {', '.join(CLIENTS)}")

    from stockops_model.registry import code_version

    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} before the run; code {code_version()}"
    )
    results: dict[str, tuple[Summary, Summary]] = {}
    with (
        running(kafka=False, azurite=False, mlflow=True) as services,
        tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp,
    ):
        tracking_uri = services.mlflow.tracking_uri
        bars, min_bars = train_and_register(tracking_uri, args.data, args.epochs)
        records = request_records(bars, min_bars, BODIES)
        ours, theirs = build_servers(tracking_uri)
        with serving([ours, theirs], Path(tmp)):
            check_same_forecasts([ours, theirs], records)
            for client in clients:
                results[client] = compare(client, ours, theirs, records, args)

    print(
        f"\n{args.concurrency} concurrent single-window requests ({min_bars} bars of one "
        f"ticker), {args.requests} per server in {args.rounds} alternating rounds; "
        f"start-up to ready: stockops {ours.ready_s:.1f} s, mlflow {theirs.ready_s:.1f} s; "
        f"load average {os.getloadavg()[0]:.1f} after the run"
    )
    ratios = {client: report(client, *results[client]) for client in clients}
    ratio = ratios[clients[0]]
    print(f"serve_throughput_ratio: {ratio:.2f}")
    if math.isnan(ratio):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
