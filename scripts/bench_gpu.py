#!/usr/bin/env python
"""Throughput of AOD-Net per backend: model only and end to end, and the comparison chart.

For each case (torch fp32, torch fp16, TensorRT fp16, and ONNX Runtime on the CPU for
reference) it measures

* **model** MP/s: batches of ``--tile``^2 tiles through ``backend.submit`` with two batches in
  flight, host arrays in and out (so the host<->device copies are included);
* **device** MP/s (GPU cases only): the network alone on tensors already on the GPU;
* **end to end** MP/s: ``tiledehaze.process_file`` on an uncompressed RGB TIFF of
  ``--size`` x ``--size`` pixels (default 20000), reading, tiling, blending and writing included.

Cases that cannot run here are listed with the reason and drawn as empty bars, so the script
runs (and says what it skipped) on a machine without a GPU. Results go to ``--out`` as JSON
and as the "TensorRT vs PyTorch throughput" bar chart (PNG, matplotlib).

    python scripts/bench_gpu.py                          # everything, 20000^2 TIFF
    python scripts/bench_gpu.py --size 8192 --seconds 5  # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiledehaze  # noqa: E402
from benchlib import machine, write_large_tiff  # noqa: E402
from tiledehaze.backends import base, create_backend  # noqa: E402
from tiledehaze.pipeline import pipelined  # noqa: E402
from tiledehaze.models.aodnet import AODNet, load_weights  # noqa: E402


@dataclass(frozen=True)
class Case:
    label: str
    backend: str
    precision: str
    gpu: bool


CASES = [
    Case("torch fp32", "torch", "fp32", False),          # CUDA where available, else CPU
    Case("torch fp16", "torch-cuda", "fp16", True),
    Case("TensorRT fp16", "tensorrt", "fp16", True),
    Case("ONNX Runtime CPU", "onnxruntime", "fp32", False),
]


@dataclass
class Result:
    label: str
    backend: str
    precision: str
    describe: str = ""
    skipped: str | None = None
    model_mps: float | None = None
    device_mps: float | None = None
    e2e_mps: float | None = None
    e2e_seconds: float | None = None


def timed_mps(fn, pixels_per_call: int, seconds: float, min_calls: int = 3) -> float:
    """Megapixels per second of ``fn`` after one warm-up call, over at least ``seconds``."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * pixels_per_call / (time.perf_counter() - start) / 1e6


