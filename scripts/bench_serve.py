"""Load test of ``tiledehaze serve`` on localhost: a bounded number of uploads, a few in parallel.

Starts the real command (``tiledehaze serve --port P --workers W``) in a child process, sends
``--requests`` uploads of generated photos from ``--parallel`` client threads (every
``--bad-every``-th upload is not an image and must get 415), and reports latency, throughput
and the server's peak memory. The baseline, side by side in the same run, restores the same
files with ``tiledehaze.process_file`` one after another in this process. Rounds are
interleaved across configurations ``--repeats`` times; medians are reported.

    python scripts/bench_serve.py --requests 36 --parallel 4 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from benchlib import hazy_texture, machine
from PIL import Image

from tiledehaze import process_file


def photos(count: int, side: int) -> list[bytes]:
    """JPEG uploads of ``side`` x ``side``, each a different crop of a hazy texture."""
    texture = hazy_texture(2 * side)
    out = []
    for i in range(count):
        y, x = (i * 37) % side, (i * 61) % side
        buf = io.BytesIO()
        Image.fromarray(texture[y:y + side, x:x + side]).save(buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """``tiledehaze serve`` in a child process."""

    def __init__(self, workers: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "tiledehaze.cli", "serve", "--port", str(self.port),
                                      "--workers", str(workers)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/api/models", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

    def stop(self) -> float:
        rss = peak_rss_mb(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(30)
        return rss


def load(url: str, uploads: list[bytes], parallel: int, bad_every: int) -> dict:
    def one(i: int) -> tuple[float, int, bool]:
        bad = bad_every and i % bad_every == bad_every - 1
        body = b"this is not an image" if bad else uploads[i % len(uploads)]
        start = time.perf_counter()
        r = httpx.post(f"{url}/api/restore", files={"file": (f"p{i}.jpg", body)}, timeout=600)
        ok = r.status_code == (415 if bad else 200)
        return time.perf_counter() - start, r.status_code, ok

    n = len(uploads)
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    good = [t for (t, status, _) in results if status == 200]
    return {"wall": wall, "latencies": good, "failed": sum(not ok for *_, ok in results), "served": len(good)}


def baseline(uploads: list[bytes], tmp: Path, bad_every: int) -> dict:
    start = time.perf_counter()
    latencies = []
    for i, body in enumerate(uploads):
        if bad_every and i % bad_every == bad_every - 1:
            continue
        t = time.perf_counter()
        src, dst = tmp / f"in{i}.jpg", tmp / f"out{i}.jpg"
        src.write_bytes(body)
        process_file(src, dst, overwrite=True)
        latencies.append(time.perf_counter() - t)
    return {"wall": time.perf_counter() - start, "latencies": latencies, "failed": 0, "served": len(latencies)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=36)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--side", type=int, default=1024, help="photo side in pixels (default: 1024, 1 MP)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server --workers values to compare")
    ap.add_argument("--bad-every", type=int, default=12, help="every Nth upload is not an image (0: none)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    uploads = photos(args.requests, args.side)
    mp = args.side * args.side / 1e6
    configs = ["baseline"] + [f"serve --workers {w}" for w in args.workers]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    rss: dict[str, list[float]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for config in configs:
                if config == "baseline":
                    runs[config].append(baseline(uploads, Path(tmp), args.bad_every))
                    continue
                server = Server(int(config.split()[-1]))
                try:
                    runs[config].append(load(server.url, uploads, args.parallel, args.bad_every))
                finally:
                    rss[config].append(server.stop())

    print(f"{args.requests} uploads of {args.side}x{args.side} JPEG ({mp:.2f} MP), {args.parallel} clients in "
          f"parallel, every {args.bad_every}th not an image; median of {args.repeats} interleaved rounds; "
          f"{machine()}")
    print("| configuration | wall s | images/s | MP/s | latency median s | latency p90 s | wrong answers | "
          "server peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for config in configs:
        rounds = runs[config]
        wall = statistics.median(r["wall"] for r in rounds)
        served = rounds[0]["served"]
        lat = sorted(t for r in rounds for t in r["latencies"])
        p90 = lat[int(0.9 * (len(lat) - 1))]
        failed = sum(r["failed"] for r in rounds)
        peak = f"{statistics.median(rss[config]):.0f}" if rss[config] else "-"
        name = "baseline: process_file, one after another" if config == "baseline" else config
        print(f"| {name} | {wall:.1f} | {served / wall:.2f} | {served * mp / wall:.2f} | "
              f"{statistics.median(lat):.2f} | {p90:.2f} | {failed} | {peak} |")


if __name__ == "__main__":
    main()
