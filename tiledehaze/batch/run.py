"""A batch from start to end: plan -> skip/resume -> run -> report (see the package notes)."""

from __future__ import annotations

import errno
import logging
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from ..api import load_model, process_file
from ..engine import plan_overlap
from ..errors import BatchInterrupted, ConfigError, OutputError, TileDehazeError
from ..io.atomic import describe_os_error
from ..options import RunOptions, resolve
from .cluster import Runner, check_cluster_options, run_on_dask, worker_threads
from .inputs import plan_jobs
from .jobs import BatchPlan, Job, JobResult, describe_task_error
from .manifest import MANIFEST_NAME, Manifest, clean_stale_temporaries, locked
from .report import BatchReport, write_report
from .settings import Settings
from .split import DEFAULT_SPLIT_MP

log = logging.getLogger(__name__)

#: ``BatchReport.aborted`` after Ctrl-C or SIGTERM
INTERRUPTED = "interrupted"
#: errors after which no later file can succeed either: the batch stops
_FATAL_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def run_job(job: Job, settings: Settings, threads: int | None = None) -> JobResult:
    """Restore one file; user errors come back as a failed result, bugs raise (and are retried)."""
    start = time.perf_counter()
    try:
        result = process_file(
            job.source, job.output, options=settings.run.replace(threads=threads or worker_threads()),
            compression=settings.compression, quality=settings.quality, max_pixels=settings.max_pixels,
            overwrite=True, **settings.io_options)
    except TileDehazeError as exc:
        cause = exc.__context__
        fatal = isinstance(exc, OutputError) and isinstance(cause, OSError) and cause.errno in _FATAL_ERRNOS
        return JobResult(job.relpath, job.source, job.output, "failed", str(exc).removeprefix(f"{job.source}: "),
                         seconds=time.perf_counter() - start, fatal=fatal)
    except MemoryError:
        return JobResult(job.relpath, job.source, job.output, "failed",
                         "out of memory; try a smaller --tile or fewer --workers", seconds=time.perf_counter() - start)
    return JobResult(job.relpath, job.source, job.output, "done", None, result.megapixels,
                     time.perf_counter() - start, output_size=os.stat(job.output).st_size)


