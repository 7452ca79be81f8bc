"""Logging of the operator: kopf's own JSON lines, without one line per timer tick.

kopf logs "Timer '...' succeeded." at INFO every time a timer runs; with a tick every few
seconds per object that is most of the log and hides the decisions. `quiet_ticks` drops
exactly those lines (failures and everything else stay). The per-request lines of httpx
are kept at WARNING for the same reason.
"""

from __future__ import annotations

import logging
import re

_TICK = re.compile(r"^Timer '[^']+' succeeded\.$")


class TickFilter(logging.Filter):
    """Drop kopf's "Timer '<name>' succeeded." records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and _TICK.match(record.getMessage()))


def quiet_ticks() -> None:
    """Install the tick filter on kopf's object logger and quiet httpx (idempotent)."""
    logger = logging.getLogger("kopf.objects")
    if not any(isinstance(f, TickFilter) for f in logger.filters):
        logger.addFilter(TickFilter())
    logging.getLogger("httpx").setLevel(logging.WARNING)
