"""Plant known bugs one at a time in a temporary copy of the repository; check the suite catches each.

Each mutant names a small, distinctive piece of code, found wherever it now lives under
``tiledehaze/`` (it must occur exactly once, or the run stops with "pattern not found" /
"pattern ambiguous" rather than counting a mutant that was never planted), the replacement, the
test files that guard it, and optionally test ids that must *each* fail (e.g. one per dtype), so
a bug that only one dtype notices is not counted as caught at every dtype. The unmutated copy
runs the same tests first; they must pass.

    nice -n 10 python scripts/mutation_check.py                  # every mutant
    nice -n 10 python scripts/mutation_check.py --only halo-ignored-in-blending --list

Exit status: 0 all caught, 1 some survived, 2 a pattern was not found or the baseline failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
R, IO = "tests/test_restore.py::", "tests/test_io.py::"
GEOTIFF = IO + "test_geotiff_output_equals_the_reference_and_keeps_georeferencing_bit_depth_and_tiling"
# the equality tests: restore() at every dtype and tile size, and files at every dtype, against the reference
ENGINE_TESTS = [R + "test_every_dtype_is_kept_and_tiled_output_equals_the_reference",
                R + "test_tiled_output_equals_the_whole_image_reference", GEOTIFF]
EVERY_DTYPE = [rf"{name}.*\[{tile}{dtype}\]" for name, tile in (("test_every_dtype_is_kept", "96-"), ("test_geotiff", ""))
               for dtype in ("uint8", "uint16", "float32")]
INTEGER_DTYPES = [m for m in EVERY_DTYPE if "float" not in m]
TIFF_META = [GEOTIFF + "[uint8]", IO + "test_stale_gdal_statistics_are_dropped"]
PNG_META = IO + "test_png_keeps_icc_profile_and_resolution"
OVERWRITE = IO + "test_overwrite_followed_by_a_failure_leaves_the_old_output_intact"


@dataclass(frozen=True)
class Mutant:
    name: str
    find: str
    replace: str
    tests: list[str]
    must_fail: list[str] = field(default_factory=list)  # regexes; each must match a failed test id


MUTANTS = [
    Mutant("halo-ignored-in-blending", "np.clip((d - halo + 1) / (ramp + 1)", "np.clip((d + 1) / (ramp + 1)",
           ENGINE_TESTS + ["tests/test_dcp.py", "tests/test_plan.py"],
           EVERY_DTYPE + [r"test_restore_through_the_engine_equals_whole_image_dcp"]),
    Mutant("blend-weights-not-normalised", "(w / total[start:stop]).astype(np.float32)", "w.astype(np.float32)",
           ENGINE_TESTS, EVERY_DTYPE),
    Mutant("carry-rows-dropped", "acc[: len(carry)] = carry", "acc[: len(carry)] = 0", ENGINE_TESTS, EVERY_DTYPE),
    Mutant("input-normalised-by-256", "np.float32(1.0 / scale.high)", "np.float32(1.0 / (scale.high + 1))",
           ENGINE_TESTS, INTEGER_DTYPES),
    Mutant("output-scaled-by-254", "chunk *= np.float32(scale.high - scale.low)",
           "chunk *= np.float32(scale.high - scale.low - 1)", ENGINE_TESTS, INTEGER_DTYPES),
    Mutant("output-truncated-not-rounded", "chunk += np.float32(0.5)", "chunk += np.float32(0.0)",
           ENGINE_TESTS, INTEGER_DTYPES),
    Mutant("halo-declared-one-too-small", "HALO = sum(k // 2 for _, _, k in LAYERS)",
           "HALO = sum(k // 2 for _, _, k in LAYERS) - 1", ["tests/test_model.py"] + ENGINE_TESTS[:2]),
    Mutant("precision-dropped-before-the-backend", 'for k in ("threads", "precision", "device", "tile", "batch")',
           'for k in ("threads", "device", "tile", "batch")',
           ["tests/test_backend_selection.py::test_process_passes_precision_to_the_backend"]),
    Mutant("weights-loaded-with-weights_only-False", 'torch.load(str(path), map_location="cpu", weights_only=True)',
           'torch.load(str(path), map_location="cpu", weights_only=False)',
           ["tests/test_weights_safety.py", "tests/test_checkpoint.py"],
           [r"python_api\[torch-zip", r"command_line\[torch-zip", r"python_api\[training-checkpoint"]),
    Mutant("gray-written-as-red", "chunk = chunk.mean(axis=2, keepdims=True)", "chunk = chunk[..., :1]",
           [R + "test_gray_image_is_restored_as_gray", IO + "test_gray_files_stay_gray_and_equal_the_reference"],
           [r"test_gray_image_is_restored_as_gray", r"test_gray_files_stay_gray"]),
    Mutant("alpha-not-passed-through", "view[..., b] = src[..., b]", "view[..., b] = 0", [R + "test_alpha_passes_through_untouched"],
           [r"untouched\[uint8\]", r"untouched\[float32\]"]),
    Mutant("exif-rotated-the-wrong-way", "im = ImageOps.exif_transpose(im)",
           "im = ImageOps.exif_transpose(im).transpose(Image.Transpose.ROTATE_180)",
           [IO + "test_jpeg_exif_orientation_is_applied", IO + "test_jpeg_output_is_upright_and_keeps_icc_and_exif"],
           [r"test_jpeg_exif_orientation_is_applied\[6\]", r"test_jpeg_output_is_upright"]),
    Mutant("accumulator-for-the-whole-image", "acc = np.zeros((y1 - y0, width, 3), np.float32)",
           "acc = np.zeros((info.height, width, 3), np.float32)[: y1 - y0]",
           [R + "test_memory_is_bounded_by_one_row_of_tiles"]),
    Mutant("overwrite-deletes-the-old-output-first",
           'raise OutputError(f"output {dst} exists; pass --overwrite to replace it")\n',
           'raise OutputError(f"output {dst} exists; pass --overwrite to replace it")\n'
           "    if overwrite and dst.exists():\n        dst.unlink()\n",
           [OVERWRITE, "tests/test_cli.py"], [r"test_overwrite_followed_by_a_failure"]),
    Mutant("output-written-in-place-not-atomically", "        yield tmp\n", "        yield dst\n",
           ["tests/test_bad_inputs.py", "tests/test_cli.py", OVERWRITE]),
    Mutant("stale-gdal-statistics-copied", 'if item.get("name", "").upper().startswith("STATISTICS_"):',
           'if item.get("name", "") == "never":', TIFF_META[1:]),
    Mutant("date-artist-copyright-dropped", "42113, 306, 315, 33432)", "42113)", TIFF_META),
    Mutant("model-transformation-dropped", "COPIED_TAGS = (33550, 33922, 34264,", "COPIED_TAGS = (33550, 33922,",
           TIFF_META),
    Mutant("tiff-predictor-dropped", "predictor=predictor or None", "predictor=None",
           [IO + "test_tiff_predictor_is_kept"], [r"kept\[uint8\]", r"kept\[float32\]"]),
    Mutant("png-icc-profile-dropped", 'options["icc_profile"] = meta["icc_profile"]',
           'options.pop("icc_profile", None)', [PNG_META]),
    Mutant("png-dpi-dropped", 'options["dpi"] = meta["dpi"]', 'options.pop("dpi", None)', [PNG_META]),
]


def copy_repository(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files: the working tree as git sees it, without .venv."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def locate(repo: Path, pattern: str) -> Path:
    hits = [(p, p.read_text().count(pattern)) for p in sorted((repo / "tiledehaze").rglob("*.py"))]
    hits = [(p, n) for p, n in hits if n]
    if not hits:
        raise LookupError("pattern not found")
    if len(hits) > 1 or hits[0][1] > 1:
        raise LookupError("pattern ambiguous: " + ", ".join(f"{p.relative_to(repo)} x{n}" for p, n in hits))
    return hits[0][0]


def run_tests(repo: Path, tests: list[str], stop_early: bool) -> tuple[int, list[str], str]:
    """(exit status, failed test ids, output tail) of pytest on ``tests`` inside ``repo``."""
    polite = ["nice", "-n", str(10 - os.nice(0))] if os.nice(0) < 10 else []  # nice 10 in all, not 20
    cmd = [*polite, sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
           "-o", "addopts=", *(["-x"] if stop_early else []), *tests]
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, flags=re.M)
    return result.returncode, failed, result.stdout[-2000:]


def check(repo: Path, mutant: Mutant) -> tuple[str, str]:
    """('caught' | 'SURVIVED' | 'ERROR', detail)."""
    try:
        path = locate(repo, mutant.find)
    except LookupError as exc:
        return "ERROR", f"{exc}: {mutant.find!r}"
    original = path.read_text()
    path.write_text(original.replace(mutant.find, mutant.replace))
    try:
        code, failed, tail = run_tests(repo, mutant.tests, stop_early=not mutant.must_fail)
    finally:
        path.write_text(original)
    where = path.relative_to(repo)
    if code == 2:  # the mutant broke an import: collection failed (the baseline collected fine)
        return "caught", f"{where}: the tests could not even be collected"
    if code not in (0, 1):  # internal error, usage error, no tests: not the mutant's doing
        return "ERROR", f"{where}: pytest exit {code}: {tail[-300:]}"
    missing = [m for m in mutant.must_fail if not any(re.search(m, t) for t in failed)]
    if code == 0 or missing:
        detail = f"{where}: {len(failed)} failed" + (f"; still passing: {', '.join(missing)}" if missing else "")
        return "SURVIVED", detail
    return "caught", f"{where}: {len(failed)} failed"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selected tests")
    args = ap.parse_args()
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list or not mutants:
        print("\n".join(f"{m.name}: {', '.join(m.tests)}" for m in MUTANTS))
        return 0 if mutants else 2
    with tempfile.TemporaryDirectory(prefix="tiledehaze-mutants-") as tmp:
        repo = Path(tmp)
        copy_repository(repo)
        probe = subprocess.run([sys.executable, "-c", "import tiledehaze; print(tiledehaze.__file__)"], cwd=repo,
                               env=dict(os.environ, PYTHONPATH=str(repo)), capture_output=True, text=True)
        if not probe.stdout.startswith(str(repo)):
            print(f"the copy does not import its own tiledehaze ({probe.stdout.strip() or probe.stderr})")
            return 2
        if not args.no_baseline:
            tests = sorted({t for m in mutants for t in m.tests})
            code, failed, tail = run_tests(repo, tests, stop_early=False)
            if code != 0:
                print(f"baseline: the unmutated tests fail ({', '.join(failed) or tail})")
                return 2
            print(f"baseline: the {len(tests)} test selections pass unmutated")
        results = []
        for m in mutants:
            start = time.perf_counter()
            status, detail = check(repo, m)
            results.append((m.name, status))
            print(f"{status:8} {m.name:42} {detail} ({time.perf_counter() - start:.0f} s)", flush=True)
    caught = sum(s == "caught" for _, s in results)
    print(f"\ncaught {caught}/{len(results)}")
    for label in ("SURVIVED", "ERROR"):
        names = [n for n, s in results if s == label]
        if names:
            print(f"{label.lower()}: {', '.join(names)}")
    return 2 if any(s == "ERROR" for _, s in results) else int(caught < len(results))


if __name__ == "__main__":
    sys.exit(main())
