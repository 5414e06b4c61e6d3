"""One TIFF spread over dask workers: identical to the single-process output, fault tolerant, resumable."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import tiledehaze
from tiledehaze.batch import process_batch, process_split
from tiledehaze.batch.split import SCRATCH_MARK, restore_block
from tiledehaze.cli import main
from tiledehaze.options import RunOptions

from .cluster import start_scheduler, stop

from .images import hazy_photo

ROOT = Path(__file__).resolve().parents[1]
DCP = dict(model="dcp", patch=5, guided_radius=4)  # a 21 px halo, so that small tiles still work


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           worker_dashboard_address=None, silence_logs=logging.ERROR)
    with Client(cluster) as c:
        yield c
    cluster.close()


def big_tiff(path: Path, height: int = 300, width: int = 260, dtype=np.uint8, seed: int = 3) -> Path:
    img = hazy_photo(height, width, seed)
    if dtype == np.uint16:
        img = img.astype(np.uint16) * 257 + np.uint16(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, img, tile=(32, 32), compression="zlib", photometric="rgb")
    return path


def scratch_folders(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if SCRATCH_MARK in p.name]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("model", ["aodnet", "dcp"])
def test_blocks_on_workers_write_the_same_file_as_one_process(tmp_path, client, weights_file, model, dtype):
    src = big_tiff(tmp_path / "in.tif", dtype=dtype)
    kw = dict(weights=weights_file) if model == "aodnet" else dict(DCP)
    kw.pop("model", None)
    single = tiledehaze.process_file(src, tmp_path / "one.tif", model=model, tile=64, **kw)
    options = RunOptions.create(model=model, tile=64, **kw)
    split = process_split(src, tmp_path / "many.tif", options=options, client=client, blocks=4)
    assert split.blocks == 4 and single.blocks == 0
    one, many = tifffile.imread(single.output), tifffile.imread(split.output)
    assert many.dtype == dtype and np.array_equal(one, many)
    assert (tmp_path / "one.tif").read_bytes() == (tmp_path / "many.tif").read_bytes()
    assert not scratch_folders(tmp_path)


def test_cli_spreads_one_file_over_local_workers(tmp_path, weights_file, capsys):
    src = big_tiff(tmp_path / "in.tif")
    assert main(["process", str(src), "-o", str(tmp_path / "one.tif"), "--weights", weights_file, "--tile", "64",
                 "--compression", "zstd", "--no-progress"]) == 0
    assert main(["process", str(src), "-o", str(tmp_path / "two.tif"), "--weights", weights_file, "--tile", "64",
                 "--compression", "zstd", "--no-progress", "--workers", "2", "--memory-limit", "1GB"]) == 0
    assert (tmp_path / "one.tif").read_bytes() == (tmp_path / "two.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "two.tif") as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.ZSTD


def test_non_tiff_input_cannot_be_spread_and_says_so(tmp_path, make_photo, weights_file, capsys):
    src = make_photo(tmp_path / "a.png", 64, 64)
    code = main(["process", str(src), "-o", str(tmp_path / "b.png"), "--weights", weights_file, "--workers", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "TIFF" in err[0]
    assert not (tmp_path / "b.png").exists()


def kill_worker_once(source, options, compression, span, state, threads=None, **kw):
    """Kills its own worker process the first time it restores the second block (as an OOM killer would)."""
    marker = Path(source).parent / "killed-once.marker"
    if span[0] > 0 and not marker.exists():
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    return restore_block(source, options, compression, span, state, threads, **kw)


def test_a_worker_killed_mid_run_has_its_block_redone(tmp_path, client, weights_file):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    src = big_tiff(tmp_path / "in.tif")
    single = tiledehaze.process_file(src, tmp_path / "one.tif", weights=weights_file, tile=64)
    options = RunOptions.create(weights=weights_file, tile=64)
    result = process_split(src, tmp_path / "many.tif", options=options, client=client, blocks=3,
                           restore=kill_worker_once)
    assert (tmp_path / "killed-once.marker").exists()
    assert result.blocks == 3 and np.array_equal(tifffile.imread(single.output), tifffile.imread(result.output))
    assert not scratch_folders(tmp_path)


def slow_after_two(source, options, compression, span, state, threads=None, **kw):
    """The first two blocks run at once; later ones take long enough for the test to kill the client."""
    if span[0] >= 128:
        time.sleep(60)
    return restore_block(source, options, compression, span, state, threads, **kw)


def test_a_killed_client_leaves_no_output_and_a_rerun_reuses_the_finished_blocks(tmp_path, client, weights_file):
    src = big_tiff(tmp_path / "in.tif")
    dst = tmp_path / "out.tif"
    script = (f"from tiledehaze.batch import process_split; from tiledehaze.options import RunOptions\n"
              f"from tests.test_split import slow_after_two\n"
              f"if __name__ == '__main__':\n"
              f"    process_split({str(src)!r}, {str(dst)!r}, options=RunOptions.create(weights={weights_file!r}, "
              f"tile=64), workers=2, blocks=5, restore=slow_after_two)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = [p for folder in scratch_folders(tmp_path) for p in folder.glob("rows-*.bin")]
            if len(done) >= 2:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(done) >= 2
    assert not dst.exists()

    options = RunOptions.create(weights=weights_file, tile=64)
    result = process_split(src, dst, options=options, client=client, blocks=3)  # fewer workers this time
    single = tiledehaze.process_file(src, tmp_path / "one.tif", weights=weights_file, tile=64)
    assert result.reused >= 2 and result.blocks > result.reused
    assert dst.read_bytes() == single.output.read_bytes()
    assert not scratch_folders(tmp_path)


def test_an_existing_cluster_of_worker_processes_restores_one_file(tmp_path, weights_file):
    src = big_tiff(tmp_path / "in.tif", dtype=np.uint16)
    address, procs, common = start_scheduler(tmp_path)
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                       "--nworkers", "2", "--nthreads", "1", "--no-dashboard"], **common))
        from distributed import Client

        with Client(address, timeout="20s") as c:
            c.wait_for_workers(2, timeout=60)
        run = subprocess.run([sys.executable, "-m", "tiledehaze.cli", "process", str(src), "-o",
                              str(tmp_path / "out.tif"), "--weights", weights_file, "--tile", "64", "--scheduler",
                              address, "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        stop(procs)
    assert run.returncode == 0, run.stderr
    assert "2 blocks on dask workers" in run.stdout
    single = tiledehaze.process_file(src, tmp_path / "one.tif", weights=weights_file, tile=64)
    assert (tmp_path / "out.tif").read_bytes() == single.output.read_bytes()


def test_a_cluster_without_workers_is_a_clear_error(tmp_path, weights_file, monkeypatch, capsys):
    from tiledehaze.batch import split

    monkeypatch.setattr(split, "WORKER_WAIT_S", 1)
    src = big_tiff(tmp_path / "in.tif")
    address, procs, _ = start_scheduler(tmp_path)
    try:
        code = main(["process", str(src), "-o", str(tmp_path / "out.tif"), "--weights", weights_file,
                     "--scheduler", address, "--no-progress"])
    finally:
        stop(procs)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no dask worker" in err[0]
    assert not (tmp_path / "out.tif").exists()


def test_a_batch_spreads_only_the_files_above_the_threshold(tmp_path, weights_file, make_photo, caplog):
    src = tmp_path / "src"
    big_tiff(src / "big.tif", 300, 260)
    make_photo(src / "small.tif", 64, 80, 1)
    caplog.set_level(logging.INFO, logger="tiledehaze")
    report = process_batch([src], tmp_path / "out", weights=weights_file, tile=64, workers=2, split_above=0.05)
    assert len(report.done) == 2 and not report.failed
    spread = [r.getMessage() for r in caplog.records if "spread over the workers" in r.getMessage()]
    assert len(spread) == 1 and "big.tif" in spread[0]
    for name in ("big.tif", "small.tif"):
        one = tiledehaze.process_file(src / name, tmp_path / f"one-{name}", weights=weights_file, tile=64)
        assert (tmp_path / "out" / name).read_bytes() == one.output.read_bytes()


class Stop(Exception):
    pass


@pytest.fixture
def cluster_options(monkeypatch) -> dict:
    """What a local cluster would be started with; starting it raises Stop instead."""
    seen = {}

    def no_cluster(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr("distributed.LocalCluster", no_cluster)
    return seen


def test_local_workers_get_the_memory_limit_asked_for(tmp_path, weights_file, cluster_options):
    seen = cluster_options
    src = big_tiff(tmp_path / "in.tif")
    with pytest.raises(Stop):
        tiledehaze.process_file(src, tmp_path / "o.tif", weights=weights_file, workers=2, memory_limit="700MB")
    assert seen["memory_limit"] == 700_000_000 and seen["n_workers"] == 2


def test_without_a_limit_fewer_workers_start_when_blocks_would_not_fit(tmp_path, weights_file, monkeypatch,
                                                                       cluster_options):
    from tiledehaze.batch import memory
    from tiledehaze.batch.split import block_memory, plan_blocks
    from tiledehaze.engine import make_plan
    from tiledehaze.io import probe

    seen = cluster_options
    src = big_tiff(tmp_path / "in.tif")
    info = probe(src)
    plan = make_plan(info.height, info.width, tiledehaze.get_model(weights=weights_file), tile=64)
    need = max(block_memory(info, s, tile=64, overlap=plan.overlap) for s in plan_blocks(info.height, 32, plan, 4))
    monkeypatch.setattr(memory, "available_memory", lambda: int(need * 2.5 / 0.85))
    with pytest.raises(Stop):
        tiledehaze.process_file(src, tmp_path / "o.tif", weights=weights_file, tile=64, workers=4)
    assert seen["n_workers"] == 2 and seen["memory_limit"] >= need


def damaged_rows(source, options, compression, span, state, threads=None, **kw):
    """As a worker meets a TIFF tile it cannot decode in the second block."""
    from tiledehaze.errors import InputError

    if span[0] > 0:
        raise InputError(f"{source}: damaged TIFF data, cannot decode rows {span[0]}-{span[1]}")
    return restore_block(source, options, compression, span, state, threads, **kw)


def test_a_block_that_fails_leaves_no_output_and_a_clear_error(tmp_path, client, weights_file):
    import cloudpickle

    from tiledehaze.errors import InputError

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    src = big_tiff(tmp_path / "in.tif")
    options = RunOptions.create(weights=weights_file, tile=64)
    with pytest.raises(InputError, match="cannot decode rows"):
        process_split(src, tmp_path / "out.tif", options=options, client=client, blocks=3, restore=damaged_rows)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["in.tif"]
    assert not [p for p in tmp_path.iterdir() if ".tiledehaze-tmp-" in p.name]


def test_a_geotiff_with_nodata_and_a_scene_range_is_spread_exactly(tmp_path, client, weights_file):
    img = hazy_photo(300, 260, 5).astype(np.uint16) * 40  # uint16 using part of its range
    img[:40, :70] = 0  # a nodata corner
    src = tmp_path / "geo.tif"
    tifffile.imwrite(src, img, tile=(32, 32), compression="zlib", photometric="rgb",
                     extratags=[(42113, "s", 0, "0", True)])
    tiledehaze.process_file(src, tmp_path / "one.tif", weights=weights_file, tile=64)
    options = RunOptions.create(weights=weights_file, tile=64)
    split = process_split(src, tmp_path / "many.tif", options=options, client=client, blocks=3)
    assert split.blocks == 3
    out = tifffile.imread(split.output)
    assert np.array_equal(out[:40, :70], img[:40, :70])  # nodata kept exactly
    assert (tmp_path / "one.tif").read_bytes() == (tmp_path / "many.tif").read_bytes()
