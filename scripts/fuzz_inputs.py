"""Mutation fuzzing of the readers: damaged TIFF/PNG/JPEG/WebP/BMP must be refused cleanly.

Valid small images in many layouts are mutated (bit flips, random bytes, truncations,
splices from other files, zeroed runs, duplicated runs) and restored with
``process_file``. Every outcome must be a correct output or a ``TileDehazeError`` with a
one-line message; anything else (another exception, a leftover temporary file, a case
slower than ``--slow`` seconds) is a finding, saved under ``--keep`` for reproduction.

    python scripts/fuzz_inputs.py --examples 5000 --seed 1

The bounded version that runs in CI is ``test_fuzzed_images_are_restored_or_refused_cleanly``.
"""

from __future__ import annotations

import argparse
import collections
import io
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import tifffile  # noqa: E402
from PIL import Image  # noqa: E402

from tiledehaze import TileDehazeError, process_file  # noqa: E402


def photo(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([127 + 100 * np.sin(x / (7 + c) + y / (11 + c)) for c in range(channels)], -1)
    return np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)


def seeds() -> dict[str, bytes]:
    """Valid inputs in the layouts the readers handle."""
    rgb, gray, rgba = photo(40, 56), photo(40, 56, 1)[..., 0], photo(40, 56, 4)
    out: dict[str, bytes] = {}

    def tif(name, data, **kw):
        buf = io.BytesIO()
        tifffile.imwrite(buf, data, **kw)
        out[name] = buf.getvalue()

    def pil(name, data, fmt, **kw):
        buf = io.BytesIO()
        Image.fromarray(data).save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()

    tif("tiff-tiled-zlib", rgb, tile=(16, 16), compression="zlib", photometric="rgb")
    tif("tiff-strips-raw", rgb, rowsperstrip=8, photometric="rgb")
    tif("tiff-jpeg", rgb, tile=(16, 16), compression="jpeg", photometric="rgb")
    tif("tiff-planar", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    tif("tiff-gray16", gray.astype(np.uint16) * 257, compression="zstd", predictor=True)
    tif("tiff-float", rgb.astype(np.float32) / 255, photometric="rgb", compression="zlib")
    tif("tiff-rgba", rgba, photometric="rgb", extrasamples=[2], tile=(16, 16))
    pil("png-rgb", rgb, "PNG")
    pil("png-rgba", rgba, "PNG")
    pil("png-gray", gray, "PNG")
    out["png-palette"] = _to_bytes(Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE), "PNG")
    out["png-16"] = cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes()
    pil("jpeg", rgb, "JPEG", quality=90)
    pil("jpeg-progressive", rgb, "JPEG", progressive=True)
    pil("jpeg-gray", gray, "JPEG")
    pil("webp", rgb, "WEBP")
    pil("bmp", rgb, "BMP")
    return out


def _to_bytes(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def mutate(data: bytes, corpus: list[bytes], rng: np.random.Generator) -> tuple[bytes, list[str]]:
    b = bytearray(data)
    ops = []
    for _ in range(int(rng.integers(1, 5))):
        if not b:
            break
        op = rng.choice(["flip", "byte", "truncate", "splice", "zero", "dup", "header-flip"])
        pos = int(rng.integers(0, len(b)))
        if op == "header-flip":  # headers and directories hold the interesting fields
            pos = int(rng.integers(0, min(len(b), 64)))
            b[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == "flip":
            b[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == "byte":
            b[pos] = int(rng.integers(0, 256))
        elif op == "truncate":
            b = b[:pos]
        elif op == "splice":
            other = corpus[int(rng.integers(0, len(corpus)))]
            start = int(rng.integers(0, len(other)))
            b[pos:pos] = other[start:start + int(rng.integers(1, 128))]
        elif op == "zero":
            n = int(rng.integers(1, 64))
            b[pos:pos + n] = bytes(len(b[pos:pos + n]))
        else:
            n = int(rng.integers(1, 64))
            b[pos:pos] = b[pos:pos + n]
        ops.append(f"{op}@{pos}")
    return bytes(b), ops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow", type=float, default=10.0, help="seconds after which a case counts as a finding")
    ap.add_argument("--keep", type=Path, default=Path("fuzz-findings"), help="folder for inputs that misbehave")
    args = ap.parse_args()

    corpus = seeds()
    names = sorted(corpus)
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tiledehaze-fuzz-"))
    outcomes: collections.Counter = collections.Counter()
    messages: collections.Counter = collections.Counter()
    findings: list[str] = []
    start = time.perf_counter()
    try:
        for i in range(args.examples):
            kind = names[i % len(names)]
            data, ops = mutate(corpus[kind], list(corpus.values()), rng)
            src, out = work / f"in-{kind}", work / "out.tif"
            src.write_bytes(data)
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            problem = None
            try:
                process_file(src, out, tile=64, max_pixels=4_000_000)
                outcome = "restored"
                tifffile.imread(out)
            except TileDehazeError as exc:
                outcome = "refused"
                text = str(exc)
                if "\n" in text.strip() or not text.strip():
                    problem = f"message is not one line: {text!r}"
                messages[re.sub(r"\d+", "N", text.replace(str(src), "<file>"))[:110]] += 1
            except Exception as exc:  # the findings this script exists for
                outcome = "crashed"
                problem = "".join(traceback.format_exception_only(exc)).strip()
                traceback.print_exc()
            elapsed = time.perf_counter() - t0
            if elapsed > args.slow:
                problem = (problem or "") + f" slow: {elapsed:.1f} s"
            if list(work.glob("*tiledehaze-tmp*")):
                problem = (problem or "") + " temporary file left behind"
            outcomes[outcome] += 1
            if problem:
                args.keep.mkdir(parents=True, exist_ok=True)
                keep = args.keep / f"{i:06d}-{kind}.bin"
                shutil.copyfile(src, keep)
                findings.append(f"{keep}: {kind} {' '.join(ops)}: {problem}")
            if (i + 1) % 500 == 0:
                print(f"{i + 1} cases, {dict(outcomes)}, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.examples} cases in {time.perf_counter() - start:.0f} s: {dict(outcomes)}; {len(findings)} findings")
    print("most common refusals:")
    for text, n in messages.most_common(15):
        print(f"  {n:5d}  {text}")
    for f in findings:
        print("FINDING", f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
