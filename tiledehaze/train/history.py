"""Per-epoch metrics: appended to CSV and JSONL as they come, and drawn as a PNG of the curves."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..io.atomic import write_atomic

COLUMNS = ["epoch", "train_loss", "val_loss", "val_psnr", "val_ssim", "hazy_psnr", "hazy_ssim",
           "k_alive", "lr", "recoveries", "seconds"]


def append(out_dir: Path, row: dict[str, Any]) -> None:
    """Add one epoch's row to ``metrics.csv`` and ``metrics.jsonl``."""
    out_dir = Path(out_dir)
    csv_path = out_dir / "metrics.csv"
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
    with (out_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def read(out_dir: Path, *, up_to_epoch: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (optionally only epochs <= ``up_to_epoch``)."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if up_to_epoch is None or r["epoch"] <= up_to_epoch]


def rewrite(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``metrics.csv`` and ``metrics.jsonl`` with ``rows``, each file atomically (on resume)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(Path(out_dir) / "metrics.csv", text.getvalue())
    write_atomic(Path(out_dir) / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in rows))


def plot(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Draw training/validation loss and validation PSNR (with the hazy input's) to ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(out_dir) / "curves.png"
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train MSE")
    ax1.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation MSE")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("MSE")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(epochs, [r["val_psnr"] for r in rows], "o-", label="AOD-Net")
    ax2.plot(epochs, [r["hazy_psnr"] for r in rows], "--", label="hazy input")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation PSNR (dB)")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
