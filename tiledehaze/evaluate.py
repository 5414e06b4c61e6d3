"""Evaluate dehazing models on folders of hazy images, with or without ground truth.

Pairs are matched by file name: ``hazy/x.png`` pairs with ``clear/x.*``; failing that, RESIDE
style suffixes are stripped one ``_<number>`` at a time (``0001_0.8_0.2.png`` -> ``0001_0.8`` ->
``0001``); images are read as ``process`` reads them (see :mod:`tiledehaze.dataset`). Per
model and image the report holds PSNR and SSIM against the clear image (when there is one), a
no-reference haze score before and after, and the run time; it is written as JSON and
Markdown, with one labelled picture grid per image (hazy | models... | clear).

Metric settings (also written into every report, see :data:`METRIC_SETTINGS`): images are RGB
float in [0, 1]; PSNR and SSIM are scikit-image's with the settings of :mod:`tiledehaze.metrics`
(SSIM as Wang et al. 2004, averaged over the three channels). The haze score is the mean dark
channel (15x15 patch) in [0, 1]: lower means less haze.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .dataset import clear_candidates, find_clear, image_files, images_by_stem, read_rgb
from .errors import ConfigError, InputError, OutputError
from .io.atomic import atomic_output, write_atomic
from .models import Model, build_model
from .options import RunOptions
from .metrics import (BLOCK, HAZE_PATCH, PSNR_SETTINGS, SMOOTH_STD, SSIM_SETTINGS, block_gain, call_text, haze_score,
                      mean_b_star, psnr, ssim)

log = logging.getLogger(__name__)

METRIC_SETTINGS: dict[str, Any] = {
    "colour": "RGB, float in [0, 1] (8-bit inputs / 255, 16-bit / 65535)",
    "psnr": call_text("skimage.metrics.peak_signal_noise_ratio", PSNR_SETTINGS),
    "ssim": (call_text("skimage.metrics.structural_similarity", SSIM_SETTINGS)
             + ", mean over channels (Wang et al. 2004)"),
    "haze_score": f"mean dark channel (min over RGB, {HAZE_PATCH}x{HAZE_PATCH} min filter), lower = less haze",
    "yellow_shift": ("mean CIELAB b* of the output minus that of the hazy input (OpenCV float Lab); "
                     "> 0 = yellower, < 0 = bluer; dehazing may raise it by revealing colour, a cast raises it everywhere"),
    "block_gain": (f"energy of the RGB steps across {BLOCK}x{BLOCK} block boundaries (where JPEG blocks meet) in "
                   f"smooth regions of the input (local grey standard deviation below {SMOOTH_STD}), output over input: "
                   "how much a model amplifies compression blocks and banding (1 = as the input)"),
    "time": "wall-clock seconds of tiledehaze.restore (tiled, default tile 1024), model already created",
}


@dataclass(frozen=True)
class Pair:
    """A hazy image and, where one exists, its clear ground truth."""

    name: str
    hazy: Path
    clear: Path | None = None


@dataclass
class Result:
    image: str
    model: str
    psnr: float | None
    ssim: float | None
    haze_before: float
    haze_after: float
    seconds: float | None
    yellow_shift: float = 0.0
    block_gain: float | None = None


@dataclass
class Report:
    results: list[Result]
    models: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Mean of every metric per model (``input`` is the hazy image itself)."""
        out: dict[str, dict[str, float | None]] = {}
        for model in ["input", *self.models]:
            rows = [r for r in self.results if r.model == model]
            out[model] = {key: _mean([getattr(r, key) for r in rows])
                          for key in ("psnr", "ssim", "haze_before", "haze_after", "yellow_shift", "block_gain",
                                      "seconds")}
        return out

    def to_json(self) -> dict[str, Any]:
        return _finite({"settings": self.settings, "models": self.models, "summary": self.summary(),
                        "results": [asdict(r) for r in self.results]})

    def to_markdown(self) -> str:
        lines = ["| image | model | PSNR dB | SSIM | haze before | haze after | yellow shift | block gain | time s |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.results:
            lines.append(f"| {r.image} | {r.model} | {_fmt(r.psnr, 2)} | {_fmt(r.ssim, 3)} | {r.haze_before:.3f} | "
                         f"{r.haze_after:.3f} | {r.yellow_shift:+.1f} | {_fmt(r.block_gain, 2)} | "
                         f"{_fmt(r.seconds, 2)} |")
        lines += ["", "Mean over images:", "",
                  "| model | PSNR dB | SSIM | haze before | haze after | yellow shift | block gain | time s |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, m in self.summary().items():
            lines.append(f"| {model} | {_fmt(m['psnr'], 2)} | {_fmt(m['ssim'], 3)} | {_fmt(m['haze_before'], 3)} | "
                         f"{_fmt(m['haze_after'], 3)} | {m['yellow_shift']:+.1f} | {_fmt(m['block_gain'], 2)} | "
                         f"{_fmt(m['seconds'], 2)} |")
        lines += ["", "Settings:", ""] + [f"- {k}: {v}" for k, v in self.settings.items()]
        return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    """JSON has no infinity (PSNR of identical images): write it as the string "inf"."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --- pairing -----------------------------------------------------------------------------------

def match_pairs(hazy_dir: str | Path, clear_dir: str | Path | None = None) -> list[Pair]:
    """Hazy images of a folder, each with its clear counterpart when ``clear_dir`` is given.

    A hazy image with no clear counterpart is an input error (a silent skip would bias the means).
    """
    hazy = image_files(hazy_dir)
    if not hazy:
        raise InputError(f"no images in {hazy_dir}")
    if clear_dir is None:
        return [Pair(p.stem, p) for p in hazy]
    by_stem = images_by_stem(clear_dir)
    pairs = []
    for p in hazy:
        match = find_clear(p, by_stem)
        if match is None:
            raise InputError(f"no clear image for {p.name} in {clear_dir} (tried {', '.join(clear_candidates(p.stem))})")
        pairs.append(Pair(p.stem, p, match))
    return pairs


# --- images --------------------------------------------------------------------------------------

def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Float RGB in [0, 1] (or uint8) to an 8-bit file."""
    if rgb.dtype != np.uint8:
        rgb = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OutputError(f"cannot write {path}")


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """``"top,bottom,left,right"`` -> bounds of ``clear[top:bottom, left:right]`` (e.g. ``10,470,10,630``)."""
    if text is None:
        return None
    try:
        top, bottom, left, right = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--crop-clear wants four integers top,bottom,left,right, not {text!r}") from None
    if not (0 <= top < bottom and 0 <= left < right):
        raise ConfigError(f"--crop-clear {text!r}: need 0 <= top < bottom and 0 <= left < right")
    return top, bottom, left, right


# --- running models ----------------------------------------------------------------------------

def dehaze(model: Model, image: np.ndarray, **restore_options: Any) -> np.ndarray:
    """Restore a float32 RGB image with a created model through the public tiled API."""
    from .api import restore

    return restore(image, model=model, **restore_options)


def labelled_grid(panels: Sequence[tuple[str, np.ndarray]], *, height: int = 384) -> np.ndarray:
    """Panels side by side, each scaled to ``height`` px and captioned; uint8 RGB."""
    bar = 28
    tiles = []
    for label, img in panels:
        img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        scale = height / img.shape[0]
        width = max(1, int(round(img.shape[1] * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (width, height), interpolation=interp)
        canvas = np.full((height + bar, width, 3), 255, np.uint8)
        canvas[bar:] = img
        cv2.putText(canvas, label, (6, bar - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(canvas)
        tiles.append(np.full((height + bar, 4, 3), 255, np.uint8))
    return np.hstack(tiles[:-1])


def evaluate(hazy_dir: str | Path, clear_dir: str | Path | None = None, *, models: Sequence[str] = ("dcp", "aodnet"),
             out_dir: str | Path | None = None, crop_clear: tuple[int, int, int, int] | None = None,
             model_options: dict[str, dict[str, Any]] | None = None,
             restore_options: dict[str, Any] | None = None, grids: bool = True) -> Report:
    """Run every model on every hazy image; score against ``clear_dir`` where given.

    ``model_options`` maps a model name to options for :func:`create_model` (e.g. weights);
    ``restore_options`` go to :func:`tiledehaze.restore` (e.g. ``tile``). With ``out_dir`` the
    report is written as ``report.json`` and ``report.md`` and grids as ``grids/<image>.png``.
    """
    model_options = model_options or {}
    restore_options = dict(restore_options or {})
    if not models:
        raise ConfigError("give at least one model")
    options = {name: RunOptions.create(model=name, **model_options.get(name, {})) for name in models}
    created = {name: build_model(opts) for name, opts in options.items()}
    pairs = match_pairs(hazy_dir, clear_dir)
    for model in created.values():  # warm up (sessions, caches) so the first image's time is not inflated
        dehaze(model, np.full((64, 64, 3), 0.5, np.float32), **restore_options)
    out = Path(out_dir) if out_dir is not None else None
    results: list[Result] = []
    for pair in pairs:
        hazy = read_rgb(pair.hazy)
        clear = None
        if pair.clear is not None:
            clear = read_rgb(pair.clear)
            if crop_clear is not None:
                top, bottom, left, right = crop_clear
                clear = clear[top:bottom, left:right]
            if clear.shape != hazy.shape:
                raise InputError(f"{pair.name}: clear image is {clear.shape[1]}x{clear.shape[0]}, hazy is "
                                 f"{hazy.shape[1]}x{hazy.shape[0]}; use --crop-clear top,bottom,left,right")
        before, hazy_b = haze_score(hazy), mean_b_star(hazy)
        results.append(Result(pair.name, "input", psnr(clear, hazy) if clear is not None else None,
                              ssim(clear, hazy) if clear is not None else None, before, before, None))
        panels = [("hazy", hazy)]
        for name, model in created.items():
            start = time.perf_counter()
            restored = dehaze(model, hazy, **restore_options)
            seconds = time.perf_counter() - start
            results.append(Result(pair.name, name, psnr(clear, restored) if clear is not None else None,
                                  ssim(clear, restored) if clear is not None else None, before,
                                  haze_score(restored), seconds, mean_b_star(restored) - hazy_b,
                                  block_gain(hazy, restored)))
            panels.append((name, restored))
            log.info("%s %s: %.2fs", pair.name, name, seconds)
        if clear is not None:
            panels.append(("clear", clear))
        if out is not None and grids:
            write_image(out / "grids" / f"{pair.name}.png", labelled_grid(panels))
    settings = dict(METRIC_SETTINGS, hazy_dir=Path(hazy_dir).name, clear_dir=Path(clear_dir).name if clear_dir else None,
                    crop_clear=list(crop_clear) if crop_clear else None,
                    models={name: m.describe() for name, m in created.items()},
                    weights_sha256={name: opts.weights_sha256() for name, opts in options.items()},
                    restore_options={k: v for k, v in restore_options.items()})
    report = Report(results, list(models), settings)
    if out is not None:
        write_atomic(out / "report.json", json.dumps(report.to_json(), indent=2) + "\n")
        write_atomic(out / "report.md", report.to_markdown())
    return report
