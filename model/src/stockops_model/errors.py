"""Domain exceptions of stockops and the process exit codes they map to.

Every workload (`stockops feed|sink|train|deploy|serve|up`) exits with a distinct code
per failure class, so a Job's status, a shell script or the operator can tell bad input
(fix the spec or the data) from an unavailable dependency (retry later).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `stockops` console script."""

    OK = 0
    FAILURE = 1  # an unexpected error: a bug, report it
    USAGE = 2  # bad command line (argparse's own code)
    INVALID_SPEC = 3  # the StockModel/RetrainSchedule spec does not validate
    INVALID_DATA = 4  # the input bars are unusable (too few, malformed)
    UNAVAILABLE = 5  # a dependency (Kafka, Blob, MLflow, Azure) cannot be reached; retry
    ROLLOUT_FAILED = 6  # a deployment failed and was rolled back


class StockopsError(Exception):
    """Base of every error stockops raises on purpose; `exit_code` tells the CLI how to exit."""

    exit_code: ExitCode = ExitCode.FAILURE


class SpecError(StockopsError):
    """A StockModel or RetrainSchedule spec is invalid; the message names the field."""

    exit_code = ExitCode.INVALID_SPEC


class BarValidationError(StockopsError, ValueError):
    """A bar breaks the schema (non-finite or non-positive price, low > open, ...)."""

    exit_code = ExitCode.INVALID_DATA


class DataError(StockopsError):
    """Input data cannot be used as asked: a file in an unknown format, too few bars."""

    exit_code = ExitCode.INVALID_DATA


class SourceError(StockopsError):
    """A market-data source answered with an error that retrying will not fix."""

    exit_code = ExitCode.UNAVAILABLE


class StoreError(StockopsError):
    """The bar store (Blob Storage or a local directory) cannot be read or written."""

    exit_code = ExitCode.UNAVAILABLE


class ServiceUnavailableError(StockopsError):
    """A dependency (Kafka, MLflow, Azure) did not answer in time; retrying may help."""

    exit_code = ExitCode.UNAVAILABLE


class RolloutError(StockopsError):
    """A rollout to a serving target failed; the previous version was restored."""

    exit_code = ExitCode.ROLLOUT_FAILED


class SettingsError(StockopsError):
    """A STOCKOPS_* environment variable or a flag is invalid; the message names it."""

    exit_code = ExitCode.INVALID_SPEC


class CorruptObjectError(StoreError):
    """A stored object cannot be decoded (truncated, not Parquet, wrong schema).

    Retrying will not help, so it maps to the invalid-data exit code; `name` is the object.
    """

    exit_code = ExitCode.INVALID_DATA

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class DeadLetterError(StockopsError):
    """A malformed message cannot be dead-lettered even as a small pointer record.

    The dead-letter topic is configured too small (or refuses the sink); retrying will not
    help, so it maps to the invalid-spec exit code. The message names the record and the fix.
    """

    exit_code = ExitCode.INVALID_SPEC


class SourceSymbolError(SourceError):
    """One symbol of a market-data source failed (unknown, delisted, a malformed answer).

    The other symbols may be fine: a source isolates it and retries it later. `code` is
    the source's own word for the error (Yahoo's ``chart.error.code``, e.g. "Not Found").
    """

    def __init__(self, message: str, *, symbol: str, code: str, description: str = "") -> None:
        super().__init__(message)
        self.symbol = symbol
        self.code = code
        self.description = description


class SourceConfigError(SourceError):
    """A market-data source refuses the request itself (bad range or interval, access denied).

    No symbol will do better, so the feed stops; fix the source settings or the spec.
    """

    exit_code = ExitCode.INVALID_SPEC


class MessageTooLargeError(StockopsError):
    """The broker or the producer refused a message as too large for the topic or request.

    Kafka's MESSAGE_SIZE_TOO_LARGE (a record over the topic's ``max.message.bytes`` or the
    producer's ``max_request_size``) or RECORD_LIST_TOO_LARGE. Unlike an outage, sending the
    same message again cannot help, so it is not a `ServiceUnavailableError`: shrink the
    message, or raise the topic's ``max.message.bytes``. Maps to the invalid-data exit code.
    """

    exit_code = ExitCode.INVALID_DATA