def process_batch(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                  model: str | None = None, weights: str | os.PathLike | None = None, backend: str = "auto",
                  tile: int | None = 1024, overlap: int | None = None, batch: int | None = None,
                  precision: str | None = None, device: str | None = None,
                  compression: str | None = "keep", quality: int = 95, max_pixels: int | None = None,
                  bands: tuple[int, ...] | None = None, input_range=None, cog: bool = False,
                  format: str | None = None, globs: Sequence[str] | None = None, threads: int | None = None,
                  workers: int | None = None, scheduler: str | None = None, memory_limit: str | int | None = None,
                  retries: int = 2, overwrite: bool = False, checksum: bool = False,
                  split_above: float | None = DEFAULT_SPLIT_MP,
                  on_plan: Callable[[BatchPlan], None] | None = None,
                  progress: Callable[[JobResult], None] | None = None,
                  runner: Runner | None = None, options: RunOptions | None = None,
                  **model_options) -> BatchReport:
    """Dehaze every image in ``inputs`` (files and folders) into ``outdir``, mirroring folders.

    Without ``workers`` or ``scheduler`` the files are restored one after another in this
    process. ``workers=N`` starts a local dask cluster of N single-threaded worker processes,
    each running inference on ``threads`` (default: cores // N) threads; ``scheduler`` sends
    the work to an existing cluster (``"tcp://host:8786"``) whose workers see the same paths.
    On a cluster, TIFFs above ``split_above`` megapixels (``None``: never) are each spread over
    all workers in blocks of rows (see :mod:`.split`); the others run one task per file.

    Files whose outputs are up to date (see the module notes) are skipped unless
    ``overwrite``; ``checksum`` compares the inputs' SHA-256 instead of their modification
    times (for archives that were copied or restored). ``on_plan(plan)`` is called
    once the work is known, ``progress(result)`` after every file, always in this process.
    ``runner`` replaces :func:`run_job` (for instrumentation and tests). The run options
    (``model`` to ``device``, or ``options``) are those of :func:`tiledehaze.restore`;
    ``bands``, ``input_range`` and ``cog`` those of :func:`tiledehaze.process_file`.

    A file that cannot be restored is recorded in the report and the batch goes on; a full
    or read-only output disk stops the batch (``report.aborted``). The report is also written
    to ``outdir/tiledehaze-report.json``.
    """
    start = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    memory_limit = check_cluster_options(workers, scheduler, memory_limit)
    run = resolve(options, dict(model=model, weights=weights, backend=backend, tile=tile, overlap=overlap,
                                batch=batch, threads=threads, precision=precision, device=device), model_options)
    if not isinstance(run.model, str):
        raise ConfigError("a batch needs a registered model name (workers build their own model)")
    threads = run.threads
    settings = Settings(run.replace(threads=None), compression=compression, quality=quality,
                        max_pixels=max_pixels, format=format, bands=bands, input_range=input_range, cog=cog)
    # a wrong model, backend or weights file fails every file alike: say so once, up front
    # (in-process runs reuse this cached model)
    overlap = plan_overlap(load_model(run), run.overlap, run.tile)  # the model's real overlap, for memory estimates
    weights_sha256 = run.weights_sha256()
    outdir = Path(outdir).absolute()
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output {outdir} is a file; give a folder for several inputs")
    report = BatchReport(str(outdir))
    with locked(outdir):
        clean_stale_temporaries(outdir)
        try:
            manifest = Manifest(outdir)
        except OSError as exc:
            raise OutputError(describe_os_error(exc, outdir / MANIFEST_NAME)) from None
        try:
            plan = plan_jobs(inputs, outdir, settings, manifest, globs=globs, overwrite=overwrite, checksum=checksum)
            report.skipped = list(plan.skipped)
            report.failed = list(plan.failed)
            if on_plan is not None:
                on_plan(plan)
            if plan.jobs:
                manifest.record([{"output": j.relpath, "state": "started"} for j in plan.jobs])
            key = settings.fingerprint()

            def finished(result: JobResult, job: Job) -> bool:
                if result.status == "done":
                    report.done.append(result)
                    manifest.record([{"output": job.relpath, "state": "done", "source": job.source,
                                      "size": job.size, "mtime_ns": job.mtime_ns, "sha256": job.sha256,
                                      "settings": key, "weights_sha256": weights_sha256,
                                      "output_size": result.output_size,
                                      "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}])
                else:
                    report.failed.append(result)
                    if result.fatal and report.aborted is None:
                        report.aborted = result.reason
                if progress is not None:
                    progress(result)
                return report.aborted is None

            run_one = runner or run_job
            try:
                if plan.jobs and (workers or scheduler):
                    report.workers = run_on_dask(plan.jobs, settings, run_one, finished, workers=workers,
                                                 scheduler=scheduler, threads=threads, memory_limit=memory_limit,
                                                 retries=retries, overlap=overlap, split_above=split_above)
                else:
                    for job in plan.jobs:
                        if not finished(_run_here(run_one, job, settings, threads), job):
                            break
            except KeyboardInterrupt:
                report.aborted = INTERRUPTED
                clean_stale_temporaries(outdir)  # the workers are gone: what they were writing is incomplete
        finally:
            manifest.close()
        report.seconds = time.perf_counter() - start
        write_report(report, outdir)
    log.info("batch into %s: %s", outdir, report.summary())
    if report.aborted == INTERRUPTED:
        raise BatchInterrupted(report)
    return report


def _run_here(run: Runner, job: Job, settings: Settings, threads: int | None) -> JobResult:
    """Run one job in this process; a bug fails this file (with its traceback logged), not the batch."""
    try:
        return run(job, settings, threads)
    except Exception as exc:
        log.error("%s: %s", job.source, "".join(traceback.format_exception(exc)).rstrip())
        return JobResult(job.relpath, job.source, job.output, "failed", describe_task_error(exc))
