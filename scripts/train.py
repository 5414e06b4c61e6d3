"""Train AOD-Net exactly as ``tiledehaze train`` does (same options, same code).

Run from the repository root: ``python -m scripts.train --config configs/aodnet.yaml``.
"""

import argparse
import logging
import sys

from tiledehaze.commands.train import register
from tiledehaze.errors import TileDehazeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.train")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except TileDehazeError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
