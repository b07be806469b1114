"""The ``argusnet`` command: one CLI in front of every component."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from argusnet.commands import (audit, bench, camera, demo, evaluate, forget, models, recognise, store, streaming,
                               track, visitors)
from shared.errors import EXIT_BAD_INPUT, EXIT_FAILURE, ArgusError
from shared.logs import setup_logging

log = logging.getLogger("argusnet")
COMMAND_MODULES = (recognise, evaluate, models, visitors, track, streaming, camera, bench, demo, audit, store, forget)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with EXIT_BAD_INPUT (2) and say which command they belong to."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


CONFIG_HELP = "YAML configuration file (ARGUSNET__SECTION__FIELD environment variables override it)"


class CommandParser(Parser):
    """A subcommand's parser: it takes ``--config`` too (``argusnet up --config F`` as well as ``argusnet --config F
    up``; the subcommand's value wins). Its default is left unset, so that a subcommand without the option keeps
    the value given before it. Nested subcommands (``gallery list``) get it as well."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="argusnet", description="ArgusNet: face recognition for camera networks.")
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.handler(args) or 0)
    except ArgusError as exc:
        print(f"argusnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("argusnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
