"""``tiledehaze process``: dehaze image files."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack
from pathlib import Path

from ..api import default_output, process_file
from ..batch import DEFAULT_SPLIT_MP, FORMAT_EXTENSIONS, REPORT_NAME, process_batch
from ..models import DEFAULT_MODEL
from ..errors import BatchInterrupted, ConfigError
from ..io import EXTENSIONS
from ..io.tiff import COMPRESSIONS
from ..options import RunOptions
from ..pixels import parse_range
from ..progress import batch_progress, progress_bar
from . import add_command

log = logging.getLogger(__name__)
#: failures listed on the terminal at the end of a batch; the report holds them all
SHOWN_FAILURES = 20

EXAMPLES = """examples:
  tiledehaze process photo.jpg                      writes photo_dehazed.jpg beside it
  tiledehaze process scene.tif -o out/scene.tif     streams a GeoTIFF of any size
  tiledehaze process scan.png --model dcp           classical Dark Channel Prior
  tiledehaze process big.tif --tile 512 --compression zstd --overwrite
  tiledehaze process s2.tif --bands 4,3,2 --cog     red, green, blue of a multi-band scene; COG out
  tiledehaze process photos/ -o dehazed/            a folder tree, mirrored; rerun to resume
  tiledehaze process photos/ -o out/ --workers 4 --format png
  tiledehaze process a.jpg b.tif scans/ -o out/ --scheduler tcp://10.0.0.5:8786
  tiledehaze process ortho.tif -o out.tif --workers 8   one TIFF spread over 8 processes

A folder or several inputs need -o OUTDIR. A rerun skips files whose output is up to date
(same input size and time, same settings); failures are listed in OUTDIR/tiledehaze-report.json
and the exit status is 1 when any file failed.
"""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a model."""
    p.add_argument("--model", help=f"model name (default: the network of --weights, else {DEFAULT_MODEL}; "
                                   "see 'tiledehaze info')")
    p.add_argument("--weights", type=Path, help="the model's weights (.safetensors or a torch checkpoint) instead of "
                                                "the shipped ones; needed where none ship")
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


def run_options(args: argparse.Namespace) -> RunOptions:
    """The options object the model options on the command line describe."""
    return RunOptions.create(model=args.model, weights=args.weights, backend=args.backend, threads=args.threads,
                             tile=args.tile, overlap=args.overlap, batch=args.batch, precision=args.precision,
                             device=args.device)


def io_options(args: argparse.Namespace) -> dict:
    """``--bands``, ``--input-range`` and ``--cog``: how the file is read and written."""
    return dict(bands=args.bands, input_range=args.input_range, cog=args.cog)


