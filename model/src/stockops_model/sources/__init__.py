"""Bar sources behind one interface, and the factory `stockops feed` builds them with.

`build_source(kind, symbols=..., clock=..., **options)` with kind and options:

* `"yahoo"` (live, runs until cancelled; `YahooSource`): `base_url` (scheme and host,
  default the public API; tests pass http://127.0.0.1:PORT), `poll_seconds` (60),
  `timeout` (10 s a request), `max_retries` (5), `backoff_base` (1 s), `backoff_max`
  (60 s), `range` ("1d"), `regular_hours` (False), `user_agent`, `rng`,
  `give_up_after_failures` (5: consecutive failed polls of every symbol that end the
  feed), `symbol_backoff_max` (1800 s: the longest wait between two tries of a failing
  symbol), `on_symbol_error` (None; called with (symbol, code) for every failed request
  of a symbol, e.g. to count it). The client and chart parsing are in
  `stockops_model.sources.yahoo_chart`.
* `"replay"` (finite; `ReplaySource`): `path` (a file, a data directory or a list of
  them; required), `speed` (None/0 = as fast as possible, 60 = one trading hour a
  minute: the wait between bar times is their gap / speed, and the gap between two
  sessions counts as one bar), `start` and `end` (US/Eastern trading dates, inclusive),
  `regular_hours` (False), `source` (label, "replay").
* `"synthetic"` (finite unless `days=None`; `SyntheticSource`): `seed` (0), `start`
  (2024-01-02), `days` (5), `bars_per_day` (390), `start_price` (100), `drift` (0.05 a
  year), `volatility` (0.2 a year), `base_volume` (10,000 a minute), `speed` (as replay),
  `source` ("synthetic"), `regular_hours` (accepted; every synthetic bar is regular).

Unknown kinds and options raise `SpecError` naming what is accepted.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from stockops_model.clock import Clock
from stockops_model.errors import SpecError
from stockops_model.sources.base import BarSource, Pacer, iterate_frame
from stockops_model.sources.replay import ReplaySource
from stockops_model.sources.synthetic import SyntheticSource
from stockops_model.sources.yahoo import YahooSource

__all__ = [
    "SOURCE_KINDS",
    "BarSource",
    "Pacer",
    "ReplaySource",
    "SyntheticSource",
    "YahooSource",
    "build_source",
    "iterate_frame",
]

SOURCE_KINDS: dict[str, Callable[..., BarSource]] = {
    "yahoo": YahooSource,
    "replay": ReplaySource,
    "synthetic": SyntheticSource,
}


def build_source(
    kind: str, *, symbols: list[str], clock: Clock | None = None, **options: Any
) -> BarSource:
    """Build the source `kind` for `symbols` with its documented options.

    Raises:
        SpecError: unknown kind, unknown option, or a missing required option.
    """
    factory = SOURCE_KINDS.get(kind)
    if factory is None:
        raise SpecError(f"unknown source {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    accepted = {
        name
        for name, p in inspect.signature(factory).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY or name == "path"
    } - {"symbols", "clock"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SpecError(
            f"source {kind!r} has no option(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(accepted))}"
        )
    if kind == "replay":
        if "path" not in options:
            raise SpecError("source 'replay' needs the option 'path' (bar files or a directory)")
        return ReplaySource(symbols=symbols or None, clock=clock, **options)
    return factory(symbols, clock=clock, **options)
