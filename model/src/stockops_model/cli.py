"""The `stockops` console script: one subcommand per workload.

Each subcommand lives in its own module, which exposes `add_arguments(parser)` and
`run(args) -> int`. Only the chosen module is imported, so `stockops feed` never pays for
importing TensorFlow, and `stockops --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol

from stockops_model.errors import ExitCode, StockopsError

log = logging.getLogger(__name__)

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "feed": ("stockops_model.feed", "publish closed bars from a source to Kafka"),
    "sink": ("stockops_model.sink", "consume bars from Kafka into Parquet day objects"),
    "train": ("stockops_model.train", "train, register and gate a challenger model"),
    "backtest": ("stockops_model.backtest", "walk-forward backtest against the naive forecast"),
    "deploy": ("stockops_model.deploy", "roll the production model out to its serving target"),
    "serve": ("stockops_model.server", "HTTP scoring server for a registered model"),
    "up": ("stockops_model.local", "run the whole loop on this machine from local manifests"),
}


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stockops",
        description="Keep a market forecaster fresh: data plane, training, promotion, serving.",
        epilog="\n".join(f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object a line")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def configure_logging(level: str, as_json: bool) -> None:
    """Configure the root logger once, as text for people or JSON for containers."""
    from stockops_model.logs import configure

    configure(level=level, as_json=as_json)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `stockops` script; returns the process exit code."""
    top = _top_parser().parse_args(argv)
    module_name, text = COMMANDS[top.command]
    configure_logging(top.log_level, top.log_json)
    try:
        command: Command = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"stockops {top.command}: not available in this build", file=sys.stderr)
            return int(ExitCode.USAGE)
        raise
    parser = argparse.ArgumentParser(prog=f"stockops {top.command}", description=text)
    command.add_arguments(parser)
    args = parser.parse_args(top.rest)
    try:
        return command.run(args)
    except StockopsError as exc:
        print(f"stockops {top.command}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
