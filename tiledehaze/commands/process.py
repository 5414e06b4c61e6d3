"""``tiledehaze process``: dehaze image files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..api import default_output, process_file
from ..io.tiff import COMPRESSIONS
from ..progress import progress_bar

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  tiledehaze process photo.jpg                      writes photo_dehazed.jpg beside it
  tiledehaze process scene.tif -o out/scene.tif     streams a GeoTIFF of any size
  tiledehaze process scan.png --model dcp           classical Dark Channel Prior
  tiledehaze process big.tif --tile 512 --compression zstd --overwrite
"""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a model."""
    p.add_argument("--model", default="aodnet", help="model name (default: aodnet; see 'tiledehaze info')")
    p.add_argument("--weights", type=Path, help="AOD-Net weights (.safetensors or torch state dict) instead of the shipped ones")
    p.add_argument("--backend", default="auto",
                   help="auto, tensorrt, torch-cuda, onnxruntime-cuda, onnxruntime, torch or onnxruntime-tensorrt "
                        "(default: auto, the fastest usable; see 'tiledehaze info')")
    p.add_argument("--precision", choices=("fp32", "fp16"),
                   help="arithmetic (default: fp16 for tensorrt and torch-cuda, fp32 otherwise)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: what the backend prefers)")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--tile", type=_tile, default=1024, help="largest tile side in pixels, or 'none' for one pass (default: 1024)")
    p.add_argument("--overlap", type=int, help="minimum tile overlap (default: derived from the model's receptive field)")
    p.add_argument("--batch", type=int, help="tiles per inference call (default: what suits the backend)")


def gpu_options(args: argparse.Namespace) -> dict:
    """``--precision`` and ``--device`` as model options, left out when not given."""
    return {k: v for k in ("precision", "device") if (v := getattr(args, k, None)) is not None}


def _tile(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        tile = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a tile size: {value!r}") from None
    if tile < 16:
        raise argparse.ArgumentTypeError("tile must be at least 16 pixels")
    return tile


def register(sub) -> None:
    p = sub.add_parser("process", help="dehaze image files",
                       description="Dehaze an image. TIFF/BigTIFF inputs are streamed in bounded memory; "
                                   "georeferencing, bit depth, tiling, ICC profile and resolution are kept.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="image file (TIFF, JPEG, PNG, WebP, BMP)")
    p.add_argument("-o", "--output", type=Path, help="output file (default: INPUT_dehazed.EXT); its extension picks the format")
    add_model_options(p)
    p.add_argument("--compression", choices=COMPRESSIONS, default="keep",
                   help="TIFF output compression (default: keep the input's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP output quality (default: 95)")
    p.add_argument("--max-pixels", type=int, help="refuse JPEG/PNG/WebP larger than this (default: 500 million)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (never the input)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or default_output(args.input)
    with progress_bar(f"{args.input.name}", enabled=False if args.no_progress else None) as (set_total, advance):
        result = process_file(
            args.input, output, model=args.model, weights=args.weights, backend=args.backend,
            threads=args.threads, tile=args.tile, overlap=args.overlap, batch=args.batch,
            compression=args.compression, quality=args.quality, overwrite=args.overwrite,
            max_pixels=args.max_pixels, on_plan=set_total, progress=advance, **gpu_options(args))
    log.info("%s -> %s: %.1f MP, %d tiles, %.1f s", result.source, result.output, result.megapixels,
             result.tiles, result.seconds)
    print(f"{result.output}  ({result.megapixels:.1f} MP in {result.seconds:.1f} s, "
          f"{result.megapixels / max(result.seconds, 1e-9):.1f} MP/s)")
    return 0
