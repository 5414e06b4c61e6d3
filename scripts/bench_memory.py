"""Peak memory of `tiledehaze process` on wide TIFFs of growing height.

Peak RSS must depend on the image width, not its height: a 16000-pixel-wide RGB uint8 TIFF of
4000 rows and one of 12000 rows should both stay under 1 GB, the second within 15 % of the
first. Each run is a fresh process; peak RSS is read from the kernel (wait4's ru_maxrss).

    python scripts/bench_memory.py [--width 16000] [--heights 4000 12000] [--runs 3]
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
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    print("| image | runs | peak RSS median (MB) | min-max (MB) | wall median (s) | MP/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for height in args.heights:
            src = write_large_tiff(Path(tmp) / f"in_{height}.tif", height, args.width,
                                   compression=args.compression)
            dst = Path(tmp) / f"out_{height}.tif"
            rss, wall = [], []
            for _ in range(args.runs):
                w, r, _ = run_measured([sys.executable, "-m", "tiledehaze.cli", "process", str(src), "-o", str(dst),
                                        "--overwrite", "--no-progress"])
                rss.append(r)
                wall.append(w)
            mp = height * args.width / 1e6
            print(f"| {args.width}x{height} RGB uint8 ({args.compression}) | {args.runs} | {statistics.median(rss):.0f} "
                  f"| {min(rss):.0f}-{max(rss):.0f} | {statistics.median(wall):.1f} | {mp / statistics.median(wall):.1f} |",
                  flush=True)
            src.unlink()
            dst.unlink()


if __name__ == "__main__":
    main()
