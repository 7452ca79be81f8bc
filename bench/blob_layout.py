"""Read speed of the day-object layout against the original one-blob-per-bar layout.

Writes 2 tickers x 90 trading days of real 1-minute bars (AMZN and AXP from
../shared/data/bars-2018-1min, 44 days tiled forward by whole weeks to reach 90) to Azurite
twice:

* the original layout: one pickled one-row DataFrame per bar at
  ``{symbol}/{yyyy}/{mm}/{dd}/{HH}/{MM}/{symbol}_{yyyymmddHHMM}.pkl``, read back the way the
  original Airflow task did, blob by blob with the synchronous client, then concatenated;
* the stockops layout: one Parquet object per symbol and trading day through `BarStore`,
  read with `BarStore.read` (concurrent downloads).

Both full reads are timed in the same run against the same Azurite, and checked to return
the same bars. The last line is ``read_speedup: N`` (original read time / BarStore read time).

Run: ``uv run python bench/blob_layout.py`` (starts Azurite itself; 30 min or more on 2 cores,
almost all of it writing and reading the 70,000 small blobs of the original layout;
``--days 30`` takes a third of that).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import pickle
import time
from pathlib import Path

import pandas as pd

from stockops_model.bars import BAR_COLUMNS, normalise_frame
from stockops_model.loaders import load_bars
from stockops_model.store import BlobCredentials, open_store
from stockops_model.testing.services import running

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bars-2018-1min"
SYMBOLS = ["AMZN", "AXP"]
DAYS = 90
UPLOAD_CONCURRENCY = 16
UPLOAD_ATTEMPTS = 5

log = logging.getLogger("bench.blob_layout")


def tiled_bars(days: int) -> pd.DataFrame:
    """Real bars of SYMBOLS tiled forward by whole weeks until `days` trading days."""
    real = normalise_frame(load_bars(DATA, symbols=SYMBOLS))
    eastern_day = real["ts"].dt.tz_convert("America/New_York").dt.date
    span_weeks = (eastern_day.max() - eastern_day.min()).days // 7 + 1
    tiles, seen = [], 0
    shift = 0
    while seen < days:
        tile = real.copy()
        tile["ts"] = tile["ts"] + pd.Timedelta(weeks=shift * span_weeks)
        tile_days = sorted(set(eastern_day))
        keep = tile_days[: days - seen]
        tile = tile[eastern_day.isin(keep).to_numpy()]
        tiles.append(tile)
        seen += len(keep)
        shift += 1
    return normalise_frame(pd.concat(tiles, ignore_index=True))


def original_name(symbol: str, ts: pd.Timestamp) -> str:
    return f"{symbol}/{ts:%Y}/{ts:%m}/{ts:%d}/{ts:%H}/{ts:%M}/{symbol}_{ts:%Y%m%d%H%M}.pkl"


async def write_original(conn: str, container: str, bars: pd.DataFrame) -> None:
    """One pickled one-row DataFrame per bar (upload is concurrent; it is not what we time)."""
    from azure.core.exceptions import ServiceResponseError
    from azure.storage.blob.aio import ContainerClient

    sem = asyncio.Semaphore(UPLOAD_CONCURRENCY)
    async with ContainerClient.from_connection_string(conn, container) as client:
        await client.create_container()

        done = 0

        async def put(i: int) -> None:
            nonlocal done
            row = bars.iloc[[i]]
            name = original_name(row["symbol"].iloc[0], row["ts"].iloc[0])
            data = pickle.dumps(row)
            async with sem:
                # A starved Azurite can let one request time out after the SDK's own retries;
                # the upload is idempotent (overwrite), so try it again rather than lose the run.
                for attempt in range(1, UPLOAD_ATTEMPTS + 1):
                    try:
                        await client.upload_blob(name, data, overwrite=True)
                        break
                    except ServiceResponseError:
                        if attempt == UPLOAD_ATTEMPTS:
                            raise
                        log.warning("upload of %s timed out (attempt %d), again", name, attempt)
            done += 1
            if done % 10_000 == 0:
                log.info("original layout: %d of %d blobs written", done, len(bars))

        await asyncio.gather(*(put(i) for i in range(len(bars))))


def read_original(conn: str, container: str) -> pd.DataFrame:
    """What the original retraining DAG did: list, then download and unpickle blob by blob."""
    from azure.storage.blob import ContainerClient

    frames: list[pd.DataFrame] = []
    with ContainerClient.from_connection_string(conn, container) as client:
        for symbol in SYMBOLS:
            for blob in client.list_blobs(name_starts_with=f"{symbol}/"):
                data = client.download_blob(blob.name).readall()
                frames.append(pickle.load(io.BytesIO(data)))
    return pd.concat(frames, ignore_index=True)


async def write_store(conn: str, url: str, bars: pd.DataFrame) -> None:
    async with open_store(url, BlobCredentials(connection_string=conn), create=True) as store:
        await store.write(bars)


async def read_store(conn: str, url: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    async with open_store(url, BlobCredentials(connection_string=conn)) as store:
        return await store.read(SYMBOLS, start, end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=DAYS, help="trading days per ticker")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)

    bars = tiled_bars(args.days)
    start, end = bars["ts"].min(), bars["ts"].max() + pd.Timedelta(minutes=1)
    n_days = bars["ts"].dt.tz_convert("America/New_York").dt.date.nunique()
    print(f"bars: {len(bars)} ({len(SYMBOLS)} tickers x {n_days} trading days)")

    # In memory: with its on-disk metadata database Azurite re-saves the whole database as
    # the blob count grows, and 70,000 tiny blobs slowed it from ~120 to ~10 uploads a
    # second here. Memory is faster for both layouts; it can only make the original layout
    # look better, so the speedup stays conservative.
    with running(kafka=False, azurite=True, azurite_in_memory=True) as services:
        azurite = services.azurite
        conn = azurite.connection_string

        t0 = time.perf_counter()
        asyncio.run(write_original(conn, "original", bars))
        print(f"original layout: wrote {len(bars)} blobs in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        asyncio.run(write_store(conn, "azblob://stockops/bars", bars))
        print(f"BarStore layout: wrote day objects in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        original = read_original(conn, "original")
        original_s = time.perf_counter() - t0
        print(f"original layout: read {len(original)} bars in {original_s:.2f} s (blob by blob)")

        t0 = time.perf_counter()
        stored = asyncio.run(read_store(conn, "azblob://stockops/bars", start, end))
        store_s = time.perf_counter() - t0
        print(f"BarStore layout: read {len(stored)} bars in {store_s:.2f} s (day objects)")

    same = normalise_frame(original.loc[:, list(BAR_COLUMNS)])
    pd.testing.assert_frame_equal(same, stored)
    pd.testing.assert_frame_equal(stored, bars)
    print("both layouts returned the same bars")
    print(f"read_speedup: {original_s / store_s:.1f}")


if __name__ == "__main__":
    main()