def _bands(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes band numbers counted from 1, e.g. 3,2,1, not {value!r}") from None


def _range(value: str):
    try:
        return parse_range(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--input-range ")) from None


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
    p = add_command(sub, "process", help="dehaze image files", examples=EXAMPLES,
                    description="Dehaze an image. TIFF/BigTIFF inputs are streamed in bounded memory; "
                                "georeferencing, bit depth, tiling, ICC profile and resolution are kept.")
    p.add_argument("input", type=Path, nargs="+", help="image files (TIFF, JPEG, PNG, WebP, BMP) or folders")
    p.add_argument("-o", "--output", type=Path,
                   help="output file for one input (default: INPUT_dehazed.EXT; its extension picks the format), "
                        "or output folder for folders and several inputs")
    add_model_options(p)
    p.add_argument("--compression", choices=COMPRESSIONS, default="keep",
                   help="TIFF output compression (default: keep the input's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP output quality (default: 95)")
    g = p.add_argument_group("GeoTIFF and multi-band rasters")
    g.add_argument("--bands", type=_bands, metavar="R,G,B",
                   help="the bands the model sees, counted from 1 as GDAL does (needed for 4+ bands without RGB "
                        "colour interpretation); every other band passes through bit for bit")
    g.add_argument("--input-range", type=_range, default=None, metavar="auto|LOW,HIGH",
                   help="stored values the model sees as black and white (default: auto: the full scale for "
                        "8-bit, the NBITS tag, else the scene's largest value)")
    g.add_argument("--cog", action="store_true",
                   help="write a Cloud-Optimized GeoTIFF with overviews (always done for a COG or any TIFF with overviews)")
    p.add_argument("--max-pixels", type=int, help="refuse JPEG/PNG/WebP larger than this (default: 500 million)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (never the input)")
    p.add_argument("-q", "--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress (a bar on a terminal, elsewhere a line every 10 s); errors still show")
    b = p.add_argument_group("folders and several files")
    b.add_argument("--glob", action="append", dest="globs", metavar="PATTERN",
                   help="file names to take from folders, repeatable (default: the supported image extensions); "
                        "hidden files and folders are always left out")
    b.add_argument("--format", choices=sorted(FORMAT_EXTENSIONS),
                   help="convert every output to this format (default: keep each file's)")
    b.add_argument("--checksum", action="store_true",
                   help="decide what is up to date by the inputs' SHA-256 instead of their times")
    d = p.add_argument_group("dask workers (many files, or one huge TIFF)")
    d.add_argument("--workers", type=int,
                   help="restore in N local worker processes (a dask cluster); a single TIFF, or a TIFF above "
                        "--split-above in a batch, is spread over them in blocks of rows")
    d.add_argument("--scheduler", metavar="ADDRESS",
                   help="send the work to an existing dask cluster, e.g. tcp://host:8786 (its workers must see "
                        "the same paths)")
    d.add_argument("--split-above", type=float, default=DEFAULT_SPLIT_MP, metavar="MP",
                   help=f"in a batch on workers, spread TIFFs larger than this many megapixels over all workers "
                        f"instead of one (default: {DEFAULT_SPLIT_MP:g})")
    d.add_argument("--memory-limit", help="memory per local worker, e.g. 4GB (default: a share of the RAM, "
                                          "fewer workers if the largest image needs it)")
    d.add_argument("--retries", type=int, default=2,
                   help="retries of a file or block after an unexpected error or a dead worker (default: 2)")
    p.set_defaults(func=run)


def is_single(args: argparse.Namespace) -> bool:
    """One input file, and no -o or an -o that names a file (has an extension, is not a folder).

    Anything else (a folder, several inputs, ``-o`` without extension or an existing folder)
    is a batch into an output folder.
    """
    if len(args.input) != 1 or args.input[0].is_dir():
        return False
    out = args.output
    return out is None or (out.suffix != "" and not out.is_dir())


def run(args: argparse.Namespace) -> int:
    if is_single(args):
        args.input = args.input[0]
        return run_single(args)
    return run_batch(args)


def run_batch(args: argparse.Namespace) -> int:
    if args.output is None:
        raise ConfigError("a folder or several inputs need -o OUTDIR")
    if args.output.suffix.lower() in EXTENSIONS and not args.output.is_dir():
        raise ConfigError(f"-o {args.output} looks like an image file; a folder or several inputs need -o OUTDIR")
    state: dict = {}

    def on_plan(plan) -> None:
        state["plan"] = plan
        state["bar"] = stack.enter_context(batch_progress(len(plan.jobs), plan.megapixels,
                                                          enabled=False if args.quiet else None))

    def progress(result) -> None:
        state["bar"](result.megapixels if result.status == "done" else 0.0, result.status != "done")

    try:
        with ExitStack() as stack:
            report = process_batch(
                args.input, args.output, options=run_options(args), compression=args.compression,
                quality=args.quality, overwrite=args.overwrite, max_pixels=args.max_pixels, format=args.format,
                globs=args.globs, workers=args.workers, scheduler=args.scheduler, memory_limit=args.memory_limit,
                retries=args.retries, checksum=args.checksum, split_above=args.split_above, on_plan=on_plan,
                progress=progress, **io_options(args))
    except BatchInterrupted as exc:  # the summary so far; the CLI's handler prints "interrupted", exit 130
        _print_outcome(exc.report)
        plan = state["plan"]
        left = len(plan.jobs) - len(exc.report.done) - (len(exc.report.failed) - len(plan.failed))
        if left:
            print(f"{left} file(s) not restored yet; run the same command again to resume")
        raise
    _print_outcome(report)
    if report.aborted:
        print(f"tiledehaze: error: batch stopped: {report.aborted}", file=sys.stderr)
        return 3
    if report.failed:
        print(f"tiledehaze: {len(report.failed)} file(s) failed; see {Path(report.outdir) / REPORT_NAME}",
              file=sys.stderr)
        return 1
    return 0


def _print_outcome(report) -> None:
    for failure in report.failed[:SHOWN_FAILURES]:
        print(f"failed: {failure.source}: {failure.reason}", file=sys.stderr)
    if len(report.failed) > SHOWN_FAILURES:
        print(f"... and {len(report.failed) - SHOWN_FAILURES} more", file=sys.stderr)
    print(report.summary())


def run_single(args: argparse.Namespace) -> int:
    output = args.output or default_output(args.input)
    with progress_bar(f"{args.input.name}", enabled=False if args.quiet else None) as (set_total, advance):
        result = process_file(
            args.input, output, options=run_options(args), compression=args.compression, quality=args.quality,
            overwrite=args.overwrite, max_pixels=args.max_pixels, on_plan=set_total, progress=advance,
            workers=args.workers, scheduler=args.scheduler, memory_limit=args.memory_limit, retries=args.retries,
            **io_options(args))
    log.info("%s -> %s: %.1f MP, %d tiles, %.1f s", result.source, result.output, result.megapixels,
             result.tiles, result.seconds)
    spread = f", {result.blocks} blocks on dask workers" if result.blocks else ""
    print(f"{result.output}  ({result.megapixels:.1f} MP in {result.seconds:.1f} s, "
          f"{result.megapixels / max(result.seconds, 1e-9):.1f} MP/s{spread})")
    return 0
