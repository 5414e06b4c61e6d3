"""Batch processing: many files into a mirrored output folder, safe to interrupt and resume.

The flow is plan -> skip/resume -> run -> report:

- **plan**: inputs (files and folders, walked recursively) become jobs, each with an output
  path under ``outdir`` that mirrors the input's folder structure. The output folder itself is
  never walked.
- **skip/resume**: a manifest in ``outdir`` (``.tiledehaze-manifest.jsonl``, JSON lines, last
  line per output wins) records for every finished output the input's size and mtime (or,
  with ``checksum``, its SHA-256) and a fingerprint of the settings that produced it. A rerun skips
  a job whose record matches; a changed input, changed settings or a missing output redoes it.
- **run**: in this process, on a local dask cluster of worker processes, or on an existing
  cluster. Each output appears atomically (see :mod:`.io.atomic`), so a run killed at any
  moment leaves only complete outputs plus hidden temporaries that the next run removes.
- **report**: failures are data. Every file that cannot be restored is recorded with its path
  and a one-line reason in ``tiledehaze-report.json``; the other files carry on.

Memory per worker (the automatic ``memory_limit`` uses this estimate, see
:func:`estimate_job_memory`): about 300 MB for the runtime, plus two bands of tile rows of
the image's full width (source and restored rows in the stored type, a float32 RGB
accumulator and the next band being read): roughly ``2 x (tile + 2 x overlap) x width x
(2 x channels x bytes + 24)``, plus the model's temporaries (~50 bytes per tile pixel), plus,
for formats decoded whole (JPEG, PNG, WebP, BMP), the decoded image and the restored copy
(``2 x width x height x channels x bytes``). A 4000x3000 JPEG needs about 0.7 GB (0.68 GB
measured peak RSS), a 40000-pixel-wide TIFF about 3 GB at ``tile=1024``.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .api import load_model, process_file
from .errors import ConfigError, OutputError, TileDehazeError
from .io import EXTENSIONS
from .io.atomic import TEMP_MARK, describe_os_error
from .options import RunOptions, file_digest, fingerprint, resolve

log = logging.getLogger(__name__)

MANIFEST_NAME = ".tiledehaze-manifest.jsonl"
REPORT_NAME = "tiledehaze-report.json"
LOCK_NAME = ".tiledehaze.lock"
#: the default ``glob``: every extension we can read, in any letter case
DEFAULT_GLOBS = tuple(f"*{ext}" for ext in sorted(EXTENSIONS))
#: ``format`` -> the extension given to converted outputs
FORMAT_EXTENSIONS = {"tiff": ".tif", "jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp"}
#: errors after which no later file can succeed either: the batch stops
_FATAL_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
_RUNTIME_BYTES = 300 << 20


@dataclass(frozen=True)
class Settings:
    """Everything that decides what an output looks like: the run options plus the output's format."""

    run: RunOptions = RunOptions()
    compression: str | None = "keep"
    quality: int = 95
    max_pixels: int | None = None
    format: str | None = None

    def fingerprint(self) -> str:
        """A short hash of the settings that change the output (not threads, backend, batch or device)."""
        return fingerprint({**self.run.fingerprint_key(), "compression": self.compression,
                            "quality": self.quality, "format": self.format})


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes."""

    source: str
    output: str
    relpath: str  # of the output, relative to the output folder
    size: int
    mtime_ns: int
    megapixels: float | None = None  # from the header; None when it cannot be read
    sha256: str | None = None  # with ``checksum`` only


@dataclass
class JobResult:
    relpath: str
    source: str
    output: str
    status: str  # "done" or "failed"
    reason: str | None = None
    megapixels: float = 0.0
    seconds: float = 0.0
    fatal: bool = False  # no later file can succeed either (disk full, read-only)
    output_size: int | None = None


@dataclass(frozen=True)
class BatchPlan:
    """What a run is about to do; handed to ``on_plan`` before the first file starts."""

    jobs: tuple[Job, ...]
    skipped: tuple[str, ...]
    failed: tuple[JobResult, ...]  # refused while planning (missing input, foreign output...)

    @property
    def megapixels(self) -> float:
        return sum(j.megapixels or 0.0 for j in self.jobs)


@dataclass
class BatchReport:
    """The outcome of :func:`process_batch`; also written to ``outdir/tiledehaze-report.json``."""

    outdir: str
    done: list[JobResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[JobResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: str = "in-process"
    aborted: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and self.aborted is None

    @property
    def megapixels(self) -> float:
        return sum(r.megapixels for r in self.done)

    def summary(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        return (f"{len(self.done)} done, {len(self.skipped)} skipped (up to date), {len(self.failed)} failed; "
                f"{self.megapixels:.1f} MP in {self.seconds:.1f} s ({rate:.2f} MP/s, {self.workers})")

    def to_json(self) -> dict[str, Any]:
        return {
            "tiledehaze": _version(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "outdir": self.outdir,
            "summary": self.summary(),
            "counts": {"done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed)},
            "megapixels": round(self.megapixels, 3),
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "aborted": self.aborted,
            "failed": [{"path": r.source, "reason": r.reason} for r in self.failed],
            "done": [{"path": r.source, "output": r.relpath, "megapixels": round(r.megapixels, 3),
                      "seconds": round(r.seconds, 3)} for r in self.done],
            "skipped": self.skipped,
        }


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------- planning

def find_inputs(inputs: Sequence[str | os.PathLike], outdir: Path, *,
                globs: Sequence[str] | None = None) -> tuple[list[tuple[Path, str]], list[JobResult]]:
    """``(source, output relpath)`` for every input file, and failures for inputs that do not exist.

    A single folder is mirrored into ``outdir`` directly; with several inputs each folder
    goes into a subfolder of its own name and each file to the top. Folders are walked
    recursively (symlinked folders are not followed); hidden files and folders, and files
    whose names match none of ``globs`` (case-insensitive), are left out; ``outdir`` is
    never walked.
    """
    patterns = [g.lower() for g in (globs or DEFAULT_GLOBS)]
    out_real = os.path.realpath(outdir)
    found: list[tuple[Path, str]] = []
    missing: list[JobResult] = []
    several = len(inputs) > 1
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if os.path.realpath(path) == out_real:
                raise ConfigError(f"output folder {outdir} is an input folder; outputs would replace the inputs")
            prefix = path.resolve().name if several else ""
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and os.path.realpath(os.path.join(root, d)) != out_real)
                for name in sorted(files):
                    if name.startswith(".") or not any(fnmatch.fnmatch(name.lower(), p) for p in patterns):
                        continue  # hidden files include macOS '._' companions and our temporaries
                    full = Path(root) / name
                    rel = full.relative_to(path).as_posix()
                    found.append((full, f"{prefix}/{rel}" if prefix else rel))
        elif path.exists():
            found.append((path, path.name))
        else:
            missing.append(JobResult(str(path), str(path), "", "failed", "no such file or folder"))
    return found, missing


def output_relpath(relpath: str, format: str | None) -> str:
    if format is None:
        return relpath
    if format not in FORMAT_EXTENSIONS:
        raise ConfigError(f"unknown output format {format!r}; choose from {', '.join(FORMAT_EXTENSIONS)}")
    stem, _, _ = relpath.rpartition(".") if "." in Path(relpath).name else (relpath, "", "")
    return stem + FORMAT_EXTENSIONS[format]


def _peek_header(path: str | Path) -> tuple[int, int, int, int, bool] | None:
    """(width, height, channels, bytes per sample, streamed) from the header, without decoding pixels."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] in (b"II", b"MM"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                return (page.imagewidth, page.imagelength, page.samplesperpixel,
                        page.dtype.itemsize if page.dtype else 1, True)
        from PIL import Image

        with Image.open(path) as im:
            return (*im.size, len(im.getbands()), 2 if im.mode.startswith("I") else 1, False)
    except Exception:
        return None


