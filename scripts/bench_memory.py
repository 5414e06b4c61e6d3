"""Peak memory of `tiledehaze process` on wide TIFFs of growing height.

Peak RSS must depend on the image width, not its height: a 16000-pixel-wide RGB uint8 TIFF of
4000 rows and one of 12000 rows should both stay under 1 GB, the second within 15 % of the
first. Each run is a fresh process; peak RSS is read from the kernel (wait4's ru_maxrss).

``--geo`` adds, run for run beside the plain one, the same image as a GeoTIFF with a 300 px
nodata border (nodata = 0) restored with ``--cog`` (nodata fill, mask restore, streamed
overviews and the COG assembly all on).

    python scripts/bench_memory.py [--width 16000] [--heights 4000 12000] [--runs 3] [--geo]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import machine, run_measured, write_large_tiff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=16000)
    ap.add_argument("--heights", type=int, nargs="+", default=[4000, 12000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compression", default="zlib", help="compression of the synthetic input and output")
    ap.add_argument("--geo", action="store_true", help="also a nodata-bordered GeoTIFF written with --cog")
    ap.add_argument("--border", type=int, default=300, help="nodata border of the --geo image in pixels")
    args = ap.parse_args()
    variants = [("plain", 0, [])] + ([(f"nodata border {args.border} px, --cog", args.border, ["--cog"])]
                                    if args.geo else [])
    print(f"machine: {machine()}\n")
    print("| image | runs | peak RSS median (MB) | min-max (MB) | wall median (s) | MP/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for height in args.heights:
            srcs = [write_large_tiff(Path(tmp) / f"in_{height}_{k}.tif", height, args.width,
                                     compression=args.compression, nodata_border=border)
                    for k, (_, border, _) in enumerate(variants)]
            dst = Path(tmp) / f"out_{height}.tif"
            rss, wall = [[] for _ in variants], [[] for _ in variants]
            for _ in range(args.runs):  # variants interleaved, so a busy machine weighs on both alike
                for k, (_, _, options) in enumerate(variants):
                    w, r, _ = run_measured([sys.executable, "-m", "tiledehaze.cli", "process", str(srcs[k]), "-o",
                                            str(dst), "--overwrite", "--no-progress", *options])
                    rss[k].append(r)
                    wall[k].append(w)
            mp = height * args.width / 1e6
            for k, (name, _, _) in enumerate(variants):
                print(f"| {args.width}x{height} RGB uint8 ({args.compression}), {name} | {args.runs} "
                      f"| {statistics.median(rss[k]):.0f} | {min(rss[k]):.0f}-{max(rss[k]):.0f} "
                      f"| {statistics.median(wall[k]):.1f} | {mp / statistics.median(wall[k]):.1f} |", flush=True)
            for src in srcs:
                src.unlink()
            dst.unlink()


if __name__ == "__main__":
    main()
