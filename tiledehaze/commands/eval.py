"""``tiledehaze eval``: score models on hazy images, against ground truth where there is some."""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import Any

import yaml

from ..errors import ConfigError
from ..evaluate import evaluate, parse_crop


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate models on a folder of hazy images (PSNR/SSIM with --clear, haze score always)",
        description="Run models on every image in --hazy; with --clear, match ground truth by file name "
                    "(RESIDE style 0001_0.8_0.2.png -> 0001.png too) and report PSNR and SSIM. Always reports "
                    "a no-reference haze score (mean dark channel) before and after, the yellow shift, the block "
                    "gain (compression blocks amplified in smooth regions) and the time.")
    p.add_argument("--hazy", type=Path, required=True, help="folder of hazy images")
    p.add_argument("--clear", type=Path, help="folder of clear ground-truth images")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="model to evaluate (repeatable; default: dcp, aodnet and hazenet)")
    p.add_argument("--out", type=Path, help="write report.json, report.md and grids/ here")
    p.add_argument("--crop-clear", metavar="TOP,BOTTOM,LEFT,RIGHT",
                   help="compare against clear[TOP:BOTTOM, LEFT:RIGHT] (SOTS full ground truth: 10,470,10,630)")
    p.add_argument("--weights", type=Path, help="AOD-Net weights file (for the aodnet model; HazeNet's: "
                                                "--model-option hazenet.weights=PATH)")
    p.add_argument("--tile", type=int, help="tile size passed to tiledehaze.restore")
    p.add_argument("--model-option", action="append", default=[], metavar="MODEL.KEY=VALUE",
                   help="an option for one model, e.g. dcp.guided_radius=20 (repeatable; VALUE is YAML)")
    p.set_defaults(func=run)


def parse_model_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["dcp.patch=31", "dcp.omega=0.9"]`` -> ``{"dcp": {"patch": 31, "omega": 0.9}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        model, dot, option = key.partition(".")
        if not (sep and dot and model and option):
            raise ConfigError(f"--model-option wants MODEL.KEY=VALUE, not {item!r}")
        try:
            out.setdefault(model, {})[option] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--model-option {item!r}: cannot read the value") from None
    return out


def run(args: argparse.Namespace) -> int:
    models = args.models or ["dcp", "aodnet", "hazenet"]
    model_options = parse_model_options(args.model_option)
    if args.weights:
        model_options.setdefault("aodnet", {})["weights"] = args.weights
    restore_options = {"tile": args.tile} if args.tile else {}
    report = evaluate(args.hazy, args.clear, models=models, out_dir=args.out, crop_clear=parse_crop(args.crop_clear),
                      model_options=model_options, restore_options=restore_options)
    print(report.to_markdown(), end="")
    if args.out:
        print(f"\nwritten: {args.out / 'report.json'}, {args.out / 'report.md'}, {args.out / 'grids'}/")
    return 0
