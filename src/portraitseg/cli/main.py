"""portraitseg: DSLR-style portraits from photos, and model export (see the subcommands).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which registers
its arguments and sets ``func(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from portraitseg._version import __version__

#: subcommand modules under portraitseg.cli
SUBCOMMANDS = ("render", "serve", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portraitseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"portraitseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"portraitseg.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