def peek_megapixels(path: str | Path) -> float | None:
    """Declared size from the header, without decoding pixels; None when the header is unreadable."""
    header = _peek_header(path)
    return None if header is None else header[0] * header[1] / 1e6


def estimate_job_memory(width: int, height: int, *, channels: int = 3, itemsize: int = 1,
                        whole: bool = True, tile: int | None = 1024, overlap: int = 32) -> int:
    """Rough peak bytes one worker needs to restore an image of this size (see the module notes)."""
    side = min(tile or max(width, height), max(width, height))
    band_rows = min(height, side + 2 * overlap)
    bands = 2 * band_rows * width * (2 * channels * itemsize + 24)
    model = 50 * side * side
    decoded = 2 * width * height * channels * itemsize if whole else 32 << 20
    return _RUNTIME_BYTES + bands + model + decoded


def _peek_memory(path: str, tile: int | None, overlap: int | None) -> int:
    header = _peek_header(path)
    if header is None:
        return _RUNTIME_BYTES
    width, height, channels, itemsize, streamed = header
    return estimate_job_memory(width, height, channels=channels, itemsize=itemsize, whole=not streamed,
                               tile=tile, overlap=overlap or 32)


# ---------------------------------------------------------------------------- manifest

class Manifest:
    """JSON lines in the output folder; the last line for an output is its current state."""

    def __init__(self, outdir: Path):
        self.path = outdir / MANIFEST_NAME
        self.entries: dict[str, dict] = {}
        self._file = None
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.entries[entry["output"]] = entry
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash
        self._compact()
        self._file = open(self.path, "a", encoding="utf-8")

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + TEMP_MARK + str(os.getpid()))
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for entry in self.entries.values():
                    f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def is_current(self, job: Job, settings_key: str, digest: str | None, outdir: Path) -> bool:
        e = self.entries.get(job.relpath)
        if not e or e.get("state") != "done":
            return False
        if (e.get("settings"), e.get("size")) != (settings_key, job.size):
            return False
        if digest is not None:  # content decides: a copied or restored archive has new times
            if e.get("sha256") != digest:
                return False
        elif e.get("mtime_ns") != job.mtime_ns:
            return False
        try:
            return (outdir / job.relpath).stat().st_size == e.get("output_size")
        except OSError:
            return False

    def owns(self, relpath: str) -> bool:
        return relpath in self.entries

    def record(self, entries: list[dict]) -> None:
        text = "".join(json.dumps(e) + "\n" for e in entries)
        if not text:
            return
        for e in entries:
            self.entries[e["output"]] = e
        try:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.path)) from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@contextmanager
