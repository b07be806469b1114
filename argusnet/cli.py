"""The ``argusnet`` command: one CLI in front of every component."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from shared.errors import EXIT_BAD_INPUT, EXIT_FAILURE, ArgusError
from shared.logs import setup_logging

log = logging.getLogger("argusnet")
COMMAND_MODULES = ("recognise", "evaluate", "models", "visitors", "track", "streaming", "camera", "dashboard", "bench",
                   "demo", "audit", "store", "forget", "tracks")
# `argusnet camera` and `argusnet keys` run on camera nodes, which install only the node packages
# (requirements-node.lock, `argusnet[node]`): their parser is built from their own module alone, so that starting
# them imports nothing of the worker, store or dashboard. Any other command word builds the whole parser.
NODE_COMMANDS = {"camera": "camera", "keys": "camera"}
GLOBAL_OPTIONS_WITH_VALUE = ("--config", "--log-level")


def command_word(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is neither a global option nor an option's value."""
    words = iter(argv)
    for word in words:
        if word in GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


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


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = Parser(prog="argusnet", description="ArgusNet: face recognition for camera networks.")
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name in modules:
        importlib.import_module(f"argusnet.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    node_module = NODE_COMMANDS.get(command_word(argv) or "")
    parser = build_parser((node_module,) if node_module else COMMAND_MODULES)
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
