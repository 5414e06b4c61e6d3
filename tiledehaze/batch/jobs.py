"""The units of a batch: a job (one input file and its output), its result, and the plan."""

from __future__ import annotations

from dataclasses import dataclass


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



def describe_task_error(exc: BaseException) -> str:
    """One line for a job that raised instead of returning a result (a bug, or a dead worker)."""
    name = type(exc).__name__
    if name == "KilledWorker":
        return "the worker restoring this file died repeatedly (out of memory? see --memory-limit)"
    text = str(exc).strip().splitlines()
    return f"internal error ({name}: {text[0] if text else ''}); please report it"
