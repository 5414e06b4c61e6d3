"""The outcome of a batch, and the report file written into the output folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..io.atomic import write_atomic
from .jobs import JobResult

log = logging.getLogger(__name__)

REPORT_NAME = "tiledehaze-report.json"


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
    from .. import __version__

    return __version__


def write_report(report: BatchReport, outdir: Path) -> None:
    try:
        write_atomic(outdir / REPORT_NAME, json.dumps(report.to_json(), indent=1) + "\n")
    except OutputError as exc:
        log.error("cannot write the report: %s", exc)
