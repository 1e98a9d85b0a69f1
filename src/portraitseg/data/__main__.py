"""``python -m portraitseg.data {check,synth,download} ...``"""

from __future__ import annotations

import argparse
import sys

from portraitseg.data.check import add_check_parser
from portraitseg.data.download import add_download_parser
from portraitseg.data.synthetic import add_synth_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portraitseg.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_check_parser(sub)
    add_synth_parser(sub)
    add_download_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
