"""Finding a batch's inputs and deciding, with the manifest, which of them need restoring."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, TileDehazeError
from ..io import EXTENSIONS, probe
from ..options import file_digest
from .jobs import BatchPlan, Job, JobResult
from .manifest import Manifest
from .settings import Settings, output_relpath

#: the default ``glob``: every extension we can read, in any letter case
DEFAULT_GLOBS = tuple(f"*{ext}" for ext in sorted(EXTENSIONS))


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


def plan_jobs(inputs, outdir: Path, settings: Settings, manifest: Manifest, *, globs, overwrite: bool,
              checksum: bool) -> BatchPlan:
    """Jobs for the inputs whose outputs are missing or out of date; the rest skipped or refused."""
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


def peek_megapixels(path: str | Path) -> float | None:
    """Declared size from the header, without decoding pixels; None when the header is unreadable."""
    try:
        return probe(path).megapixels
    except TileDehazeError:
        return None

