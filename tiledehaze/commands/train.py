"""``tiledehaze train`` and ``tiledehaze export``: thin shells over :mod:`tiledehaze.train`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from ..errors import require
from ..progress import ProgressLines

log = logging.getLogger(__name__)

#: dedicated flags and the config keys they set
_FLAGS = {
    "epochs": "num_epochs",
    "batch_size": "train_batch_size",
    "lr": "optim.lr",
    "seed": "seed",
    "samples_per_epoch": "samples_per_epoch",
    "patch_size": "patch_size",
    "threads": "threads",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model on synthetic or paired data (hazy, or JPEG-degraded for SRCNN)",
                              description="Train the model a YAML config names (model: aodnet, hazenet, aecrnet or srcnn); "
                                          "any key can be overridden.")
    p.add_argument("--config", help="YAML config (default: the built-in defaults, as in configs/aodnet.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--out", help="run folder (default: output_dir from the config)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder")
    p.add_argument("--epochs", type=int, help="num_epochs")
    p.add_argument("--batch-size", type=int, help="train_batch_size")
    p.add_argument("--lr", type=float, help="optim.lr")
    p.add_argument("--seed", type=int, help="seed")
    p.add_argument("--samples-per-epoch", type=int, help="samples_per_epoch")
    p.add_argument("--patch-size", type=int, help="patch_size")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("-q", "--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress (a bar on a terminal, elsewhere a line every 10 s)")
    p.set_defaults(func=run_train)

    e = subparsers.add_parser("export", help="export AOD-Net or HazeNet weights to ONNX and/or safetensors",
                              description="Write an ONNX graph (dynamic batch/height/width), checked "
                                          "against a reference evaluation, and/or the safetensors file --weights loads.")
    e.add_argument("--weights", help="checkpoint: .safetensors or a torch state dict (default: the shipped weights)")
    e.add_argument("--onnx", help="ONNX output path")
    e.add_argument("--fp16", action="store_true", help="write an FP16 ONNX graph")
    e.add_argument("--safetensors", help="safetensors output path")
    e.add_argument("--opset", type=int, default=17)
    e.set_defaults(func=run_export)


class _Bar:
    """Training progress: a tqdm bar per epoch on a terminal, elsewhere plain lines at most every 10 s."""

    def __init__(self, enabled: bool, epochs: int):
        self.enabled, self.epochs, self.bar = enabled, epochs, None
        self.lines = ProgressLines() if enabled and not sys.stderr.isatty() else None
        self.desc, self.steps, self.done, self.started = "", 0, 0, 0.0

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.desc, self.steps, self.done, self.started = f"epoch {epoch}/{self.epochs}", steps, 0, time.monotonic()
        if self.enabled and self.lines is None:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=self.desc, unit="step", leave=True)

    def step(self, loss: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 20 == 0:
                self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.lines is not None:
            self.lines.tick(f"{self.desc}: {self.done}/{self.steps} steps", self.done, self.steps, "steps",
                            since=self.started, tail=f", loss {loss:.4f}")

    def end_epoch(self, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(val_psnr=f"{row['val_psnr']:.2f}", val_ssim=f"{row['val_ssim']:.3f}")
            self.bar.close()
            self.bar = None


def run_train(args: argparse.Namespace) -> int:
    require("torch", extra="train", feature="training")
    from ..train import load_config, train

    overrides = list(args.overrides)
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(args.config, overrides)
    result = train(cfg, out_dir=args.out, resume=args.resume,
                   progress=_Bar(not args.quiet, int(cfg["num_epochs"])))
    print(f"best epoch {result.best_epoch}: validation PSNR {result.best_psnr:.2f} dB, SSIM {result.best_ssim:.4f} "
          f"(hazy input {result.hazy_psnr:.2f} dB, {result.hazy_ssim:.4f}); weights {result.best_weights}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..train.export import export

    diffs = export(args.weights, onnx_path=args.onnx, fp16=args.fp16, safetensors_path=args.safetensors,
                   opset=args.opset)
    for precision, diff in diffs.items():
        print(f"ONNX {precision} matches the reference: max difference {diff:.2e}")
    for path in (args.onnx, args.safetensors):
        if path:
            print(f"wrote {path}")
    return 0
