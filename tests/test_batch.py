"""Batch processing: folders in, mirrored folder out; resumable, crash-safe, failures reported."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile
from PIL import Image

import tiledehaze
from tiledehaze import batch as batch_mod
from tiledehaze.batch import memory
from tiledehaze.engine import plan_overlap
from tiledehaze.batch import MANIFEST_NAME, REPORT_NAME, estimate_job_memory, process_batch, run_job
from tiledehaze.cli import main

from .cluster import free_port, start_scheduler, stop

ROOT = Path(__file__).resolve().parents[1]


def visible_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def images(folder: Path) -> list[str]:
    return [f for f in visible_files(folder) if f != REPORT_NAME]


def read_report(outdir: Path) -> dict:
    return json.loads((outdir / REPORT_NAME).read_text())


@pytest.fixture
def photos(tmp_path, make_photo) -> Path:
    src = tmp_path / "photos"
    make_photo(src / "a.jpg", 80, 120, 1)
    make_photo(src / "trip" / "b.png", 96, 64, 2)
    make_photo(src / "trip" / "day2" / "c.TIF", 70, 90, 3)
    (src / "notes.txt").write_text("not an image")
    return src


def test_folder_is_mirrored_with_each_files_format(photos, tmp_path, weights_file, capsys):
    out = tmp_path / "out"
    assert main(["process", str(photos), "-o", str(out), "--weights", weights_file, "--no-progress"]) == 0
    assert images(out) == ["a.jpg", "trip/b.png", "trip/day2/c.TIF"]
    assert Image.open(out / "a.jpg").format == "JPEG"
    assert Image.open(out / "trip/b.png").format == "PNG"
    assert tifffile.imread(out / "trip/day2/c.TIF").shape == (70, 90, 3)
    report = read_report(out)
    assert report["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    assert "3 done" in capsys.readouterr().out


def test_rerun_skips_finished_files_and_redoes_changed_ones(photos, tmp_path, weights_file):
    out = tmp_path / "out"
    args = dict(weights=weights_file)
    assert len(process_batch([photos], out, **args).done) == 3
    before = {f: (out / f).stat().st_mtime_ns for f in images(out)}

    again = process_batch([photos], out, **args)
    assert (len(again.done), len(again.skipped)) == (0, 3)
    assert {f: (out / f).stat().st_mtime_ns for f in images(out)} == before

    b = photos / "trip" / "b.png"
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))  # the input changed
    (out / "a.jpg").unlink()  # an output went missing
    redo = process_batch([photos], out, **args)
    assert sorted(r.relpath for r in redo.done) == ["a.jpg", "trip/b.png"]

    assert len(process_batch([photos], out, tile=64, **args).done) == 3  # settings changed
    assert len(process_batch([photos], out, tile=64, overwrite=True, **args).done) == 3


def test_output_folder_inside_the_input_folder_is_never_walked(photos, weights_file):
    out = photos / "dehazed"
    assert len(process_batch([photos], out, weights=weights_file).done) == 3
    report = process_batch([photos], out, weights=weights_file)
    assert len(report.skipped) == 3 and not report.failed
    assert not (out / "dehazed").exists()


def test_glob_and_format_conversion(photos, tmp_path, weights_file):
    out = tmp_path / "out"
    report = process_batch([photos], out, weights=weights_file, globs=["*.jpg", "*.png"], format="tiff")
    assert images(out) == ["a.tif", "trip/b.tif"]
    assert not report.failed


def test_bad_files_are_recorded_and_the_rest_carry_on(photos, tmp_path, weights_file, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["process", str(photos), str(tmp_path / "missing.tif"), "-o", str(out),
                 "--weights", weights_file, "--no-progress"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1
    assert "Traceback" not in err
    report = read_report(out)
    assert report["counts"]["done"] == 3
    failed = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert set(failed) == {"broken.jpg", "empty.png", "missing.tif"}
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert "empty" in failed["empty.png"]
    assert "broken.jpg" in err and "3 done" in captured.out


def test_a_file_tiledehaze_did_not_write_is_not_replaced(photos, tmp_path, weights_file):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.jpg").write_bytes(b"the user's own file")
    report = process_batch([photos], out, weights=weights_file)
    assert [Path(r.source).name for r in report.failed] == ["a.jpg"]
    assert "--overwrite" in report.failed[0].reason
    assert (out / "a.jpg").read_bytes() == b"the user's own file"
    assert not process_batch([photos], out, weights=weights_file, overwrite=True).failed


def test_output_folder_that_is_the_input_folder_is_refused(photos, weights_file):
    with pytest.raises(tiledehaze.ConfigError, match="replace the inputs"):
        process_batch([photos], photos, weights=weights_file)


def test_full_disk_stops_the_batch_without_partial_files(photos, tmp_path, weights_file, monkeypatch, capsys):
    class FullDisk:
        """``os`` as the writer of outputs sees it on a full disk."""

        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            if Path(dst).suffix in (".json", ".jsonl"):  # the small bookkeeping files still fit
                return os.replace(src, dst)
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tiledehaze.io.atomic.os", FullDisk())
    out = tmp_path / "out"
    code = main(["process", str(photos), "-o", str(out), "--weights", weights_file, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3
    assert "no space left" in err and "Traceback" not in err
    assert not [p for p in out.rglob("*") if p.is_file() and ".tiledehaze-tmp-" in p.name]
    assert images(out) == []
    assert read_report(out)["aborted"]


def test_unwritable_output_folder_is_a_clear_error(photos, tmp_path, weights_file, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["process", str(photos), "-o", str(blocker / "out"), "--weights", weights_file])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and err[0].startswith("tiledehaze: error:")


def test_sigkill_leaves_no_partial_output_and_the_rerun_finishes_the_rest(tmp_path, make_photo, weights_file):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(8):
        make_photo(src / f"p{i}.tif", 400, 600, i)
    cmd = [sys.executable, "-m", "tiledehaze.cli", "process", str(src), "-o", str(out),
           "--weights", weights_file, "--no-progress", "--tile", "256"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            manifest = out / MANIFEST_NAME
            if manifest.exists() and manifest.read_text().count('"done"') >= 2:
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    finished = images(out)
    assert 2 <= len(finished) < 8
    for name in finished:  # every visible output is complete
        assert tifffile.imread(out / name).shape == (400, 600, 3)
    (out / ".p7.tif.tiledehaze-tmp-99999.tif").write_bytes(b"half an image")  # as a dead run leaves it

    report = process_batch([src], out, weights=weights_file, tile=256)
    assert len(report.skipped) >= len(finished) - 1  # at most the one caught before its manifest line
    assert len(report.skipped) + len(report.done) == 8 and not report.failed
    assert images(out) == [f"p{i}.tif" for i in range(8)]
    assert not [p for p in out.iterdir() if ".tiledehaze-tmp-" in p.name]


def kill_worker_once(job, settings, threads=None):
    """Kills its own worker process the first time it runs for p1 (as an OOM killer would)."""
    marker = Path(job.output).parent / "killed-once.marker"
    if job.relpath == "p1.png" and not marker.exists():
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    return run_job(job, settings, threads)


def test_a_worker_killed_mid_task_is_retried_and_the_batch_completes(tmp_path, make_photo, weights_file):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(4):
        make_photo(src / f"p{i}.png", 64, 80, i)
    seen = []
    report = process_batch([src], out, weights=weights_file, workers=2, runner=kill_worker_once,
                           progress=seen.append)
    assert (out / "killed-once.marker").exists()
    assert len(report.done) == 4 and not report.failed
    assert len(seen) == 4 and "2 dask workers" in report.workers
    assert images(out) == ["killed-once.marker", "p0.png", "p1.png", "p2.png", "p3.png"]


def test_an_existing_dask_cluster_runs_the_batch(tmp_path, make_photo, weights_file):
    src, out = tmp_path / "src", tmp_path / "out"
    for i, ext in enumerate(["jpg", "png", "tif"]):
        make_photo(src / f"p{i}.{ext}", 64, 96, i)
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    address, procs, common = start_scheduler(tmp_path)
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                       "--nworkers", "1", "--nthreads", "2", "--no-dashboard"], **common))
        run = subprocess.run([sys.executable, "-m", "tiledehaze.cli", "process", str(src), "-o", str(out),
                              "--weights", weights_file, "--scheduler", address, "--no-progress"],
                             cwd=ROOT, capture_output=True, text=True, timeout=90)
    finally:
        stop(procs)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert images(out) == ["p0.jpg", "p1.png", "p2.tif"]
    report = read_report(out)
    assert report["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    assert address in report["workers"]


def test_unreachable_scheduler_is_a_clear_error(photos, tmp_path, weights_file, capsys):
    code = main(["process", str(photos), "-o", str(tmp_path / "out"), "--weights", weights_file,
                 "--scheduler", f"tcp://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "scheduler" in err[0]


def test_memory_estimate_grows_with_width_and_limits_workers(monkeypatch, tmp_path, make_photo):
    narrow = estimate_job_memory(1000, 20000, whole=False)
    wide = estimate_job_memory(20000, 1000, whole=False)
    assert wide > 3 * narrow
    assert estimate_job_memory(4000, 3000) > estimate_job_memory(4000, 3000, whole=False)

    big = make_photo(tmp_path / "big.png", 400, 600)
    job = batch_mod.Job(str(big), str(tmp_path / "o.png"), "o.png", 1, 1)
    need = memory.job_memory(str(big), tile=1024, overlap=22)
    monkeypatch.setattr(memory, "available_memory", lambda: int(need * 2.5 / 0.85))
    workers, limit = batch_mod.default_memory_limit([job], 4, tile=1024, overlap=22)
    assert workers == 2 and limit >= need


def test_memory_estimates_use_the_models_real_overlap(monkeypatch, tmp_path, make_photo):
    """DCP's guided filter needs a 182 px overlap at its defaults, not AOD-Net's 22."""
    from tiledehaze.batch import cluster

    assert plan_overlap(tiledehaze.get_model("dcp")) == 182
    seen = []
    monkeypatch.setattr(cluster, "default_memory_limit", lambda jobs, workers, **kw: seen.append(kw) or (1, 1 << 30))

    class Stop(Exception):
        pass

    def no_cluster(*args, **kwargs):
        raise Stop

    monkeypatch.setattr("distributed.LocalCluster", no_cluster)
    make_photo(tmp_path / "src" / "p.png", 64, 64)
    with pytest.raises(Stop):
        process_batch([tmp_path / "src"], tmp_path / "out", model="dcp", workers=2)
    assert seen == [{"tile": 1024, "overlap": 182}]


def test_single_file_form_is_unchanged(tmp_path, make_photo, weights_file, capsys):
    src = make_photo(tmp_path / "one.jpg", 64, 64)
    assert main(["process", str(src), "--weights", weights_file]) == 0
    assert (tmp_path / "one_dehazed.jpg").exists()
    assert main(["process", str(src), "-o", str(tmp_path / "x.png"), "--weights", weights_file]) == 0
    assert Image.open(tmp_path / "x.png").format == "PNG"
    assert not (tmp_path / REPORT_NAME).exists()
    assert main(["process", str(src), "-o", str(tmp_path / "x.png"), "--weights", weights_file]) == 3  # exists
    assert main(["process", str(tmp_path), "-o", str(tmp_path / "y.png"), "--weights", weights_file]) == 2
    assert "OUTDIR" in capsys.readouterr().err


def test_bad_memory_limit_is_a_clear_error(photos, tmp_path, weights_file, capsys):
    code = main(["process", str(photos), "-o", str(tmp_path / "out"), "--weights", weights_file,
                 "--workers", "2", "--memory-limit", "lots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--memory-limit" in err[0]


def test_progress_shows_files_megapixels_and_rate(capsys):
    from tiledehaze.progress import batch_progress

    with batch_progress(3, 6.0, enabled=True) as advance:
        advance(2.0)
        advance(0.0, failed=True)
    err = capsys.readouterr().err
    assert "2/3 files, 1 failed" in err and "MP" in err


def test_hidden_files_and_folders_are_left_out(photos, tmp_path, weights_file):
    (photos / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble companion")
    (photos / ".thumbnails").mkdir()
    (photos / ".thumbnails" / "t.jpg").write_bytes(b"x")
    report = process_batch(photos, tmp_path / "out", weights=weights_file)
    assert len(report.done) == 3 and not report.failed


def test_missing_weights_fail_once_before_any_file(photos, tmp_path, capsys):
    code = main(["process", str(photos), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "nope.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.safetensors" in err[0]
    assert not (tmp_path / "out").exists()


def test_checksum_decides_by_content_not_time(photos, tmp_path, weights_file):
    out = tmp_path / "out"
    assert len(process_batch(photos, out, weights=weights_file, checksum=True).done) == 3
    a = photos / "a.jpg"
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))  # copied: new time, same bytes
    assert len(process_batch(photos, out, weights=weights_file, checksum=True).skipped) == 3
    data = bytearray(a.read_bytes())
    data[-3] ^= 1  # same size and time, different content
    st = a.stat()
    a.write_bytes(bytes(data))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = process_batch(photos, out, weights=weights_file, checksum=True)
    assert [r.relpath for r in report.done] == ["a.jpg"]