def model_mps(backend, tile: int, batch: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    tiles = rng.random((batch, tile, tile, 3), dtype=np.float32)
    rounds = 4  # batches per timed call, two in flight

    def go():
        for _ in pipelined(backend.submit, (tiles for _ in range(rounds)), depth=2):
            pass

    return timed_mps(go, rounds * batch * tile * tile, seconds)


def device_mps(backend, tile: int, batch: int, seconds: float) -> float | None:
    """The network alone on device-resident tensors (torch CUDA and TensorRT only)."""
    import torch

    if getattr(backend, "on_gpu", False):  # torch on CUDA
        x = torch.rand(batch, 3, tile, tile, device=backend.device).to(backend.dtype)
        x = x.contiguous(memory_format=torch.channels_last)

        def go():
            with torch.inference_mode():
                backend.module(x)
            torch.cuda.synchronize(backend.device)

        return timed_mps(go, batch * tile * tile, seconds)
    if backend.name == "tensorrt":
        shape = (batch, 3, tile, tile)
        engine = backend.engine_for(shape)
        ctx = engine.context(0)
        stream = backend._slots[0].stream
        x = torch.rand(shape, device=backend.device).to(engine.input_dtype)
        y = torch.empty(shape, device=backend.device, dtype=engine.output_dtype)
        ctx.set_input_shape(engine.input_name, shape)
        ctx.set_tensor_address(engine.input_name, x.data_ptr())
        ctx.set_tensor_address(engine.output_name, y.data_ptr())

        def go():
            ctx.execute_async_v3(stream.cuda_stream)
            stream.synchronize()

        return timed_mps(go, batch * tile * tile, seconds)
    return None


def run_case(case: Case, network, args, tiff: Path | None, workdir: Path) -> Result:
    result = Result(case.label, case.backend, case.precision)
    reason = base._PROBES[case.backend]().unavailable
    if reason is not None:
        result.skipped = f"{case.backend}: {reason}"
        return result
    options = dict(precision=case.precision, threads=args.threads)
    if args.batch:
        options["batch"] = args.batch
    if case.backend == "tensorrt":
        options.update(tile=args.tile)
    try:
        backend = create_backend(case.backend, network, **options)
    except tiledehaze.TileDehazeError as exc:
        result.skipped = str(exc)
        return result
    if case.gpu and not getattr(backend, "on_gpu", True):
        result.skipped = f"{case.backend}: runs on the CPU here"
        return result
    result.describe = backend.describe()
    batch = backend.preferred_batch
    result.model_mps = model_mps(backend, args.tile, batch, args.seconds)
    result.device_mps = device_mps(backend, args.tile, batch, args.seconds) if case.gpu or \
        getattr(backend, "on_gpu", False) else None
    if tiff is not None:
        dst = workdir / f"out-{case.backend}-{case.precision}.tif"
        extra = {"precision": case.precision}
        start = time.perf_counter()
        tiledehaze.process_file(tiff, dst, backend=case.backend, weights=args.weights, threads=args.threads,
                                tile=args.tile, batch=args.batch, compression="none", overwrite=True, **extra)
        result.e2e_seconds = time.perf_counter() - start
        result.e2e_mps = args.size * args.size / result.e2e_seconds / 1e6
        dst.unlink(missing_ok=True)
    return result


def draw_chart(results: list[Result], path: Path, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'tiledehaze[bench]'); no chart drawn"
    labels = [r.label for r in results]
    series = [("model (host in/out)", "model_mps"), ("device only", "device_mps"), ("end to end", "e2e_mps")]
    x = np.arange(len(labels))
    width = 0.26
    fig, ax = plt.subplots(figsize=(9, 5))
    top = max([getattr(r, k) or 0 for r in results for _, k in series] + [1])
    for i, (name, key) in enumerate(series):
        values = [getattr(r, key) or 0 for r in results]
        bars = ax.bar(x + (i - 1) * width, values, width, label=name)
        for bar, v in zip(bars, values):
            if v:
                ax.annotate(f"{v:.0f}" if v >= 10 else f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v),
                            ha="center", va="bottom", fontsize=8)
    for xi, r in zip(x, results):
        if r.skipped:
            ax.text(xi, top * 0.02, "skipped:\n" + _wrap(r.skipped.split(": ", 1)[-1]), ha="center",
                    va="bottom", fontsize=7, color="grey", rotation=90)
    ax.set_xticks(x, labels)
    ax.set_ylabel("megapixels per second")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _wrap(text: str, width: int = 28) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines[:4])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tile", type=int, default=1024, help="tile side (default: 1024)")
    p.add_argument("--batch", type=int, help="tiles per call (default: what suits each backend)")
    p.add_argument("--size", type=int, default=20000, help="side of the end-to-end TIFF (default: 20000); 0 skips it")
    p.add_argument("--seconds", type=float, default=10.0, help="time per model measurement (default: 10)")
    p.add_argument("--threads", type=int, help="CPU threads for CPU backends (default: all cores)")
    p.add_argument("--weights", type=Path, help="AOD-Net weights (default: the shipped ones, else random)")
    p.add_argument("--cases", nargs="*", help="labels to run (default: all): " + ", ".join(c.label for c in CASES))
    p.add_argument("--out", type=Path, default=Path("runs/bench_gpu"), help="where results go")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

    try:
        weights = load_weights(args.weights)
    except tiledehaze.ConfigError:
        from tiledehaze.models.aodnet import init_weights, save_weights

        # the timing does not depend on the values; write them so process_file can load them
        weights = init_weights(seed=0)
        args.weights = args.out / "random-weights.safetensors"
        save_weights(weights, args.weights)
        print("note: no shipped weights found; timing random weights (speed does not depend on them)")
    network = AODNet(weights)
    cases = [c for c in CASES if not args.cases or c.label in args.cases]

    with tempfile.TemporaryDirectory(prefix="bench_gpu_", dir=args.out) as tmp:
        workdir = Path(tmp)
        tiff = None
        if args.size:
            tiff = workdir / f"hazy-{args.size}.tif"
            start = time.perf_counter()
            write_large_tiff(tiff, args.size, args.size)
            print(f"made {tiff.name}: {args.size}x{args.size} RGB, uncompressed, "
                  f"{tiff.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s")
        results = []
        for case in cases:
            print(f"-- {case.label}", flush=True)
            r = run_case(case, network, args, tiff, workdir)
            results.append(r)
            if r.skipped:
                print(f"   skipped: {r.skipped}")
            else:
                device = f", device only {r.device_mps:.1f} MP/s" if r.device_mps else ""
                e2e = f", end to end {r.e2e_mps:.1f} MP/s ({r.e2e_seconds:.0f} s)" if r.e2e_mps else ""
                print(f"   {r.describe}: model {r.model_mps:.1f} MP/s{device}{e2e}")

    meta = {"tile": args.tile, "batch": args.batch, "size": args.size, "seconds": args.seconds,
            "machine": machine()}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]},
                                                      indent=2))
    chart = args.out / "tensorrt_vs_pytorch.png"
    problem = draw_chart(results, chart, f"TensorRT vs PyTorch throughput (AOD-Net, {args.tile}^2 tiles)")
    print(problem or f"chart: {chart}")
    print(f"results: {args.out / 'results.json'}")
    skipped = [r for r in results if r.skipped]
    if skipped:
        print("skipped here:")
        for r in skipped:
            print(f"  {r.label}: {r.skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
