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

The package keeps one concern per module: :mod:`.settings` (what decides an output, and its
fingerprint), :mod:`.inputs` (finding inputs and planning jobs), :mod:`.memory` (estimates
and worker counts), :mod:`.manifest` (manifest, lock, temporaries), :mod:`.cluster` (dask),
:mod:`.report` (the outcome), :mod:`.run` (the batch from start to end) and :mod:`.split` (one
large TIFF spread over the workers in blocks of rows).
"""

from .cluster import gpu_worker_commands, gpu_worker_resources
from .inputs import DEFAULT_GLOBS, find_inputs
from .jobs import BatchPlan, Job, JobResult
from .manifest import LOCK_NAME, MANIFEST_NAME, clean_stale_temporaries
from .memory import default_memory_limit, estimate_job_memory
from .report import REPORT_NAME, BatchReport
from .run import process_batch, run_job
from .settings import FORMAT_EXTENSIONS, Settings, output_relpath
from .split import DEFAULT_SPLIT_MP, process_split

__all__ = ["DEFAULT_GLOBS", "DEFAULT_SPLIT_MP", "FORMAT_EXTENSIONS", "LOCK_NAME", "MANIFEST_NAME", "REPORT_NAME", "BatchPlan",
           "BatchReport", "Job", "JobResult", "Settings", "clean_stale_temporaries", "default_memory_limit",
           "estimate_job_memory", "find_inputs", "gpu_worker_commands", "gpu_worker_resources", "output_relpath",
           "process_batch", "process_split", "run_job"]
