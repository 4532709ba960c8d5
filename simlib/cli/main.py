"""The ``simlib`` command line: index, search, eval, explain, calibrate, add, remove, train, compare, sync, duplicates.

Exit codes: 0 success, 1 a user error (one line on stderr saying what to do), 2 bad usage,
3 done, but some images could not be read (each listed on stderr with its reason)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from simlib import __version__
from simlib.cli.gallery import (
    register_add,
    register_calibrate,
    register_explain,
    register_index,
    register_remove,
    register_search,
)
from simlib.cli.models import register_compare, register_eval, register_product_subset, register_train
from simlib.cli.options import print_any_file_name, quiet_tensorflow
from simlib.cli.photos import register_duplicates, register_sync
from simlib.errors import SimlibError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="simlib", description="Visual similarity search without tags or labels.")
    parser.add_argument("--version", action="version", version=f"simlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    register_index(sub)
    register_search(sub)
    register_explain(sub)
    register_calibrate(sub)
    register_add(sub)
    register_remove(sub)
    register_eval(sub)
    register_train(sub)
    register_compare(sub)
    register_product_subset(sub)
    register_sync(sub)
    register_duplicates(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_tensorflow()
    print_any_file_name()
    try:
        return int(args.func(args) or 0)
    except SimlibError as e:
        print(f"simlib: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("simlib: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