def _locked(outdir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``outdir`` so that two runs never write into it at once."""
    import fcntl

    try:
        outdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(outdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, outdir)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another tiledehaze run is writing into {outdir}; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def clean_stale_temporaries(outdir: Path) -> int:
    """Remove hidden ``.tiledehaze-tmp-`` files left by runs that were killed; returns how many."""
    removed = 0
    for root, _, files in os.walk(outdir):
        for name in files:
            if TEMP_MARK in name:
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError as exc:
                    log.warning("cannot remove stale temporary %s: %s", name, exc.strerror)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    return removed


# ---------------------------------------------------------------------------- running one file

def run_job(job: Job, settings: Settings, threads: int | None = None) -> JobResult:
    """Restore one file; user errors come back as a failed result, bugs raise (and are retried)."""
    start = time.perf_counter()
    try:
        result = process_file(
            job.source, job.output, options=settings.run.replace(threads=threads or _worker_threads()),
            compression=settings.compression, quality=settings.quality, max_pixels=settings.max_pixels,
            overwrite=True)
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


def _worker_threads() -> int | None:
    """Inside a dask worker: cores shared fairly between its task threads; elsewhere: the default."""
    try:
        from distributed import get_worker

        nthreads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, nthreads))


# ---------------------------------------------------------------------------- the batch

Runner = Callable[[Job, Settings, "int | None"], JobResult]


def process_batch(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                  model: str = "aodnet", weights: str | os.PathLike | None = None, backend: str = "auto",
                  tile: int | None = 1024, overlap: int | None = None, batch: int | None = None,
                  precision: str | None = None, device: str | None = None,
                  compression: str | None = "keep", quality: int = 95, max_pixels: int | None = None,
                  format: str | None = None, globs: Sequence[str] | None = None, threads: int | None = None,
                  workers: int | None = None, scheduler: str | None = None, memory_limit: str | int | None = None,
                  retries: int = 2, overwrite: bool = False, checksum: bool = False,
                  on_plan: Callable[[BatchPlan], None] | None = None,
                  progress: Callable[[JobResult], None] | None = None,
                  runner: Runner | None = None, options: RunOptions | None = None,
                  **model_options) -> BatchReport:
    """Dehaze every image in ``inputs`` (files and folders) into ``outdir``, mirroring folders.

    Without ``workers`` or ``scheduler`` the files are restored one after another in this
    process. ``workers=N`` starts a local dask cluster of N single-threaded worker processes,
    each running inference on ``threads`` (default: cores // N) threads; ``scheduler`` sends
    the work to an existing cluster (``"tcp://host:8786"``) whose workers see the same paths.

    Files whose outputs are up to date (see the module notes) are skipped unless
    ``overwrite``; ``checksum`` compares the inputs' SHA-256 instead of their modification
    times (for archives that were copied or restored). ``on_plan(plan)`` is called
    once the work is known, ``progress(result)`` after every file, always in this process.
    ``runner`` replaces :func:`run_job` (for instrumentation and tests). The run options
    (``model`` to ``device``, or ``options``) are those of :func:`tiledehaze.restore`.

    A file that cannot be restored is recorded in the report and the batch goes on; a full
    or read-only output disk stops the batch (``report.aborted``). The report is also written
    to ``outdir/tiledehaze-report.json``.
    """
    start = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers and scheduler:
        raise ConfigError("use either --workers (a local cluster) or --scheduler (an existing one), not both")
    if memory_limit is not None:
        memory_limit = _parse_memory(memory_limit)
    run = resolve(options, dict(model=model, weights=weights, backend=backend, tile=tile, overlap=overlap,
                                batch=batch, threads=threads, precision=precision, device=device), model_options)
    if not isinstance(run.model, str):
        raise ConfigError("a batch needs a registered model name (workers build their own model)")
    threads = run.threads
    settings = Settings(run.replace(threads=None), compression=compression, quality=quality,
                        max_pixels=max_pixels, format=format)
    # a wrong model, backend or weights file fails every file alike: say so once, up front
    # (in-process runs reuse this cached model)
    load_model(run)
    outdir = Path(outdir).absolute()
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output {outdir} is a file; give a folder for several inputs")
    report = BatchReport(str(outdir))
    with _locked(outdir):
        clean_stale_temporaries(outdir)
        try:
            manifest = Manifest(outdir)
        except OSError as exc:
            raise OutputError(describe_os_error(exc, outdir / MANIFEST_NAME)) from None
        try:
            plan = _plan(inputs, outdir, settings, manifest, globs=globs, overwrite=overwrite, checksum=checksum)
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
                                      "settings": key, "output_size": result.output_size,
                                      "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}])
                else:
                    report.failed.append(result)
                    if result.fatal and report.aborted is None:
                        report.aborted = result.reason
                if progress is not None:
                    progress(result)
                return report.aborted is None

            run_one = runner or run_job
            if plan.jobs and (workers or scheduler):
                report.workers = _run_dask(plan.jobs, settings, run_one, finished, workers=workers, scheduler=scheduler,
                                           threads=threads, memory_limit=memory_limit, retries=retries)
            else:
                for job in plan.jobs:
                    if not finished(_run_here(run_one, job, settings, threads), job):
                        break
        finally:
            manifest.close()
        report.seconds = time.perf_counter() - start
        _write_report(report, outdir)
    log.info("batch into %s: %s", outdir, report.summary())
    return report


def _plan(inputs, outdir: Path, settings: Settings, manifest: Manifest, *, globs, overwrite: bool,
          checksum: bool) -> BatchPlan:
    found, failed = find_inputs(inputs, outdir, globs=globs)
    key = settings.fingerprint()
    jobs: list[Job] = []
    skipped: list[str] = []
    seen: dict[str, Path] = {}
    for source, rel in found:
        rel = output_relpath(rel, settings.format)
        output = outdir / rel
        if rel in seen:
            failed.append(JobResult(rel, str(source), str(output), "failed",
                                    f"same output {rel} as {seen[rel]}; rename one of them"))
            continue
        seen[rel] = source
        try:
            st = source.stat()
        except OSError as exc:
            failed.append(JobResult(rel, str(source), str(output), "failed", f"cannot read: {exc.strerror}"))
            continue
        job = Job(str(source.absolute()), str(output), rel, st.st_size, st.st_mtime_ns)
        if output.exists() and os.path.samefile(output, source):
            failed.append(JobResult(rel, str(source), str(output), "failed", "output would replace the input"))
            continue
        digest = file_digest(source) if checksum else None
        if not overwrite:
            if manifest.is_current(job, key, digest, outdir):
                skipped.append(str(source))
                continue
            if output.exists() and not manifest.owns(rel):
                failed.append(JobResult(rel, str(source), str(output), "failed",
                                        f"output {rel} exists and was not written by tiledehaze; "
                                        "pass --overwrite to replace it"))
                continue
        jobs.append(Job(job.source, job.output, rel, job.size, job.mtime_ns, peek_megapixels(source), digest))
    return BatchPlan(tuple(jobs), tuple(skipped), tuple(failed))


def _run_here(run: Runner, job: Job, settings: Settings, threads: int | None) -> JobResult:
    """Run one job in this process; a bug fails this file (with its traceback logged), not the batch."""
    try:
        return run(job, settings, threads)
    except Exception as exc:
        log.error("%s: %s", job.source, "".join(traceback.format_exception(exc)).rstrip())
        return JobResult(job.relpath, job.source, job.output, "failed", _describe_task_error(exc))


def _write_report(report: BatchReport, outdir: Path) -> None:
    path = outdir / REPORT_NAME
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        tmp.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        log.error("cannot write the report: %s", describe_os_error(exc, path))


# ---------------------------------------------------------------------------- dask

def default_memory_limit(jobs: Sequence[Job], settings: Settings, workers: int) -> tuple[int, int]:
    """``(workers, bytes per worker)``: fewer workers when the largest image would not fit N times."""
    total = _available_memory()
    need = max((_peek_memory(j.source, settings.run.tile, settings.run.overlap) for j in jobs), default=_RUNTIME_BYTES)
    budget = int(total * 0.85)
    fit = max(1, budget // max(need, 1))
    if fit < workers:
        log.warning("the largest image needs about %.1f GB per worker; using %d workers instead of %d "
                    "(pass --memory-limit to decide yourself)", need / 1e9, fit, workers)
        workers = fit
    return workers, budget // workers


def _parse_memory(value: str | int) -> int:
    from dask.utils import parse_bytes

    try:
        limit = parse_bytes(value)
    except (ValueError, TypeError):
        raise ConfigError(f"--memory-limit {value!r} is not a size like 4GB or 3500MiB") from None
    if limit < 256 << 20:
        raise ConfigError(f"--memory-limit {value!r} is too small; a worker needs at least 256 MiB")
    return limit


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _run_dask(jobs: Sequence[Job], settings: Settings, run: Runner, finished: Callable[[JobResult, Job], bool], *,
              workers: int | None, scheduler: str | None, threads: int | None, memory_limit, retries: int) -> str:
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    # the scheduler and nanny log every start and stop at INFO; keep them for -vv only
    dask_log = logging.getLogger("distributed")
    dask_log.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR)
    with dask.config.set({
        # keep glibc's adaptive mmap threshold: a fixed trim threshold makes every large
        # temporary a fresh mmap, which halves inference speed (see FIELD-NOTES)
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    }):
        if scheduler:
            _check_reachable(scheduler)
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
            label = f"cluster {scheduler}"
        else:
            if memory_limit is None:
                workers, limit = default_memory_limit(jobs, settings, workers)
            else:
                limit = memory_limit
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            threads = threads or max(1, cores // workers)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=limit,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
            label = f"{workers} dask worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
    try:
        futures = client.map(run, list(jobs), settings=settings, threads=threads, pure=False, retries=retries)
        by_key = {f.key: job for f, job in zip(futures, jobs)}
        done = as_completed(futures, with_results=True, raise_errors=False)
        for future, result in done:
            job = by_key[future.key]
            if future.status != "finished":
                exc = result[1] if isinstance(result, tuple) and len(result) == 3 else future.exception()
                result = JobResult(job.relpath, job.source, job.output, "failed", _describe_task_error(exc))
                log.error("%s: %s", job.source, "".join(traceback.format_exception(exc)).rstrip())
            if not finished(result, job):
                client.cancel([f for f in futures if not f.done()])
                break
        return label
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _check_reachable(address: str) -> None:
    """Fail in a moment, not after the client's timeout, when nothing listens at a tcp:// address."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port or 8786), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot reach the dask scheduler at {address} ({reason}); "
                          "is 'dask scheduler' running there?") from None


def _describe_task_error(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return "the worker restoring this file died repeatedly (out of memory? see --memory-limit)"
    text = str(exc).strip().splitlines()
    return f"internal error ({name}: {text[0] if text else ''}); please report it"
