"""The ``tiledehaze`` command: a thin shell over the Python API.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a
parser whose ``func(args) -> int`` runs it. Errors users can cause print one line and exit
non-zero; Ctrl-C exits 130 after the command has cleaned up.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from .errors import TileDehazeError

#: modules that each add one or more subcommands
COMMAND_MODULES = [
    "tiledehaze.commands.process",
    "tiledehaze.commands.info",
    "tiledehaze.commands.eval",
    "tiledehaze.commands.engine",
    "tiledehaze.commands.train",
    "tiledehaze.commands.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiledehaze",
        description="Dehaze images of any size: tiled, streamed and blended without seams.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so temporary outputs are removed


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:  # tifffile logs every oddity of malformed files (some at ERROR); our one line says what matters
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except TileDehazeError as exc:
        print(f"tiledehaze: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tiledehaze: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("tiledehaze: error: out of memory; try a smaller --tile", file=sys.stderr)
        return 5


if __name__ == "__main__":
    sys.exit(main())
