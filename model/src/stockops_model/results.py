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
    """Print the result as the last stdout line and copy it to the termination log."""
    line = json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    path = Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG))
    if path.exists() and os.access(path, os.W_OK):
        try:
            path.write_text(line[-TERMINATION_LOG_LIMIT:])
        except OSError as exc:
            log.warning("cannot write the termination log %s: %s", path, exc)
    return line
