"""``tiledehaze engine``: prebuild TensorRT engines so that batch runs never wait for a build."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_command

EXAMPLES = """examples:
  tiledehaze engine build                            fp16, 1024 px tiles, batches of 8
  tiledehaze engine build --tile 2048 --batch 4 --precision fp32
  tiledehaze engine list                             what the cache holds
"""


def register(sub) -> None:
    p = add_command(sub, "engine", help="prebuild and list cached TensorRT engines", examples=EXAMPLES,
                    description="TensorRT compiles the network for one GPU and TensorRT version; building "
                                "takes a while, so engines are cached. Build them once before a batch run.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="build (or find) the engine for a tile size, batch and precision")
    b.add_argument("--tile", type=int, default=1024, help="largest tile side the engine takes (default: 1024)")
    b.add_argument("--batch", type=int, default=8, help="largest batch the engine takes (default: 8)")
    b.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="default: fp16")
    b.add_argument("--weights", type=Path, help="AOD-Net weights instead of the shipped ones")
    b.add_argument("--device", help="cuda or cuda:N (default: cuda:0)")
    b.add_argument("--cache-dir", type=Path, help="engine cache (default: the user cache dir, "
                                                  "or $TILEDEHAZE_ENGINE_CACHE)")
    b.add_argument("--rebuild", action="store_true", help="build even if a cached engine exists")
    b.set_defaults(func=run_build)
    ls = actions.add_parser("list", help="show the engine cache and what it holds")
    ls.add_argument("--cache-dir", type=Path, help="engine cache (default: the user cache dir)")
    ls.set_defaults(func=run_list)


def run_build(args: argparse.Namespace) -> int:
    from ..backends.tensorrt import build_engine

    path, built = build_engine(tile=args.tile, batch=args.batch, precision=args.precision,
                               weights=args.weights, cache_dir=args.cache_dir, device=args.device,
                               rebuild=args.rebuild)
    print(f"{'built' if built else 'already cached'}: {path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..backends.engine_cache import EngineCache

    cache = EngineCache(args.cache_dir)
    entries = cache.entries()
    print(f"engine cache: {cache.directory} ({len(entries)} engine{'s' if len(entries) != 1 else ''})")
    for path in entries:
        print(f"  {path.name}  {path.stat().st_size / 1e6:.1f} MB")
    return 0
