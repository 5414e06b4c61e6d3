"""Size and install time of a fresh virtual environment: the runtime install against one with torch.

    python scripts/bench_install.py --rounds 3

``runtime`` is ``pip install -e .`` (what ``make demo`` does); ``with torch`` adds
``torch==2.13.0`` and matplotlib, the packages the runtime required before torch became an
extra. Rounds alternate between the two so that both see the same machine and pip cache.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"runtime (no torch)": [], "with torch": ["torch==2.13.0", "matplotlib>=3.8"]}


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def install(extra: list[str], where: Path) -> tuple[float, float]:
    """(seconds, MB) of creating a venv at ``where`` and installing the project into it."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    subprocess.run([str(where / "bin" / "pip"), "install", "-q", *extra, "-e", str(ROOT)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, folder_mb(where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, extra in VARIANTS.items():
                where = Path(tmp) / f"venv{r}{len(extra)}"
                t, mb = install(extra, where)
                seconds[name].append(t)
                sizes[name] = mb
                print(f"round {r + 1}: {name}: {t:.1f} s, {mb:.0f} MB", flush=True)
                shutil.rmtree(where)
    print("\n| install | median s | size MB |\n|---|---|---|")
    for name in VARIANTS:
        print(f"| {name} | {statistics.median(seconds[name]):.0f} | {sizes[name]:.0f} |")


if __name__ == "__main__":
    main()
