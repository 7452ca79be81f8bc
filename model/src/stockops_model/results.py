"""The one-line JSON result a Job prints for the operator (`train`, `deploy`).

The line is the last line on stdout and is also written to the Kubernetes termination log
(`/dev/termination-log`, or the file named by `STOCKOPS_TERMINATION_LOG`) when that file is
writable; the operator reads it from the Pod's termination message. Kubernetes keeps the
last 4096 bytes of that file, so results stay small.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TERMINATION_LOG_ENV = "STOCKOPS_TERMINATION_LOG"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_LIMIT = 4096


def emit_result(result: Mapping[str, Any]) -> str:
    """Print the result as the last stdout line and copy it to the termination log.

    The termination log gets a copy that fits its 4096 bytes: long text fields are
    shortened (longest first), so the copy stays one valid JSON object.
    """
    line = _dumps(result)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    path = Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG))
    if path.exists() and os.access(path, os.W_OK):
        try:
            path.write_text(fit_termination_log(result))
        except OSError as exc:
            log.warning("cannot write the termination log %s: %s", path, exc)
    return line


def fit_termination_log(result: Mapping[str, Any], limit: int = TERMINATION_LOG_LIMIT) -> str:
    """`result` as one JSON line of at most `limit` bytes, shortening its longest strings."""
    shortened = dict(result)
    line = _dumps(shortened)
    while len(line.encode()) > limit:
        texts = [k for k, v in shortened.items() if isinstance(v, str) and len(v) > 16]
        if not texts:
            # Nothing left to shorten: keep the plain fields, or say that it did not fit.
            scalars = _dumps({k: v for k, v in shortened.items() if not isinstance(v, dict | list)})
            return scalars if len(scalars) <= limit else _dumps({"truncated": True})
        longest = max(texts, key=lambda k: len(shortened[k]))
        excess = len(line.encode()) - limit
        value: str = shortened[longest]
        keep = max(16, len(value) - excess - 8)
        shortened[longest] = value[: keep - 3] + "..."
        line = _dumps(shortened)
    return line


def _dumps(result: Mapping[str, Any]) -> str:
    return json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
