"""The pure-Python half of the TensorRT backend: profiles, cache keys and plan files.

A TensorRT plan is compiled code for one TensorRT version on one kind of GPU; nothing in
the file says so up front and loading a foreign one may fail or worse. Plans are therefore
cached under a key built from everything they depend on (the ONNX bytes, the TensorRT
version, the GPU's name and compute capability, the optimisation profile and the precision),
and only ever loaded from this cache, which we create ourselves and keep private.
Nothing here imports TensorRT, so all of it is tested on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, OutputError
from ..io.atomic import write_atomic

log = logging.getLogger(__name__)

#: bump when the way plans are built changes in a way the key does not capture
CACHE_FORMAT = 1
#: smallest tile side an engine accepts (the CLI refuses tiles below 16 px)
MIN_SIDE = 16
#: tile sides are rounded up to this, so nearby sizes share one engine
SIDE_STEP = 64
PRECISIONS = ("fp32", "fp16")

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class Profile:
    """An optimisation profile for the network's input: (batch, 3, height, width) bounds."""

    min: Shape
    opt: Shape
    max: Shape

    @property
    def max_batch(self) -> int:
        return self.max[0]

    @property
    def max_side(self) -> int:
        return max(self.max[2], self.max[3])

    def covers(self, shape: tuple[int, ...]) -> bool:
        """Whether an NCHW input of ``shape`` may run on an engine with this profile."""
        return len(shape) == 4 and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def __str__(self) -> str:
        return "/".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))


def round_up(value: int, step: int = SIDE_STEP) -> int:
    return -(-int(value) // step) * step


def make_profile(*, tile: int = 1024, batch: int = 8) -> Profile:
    """A profile for square tiles up to ``tile`` px (rounded up to 64) and up to ``batch`` of them.

    The engine is tuned for the largest shape, which is the one the tiler produces for every
    interior tile; smaller edge tiles and small images run on the same engine.
    """
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, not {batch}")
    if tile < MIN_SIDE:
        raise ConfigError(f"tile must be at least {MIN_SIDE} px, not {tile}")
    side = round_up(tile)
    top = (batch, 3, side, side)
    return Profile((1, 3, MIN_SIDE, MIN_SIDE), top, top)


def profile_for(shape: tuple[int, ...], *, tile: int = 1024, batch: int = 8) -> Profile:
    """The profile to use for an NCHW input ``shape``: the default one if it fits, else one grown to fit.

    Growing in whole steps keeps the number of distinct engines small.
    """
    n, _, h, w = shape
    if min(h, w) < MIN_SIDE:
        raise ConfigError(f"tiles of {h}x{w} px are below the {MIN_SIDE} px an engine accepts")
    return make_profile(tile=max(tile, h, w), batch=max(batch, n))


@dataclass(frozen=True)
class EngineSpec:
    """Everything a plan depends on; its key names the cache file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    profile: Profile
    precision: str

    def key(self) -> str:
        fields = asdict(self)
        fields["compute_capability"] = list(self.compute_capability)
        fields["profile"] = {k: list(v) for k, v in fields["profile"].items()}
        fields["format"] = CACHE_FORMAT
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def filename(self, model: str = "aodnet") -> str:
        """A plan's file name: readable parts for people, the key for uniqueness."""
        major, minor = self.compute_capability
        return (f"{model}-{self.precision}-b{self.profile.max_batch}-t{self.profile.max_side}"
                f"-sm{major}{minor}-trt{self.tensorrt_version}-{self.key()[:20]}.plan")


def onnx_digest(onnx_bytes: bytes) -> str:
    return hashlib.sha256(onnx_bytes).hexdigest()


def default_cache_dir() -> Path:
    """``$TILEDEHAZE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/tiledehaze/engines`` (``~/.cache`` by default)."""
    override = os.environ.get("TILEDEHAZE_ENGINE_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tiledehaze" / "engines"


def untrusted_reason(directory: Path) -> str | None:
    """None if plans in ``directory`` may be loaded, else why not.

    A plan is executable code for the GPU: only load it from a directory that this user owns
    and that nobody else can write to.
    """
    try:
        st = directory.stat()
    except OSError as exc:
        return f"cannot inspect {directory}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory"
    if hasattr(os, "getuid"):
        if st.st_uid != os.getuid():
            return f"{directory} belongs to another user"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{directory} is writable by other users"
    return None


class EngineCache:
    """Plans on disk, one file per :class:`EngineSpec`, written atomically."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, spec: EngineSpec) -> Path:
        return self.directory / spec.filename()

    def _ensure(self) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            log.warning("TensorRT engine cache %s unusable (%s); engines will be rebuilt each run",
                        self.directory, exc.strerror)
            return False
        reason = untrusted_reason(self.directory)
        if reason is not None:
            log.warning("not using TensorRT engine cache: %s", reason)
            return False
        return True

    def load(self, spec: EngineSpec) -> bytes | None:
        """The cached plan for ``spec``, or None (missing, unreadable, or the cache is not private)."""
        path = self.path(spec)
        if not path.is_file() or not self._ensure():
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            log.warning("cannot read cached engine %s: %s", path, exc.strerror)
            return None

    def store(self, spec: EngineSpec, plan: bytes) -> Path | None:
        """Write ``plan`` for ``spec``; returns its path, or None when the cache is unusable."""
        if not self._ensure():
            return None
        path = self.path(spec)
        try:
            write_atomic(path, plan, mode=0o600)
        except OutputError as exc:
            log.warning("not caching the TensorRT engine: %s", exc)
            return None
        return path

    def discard(self, spec: EngineSpec) -> None:
        """Remove a plan this TensorRT refused to load."""
        self.path(spec).unlink(missing_ok=True)

    def entries(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob("*.plan") if not p.name.startswith("."))  # not temporaries
