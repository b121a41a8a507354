"""The ``shapeworks-progressive`` command line.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` (builds its argparse parser, cheap: no torch or VTK import)
and ``run(args) -> int`` (does the work; heavy imports happen here). Errors for bad
input (:class:`~shapeworks_progressive.errors.ShapeWorksInputError`, missing files) are
reported in one message and exit with status 2; other operating-system errors (disk
full, permissions) in one message with status 1; Ctrl-C in one line with status 130
(training keeps its last finished epoch in ``last.pt``, so ``--resume`` continues it);
other failures propagate (status 1).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import ShapeWorksInputError

__all__ = ["main", "build_parser"]

# Subcommand name -> module in this package. Order is the order shown by --help.
COMMANDS = {
    "info": "info",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "run": "run_all",
    "compare": "compare",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shapeworks-progressive",
        description="Progressive DeepSSM: predict ShapeWorks particles from images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{module_name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ShapeWorksInputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permissions, a file where a folder should be
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; a training run continues from its last finished epoch with "
              "--resume, and compare reuses the runs it finished", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
