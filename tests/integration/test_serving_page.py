"""The scoring server's page at `/`, in headless Chromium.

Two servers answer the page:

* `FakeScoringServer` (a fake: canned answers of the server contract from a stdlib HTTP server
  in a thread) pins what the page does with known data: a forecast made at bar i for h bars
  ahead is drawn above bar i + h, the next forecast past the last bar, the API key typed
  once is kept in localStorage and sent as X-API-Key, and a failed call (401, 503) says what
  failed and what to do;
* the real `stockops serve` (a subprocess on a free 127.0.0.1 port) with a small network
  registered on the real MLflow server and a local store of real 2018 bars of AMZN and AXP:
  the page draws both tickers' closes and forecasts and shows the version that answered,
  and a screenshot is saved to pytest's tmp_path.

Chromium is the system's (`make browser` installs the Debian package; `STOCKOPS_CHROMIUM`
names another binary); Playwright's own browser download is never used. Without a chromium
binary these tests skip, except on CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

from stockops_model.testing import MlflowServer
from stockops_model.testing.ports import LOOPBACK
from stockops_model.testing.scoring import scoring_server

pytestmark = [pytest.mark.slow]

PAGE = (
    Path(__file__).parents[2]
    / "model"
    / "src"
    / "stockops_model"
    / "server"
    / "static"
    / "index.html"
)
DATA = Path(__file__).parents[1] / "data" / "bars-2018-1min"
TICKERS = ("AMZN", "AXP")
API_KEY = "page-test-key"
# Guards against a hang on a loaded 2-core machine, not speed targets.
CHART_TIMEOUT_MS = 120_000
SERVER_READY_TIMEOUT_S = 300.0


def chromium_executable() -> str:
    """The chromium binary to drive; skip (or fail on CI) when there is none."""
    explicit = os.environ.get("STOCKOPS_CHROMIUM", "").strip()
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("no chromium binary on CI; `make browser` installs it")
    pytest.skip("no chromium binary; `make browser` installs it (Debian package chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # A fresh context per test: its own localStorage, so a key kept by one test is not
    # seen by the next.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass
class PageLog:
    """What a page fetched (URLs other than inline `data:` ones) and its uncaught errors."""

    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def fetched_only_from(self, base: str) -> bool:
        return bool(self.urls) and all(u.startswith(base) for u in self.urls)


@pytest.fixture
def page_log(page: Page) -> PageLog:
    log = PageLog()

    def on_request(request: Request) -> None:
        if not request.url.startswith("data:"):
            log.urls.append(request.url)

    page.on("request", on_request)
    page.on("pageerror", lambda error: log.errors.append(str(error)))
    return log


# --------------------------------------------------------------------------- fake server
@dataclass
class FakeScoringServer:
    """A fake `stockops serve`: canned answers of the contract, and the keys it was sent.

    `/v1/models` lists AMZN and BAD; AMZN's forecasts need `key`, BAD always answers 503
    (too few bars in the store). AMZN has 30 bars, 20 on one evening and 10 the next
    morning, and a forecast with `horizon` from every one of them.
    """

    key: str = "fake-key"
    horizon: int = 2
    models_ready: bool = True
    keys_seen: list[str | None] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def bars(self) -> list[dict[str, Any]]:
        evening = [f"2018-03-12T23:{40 + i:02d}:00Z" for i in range(20)]
        morning = [f"2018-03-13T13:{30 + i:02d}:00Z" for i in range(10)]
        return [{"ts": ts, "close": 100.0 + i} for i, ts in enumerate(evening + morning)]

    def forecast(self, symbol: str) -> dict[str, Any]:
        bars = self.bars()
        # Forecast values decrease with the origin, so their heights tell origins apart.
        forecasts = [
            {"ts": b["ts"], "forecast_close": 140.0 - i, "horizon": self.horizon}
            for i, b in enumerate(bars)
        ]
        return {
            "symbol": symbol,
            "model_name": "fake",
            "model_version": "7",
            "bars": bars,
            "forecasts": forecasts,
            "next": forecasts[-1],
        }

    def answer(self, path: str, key: str | None) -> tuple[int, Any]:
        if path == "/v1/models":
            if not self.models_ready:
                error = {"reason": "no_model", "message": "no model loaded yet", "field": None}
                return 503, {"error": error}
            return 200, {
                "name": "fake",
                "version": "7",
                "uri": "models:/fake@serving",
                "alias": "serving",
                "kind": "network",
                "tickers": ["AMZN", "BAD"],
                "min_bars": 40,
                "horizon": self.horizon,
                "loaded_at": "2026-12-05T12:00:00Z",
                "reloads": 0,
                "last_reload_error": None,
            }
        if path.startswith("/v1/forecast/"):
            self.keys_seen.append(key)
            if key != self.key:
                error = {"reason": "unauthorized", "message": "wrong API key", "field": None}
                return 401, {"error": error}
            if path.startswith("/v1/forecast/BAD"):
                message = "the store holds 12 bars of BAD; the model needs 40"
                return 503, {"error": {"reason": "too_few_bars", "message": message, "field": None}}
            return 200, self.forecast("AMZN")
        return 404, {"error": {"reason": "not_found", "message": path, "field": None}}

    def __enter__(self) -> FakeScoringServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
                    return
                status, body = fake.answer(path, self.headers.get("X-API-Key"))
                self._send(status, "application/json", json.dumps(body).encode())

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"


@pytest.fixture
def fake() -> Iterator[FakeScoringServer]:
    with FakeScoringServer() as server:
        yield server


# --------------------------------------------------------------------------- reading the page
def path_points(d: str) -> list[tuple[float, float]]:
    """The (x, y) vertices of an SVG path made of M/L commands."""
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)]


def chart(page: Page, symbol: str) -> dict[str, Any]:
    """What the page drew for `symbol`: close vertices, forecast dots, the next forecast."""
    section = page.locator(f'section[data-symbol="{symbol}"]')
    d = section.locator("svg.chart path.price").get_attribute("d") or ""
    dots = section.locator("svg.chart g.forecasts circle")

    def centre(i: int) -> tuple[float, float]:
        circle = dots.nth(i)
        cx, cy = circle.get_attribute("cx"), circle.get_attribute("cy")
        return float(cx or "nan"), float(cy or "nan")

    classes = [dots.nth(i).get_attribute("class") or "" for i in range(dots.count())]
    forecasts = [centre(i) for i, c in enumerate(classes) if c.split() == ["forecast"]]
    nexts = [centre(i) for i, c in enumerate(classes) if "next" in c.split()]
    return {
        "closes": path_points(d),
        "forecasts": forecasts,
        "next": nexts,
        "error": section.locator(".error").inner_text(),
        "labels": section.locator("svg.chart .x-axis text").all_text_contents(),
    }


def wait_for_chart(page: Page, symbol: str) -> None:
    page.wait_for_selector(
        f'section[data-symbol="{symbol}"] svg.chart path.price', timeout=CHART_TIMEOUT_MS
    )


def wait_for_error(page: Page, selector: str, text: str) -> str:
    locator = page.locator(selector)
    locator.filter(has_text=text).wait_for(timeout=CHART_TIMEOUT_MS)
    return locator.inner_text()


# --------------------------------------------------------------------------- against the fake
def test_a_forecast_is_drawn_above_the_bar_it_forecasts(
    page: Page, page_log: PageLog, fake: FakeScoringServer
) -> None:
    page.goto(fake.url)
    page.fill("#api-key", fake.key)
    page.click("text=Use key")
    wait_for_chart(page, "AMZN")

    drawn = chart(page, "AMZN")
    closes = drawn["closes"]
    assert len(closes) == 30
    step = (closes[-1][0] - closes[0][0]) / 29
    # Bars are evenly spaced although a night lies between the 20th and the 21st; one
    # dashed line marks that break, halfway between them.
    assert closes[20][0] - closes[19][0] == pytest.approx(step, abs=0.15)
    breaks = page.locator('section[data-symbol="AMZN"] svg.chart line.break')
    assert breaks.count() == 1
    middle = (closes[19][0] + closes[20][0]) / 2
    assert float(breaks.get_attribute("x1") or "nan") == pytest.approx(middle, abs=0.3)
    # Origins 0..28 are plain forecasts at bars 2..30; origin 29 is the next forecast, at 31.
    h = fake.horizon
    xs = sorted(x for x, _ in drawn["forecasts"])
    assert xs == pytest.approx([closes[0][0] + (i + h) * step for i in range(29)], abs=0.3)
    assert len(drawn["next"]) == 1
    assert drawn["next"][0][0] == pytest.approx(closes[0][0] + (29 + h) * step, abs=0.3)
    assert drawn["next"][0][0] > closes[-1][0]
    # Forecasts fall with the origin (140 - i): the leftmost dot is the highest on screen.
    heights = [y for _, y in sorted(drawn["forecasts"])]
    assert heights == sorted(heights)
    # The time axis names both days.
    labels = " ".join(drawn["labels"])
    assert "03-12" in labels
    assert "03-13" in labels
    assert "UTC" in labels
    assert page.locator("#model-version").inner_text() == "7"
    assert page.locator("#model-alias").inner_text() == "serving"
    # Nothing came from anywhere but the server, and no script error happened.
    assert page_log.fetched_only_from(fake.url)
    assert page_log.errors == []


def test_a_call_without_the_key_says_401_and_the_key_is_kept_and_sent(
    page: Page, fake: FakeScoringServer
) -> None:
    page.goto(fake.url)
    amzn = wait_for_error(page, 'section[data-symbol="AMZN"] .error', "401")
    assert "API key" in amzn
    assert fake.key not in fake.keys_seen

    page.fill("#api-key", fake.key)
    page.click("text=Use key")
    wait_for_chart(page, "AMZN")
    assert fake.key in fake.keys_seen
    assert chart(page, "AMZN")["error"] == ""
    # One ticker failing does not hide the others; its own box says why.
    bad = wait_for_error(page, 'section[data-symbol="BAD"] .error', "503")
    assert "the store holds 12 bars of BAD" in bad

    # A reload starts from the key kept in localStorage; nothing is typed again.
    fake.keys_seen.clear()
    page.reload()
    wait_for_chart(page, "AMZN")
    assert page.input_value("#api-key") == fake.key
    assert fake.keys_seen
    assert set(fake.keys_seen) == {fake.key}

    page.click("text=Forget key")
    page.reload()
    wait_for_error(page, 'section[data-symbol="AMZN"] .error', "401")
    assert page.input_value("#api-key") == ""


def test_no_model_loaded_is_said_at_the_top(page: Page, fake: FakeScoringServer) -> None:
    fake.models_ready = False
    page.goto(fake.url)
    message = wait_for_error(page, "#error", "503")
    assert "GET v1/models failed" in message
    assert "no model loaded yet" in message
    assert page.title() == "stockops: prices and forecasts"


# --------------------------------------------------------------------------- the real server
@dataclass
class Served:
    url: str
    name: str
    version: str


def register_network(tracking_uri: str, name: str) -> str:
    """Train a small network on the real bars for one epoch and register it; its version."""
    import mlflow

    from stockops_model import registry
    from stockops_model.forecaster import InputSpec
    from stockops_model.hyperparameters import Hyperparameters
    from stockops_model.loaders import load_bars
    from stockops_model.spec import default_indicators
    from stockops_model.training import train_forecaster

    bars = load_bars(DATA, TICKERS)
    inputs = InputSpec(TICKERS, tuple(default_indicators()), 8, 1, "return")
    params = Hyperparameters(window=8, horizon=1, units=4, epochs=1, batch_size=256)
    result = train_forecaster(bars, inputs, params)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("serving-page")
    with mlflow.start_run(run_name="page"):
        info = registry.log_forecaster(result.forecaster, bars, registered_model_name=name)
    version = str(info.registered_model_version)
    mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, "serving", version)
    return version


def fill_store(root: Path) -> str:
    """A local store holding the real AMZN and AXP bars; its URL."""
    from stockops_model.loaders import load_bars
    from stockops_model.store import open_store

    url = f"file://{root}"
    bars = load_bars(DATA, TICKERS)

    async def write() -> None:
        async with open_store(url, create=True) as store:
            await store.write(bars)

    # Playwright's sync API runs an event loop in this thread: write from another one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, write()).result()
    return url


@pytest.fixture(scope="module")
def served(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """`stockops serve` following `models:/NAME@serving`, with an API key and a store."""
    folder = tmp_path_factory.mktemp("serving-page")
    name = f"page-{uuid.uuid4().hex[:8]}"
    version = register_network(mlflow_server.tracking_uri, name)
    store = fill_store(folder / "store")
    with scoring_server(
        f"models:/{name}@serving",
        mlflow_server.tracking_uri,
        folder,
        api_key=API_KEY,
        store_url=store,
        ready="/readyz",
        timeout=SERVER_READY_TIMEOUT_S,
    ) as server:
        yield Served(url=f"{server.url}/", name=name, version=version)


def test_the_page_plots_each_ticker_from_the_real_server(
    page: Page, page_log: PageLog, served: Served, tmp_path: Path
) -> None:
    page.goto(served.url)
    # The server wants a key: the page says so before one is given.
    wait_for_error(page, f'section[data-symbol="{TICKERS[0]}"] .error', "401")

    page.fill("#api-key", API_KEY)
    page.click("text=Use key")
    for symbol in TICKERS:
        wait_for_chart(page, symbol)

    assert page.locator("#model-name").inner_text() == served.name
    assert page.locator("#model-version").inner_text() == served.version
    for symbol in TICKERS:
        drawn = chart(page, symbol)
        assert drawn["error"] == ""
        # The page asks for 120 points by default; the store holds four days of bars.
        assert len(drawn["closes"]) == 120
        assert len(drawn["forecasts"]) >= 100
        assert len(drawn["next"]) == 1
        assert drawn["next"][0][0] > drawn["closes"][-1][0]
        # The last 120 bars are all of 2018-03-13, which the first time label names.
        assert drawn["labels"][0].startswith("03-13 ")
        summary = page.locator(f'section[data-symbol="{symbol}"] .summary').inner_text()
        assert f"version {served.version}" in summary
    assert page_log.fetched_only_from(served.url)
    assert page_log.errors == []

    shot = tmp_path / "serving-page.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.width == 1280
        assert image.height >= 900
        # Two charts of lines, dots and text, not a blank or one-colour page.
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 200
