"""Outputs appear whole or not at all: write to a hidden temporary file, then rename.

Every file the project writes for a user (images, reports, checkpoints, cached engines) goes
through :func:`atomic_output` or :func:`write_atomic`; a failure leaves no temporary behind
and raises :class:`~tiledehaze.errors.OutputError` with a one-line reason.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

TEMP_MARK = ".tiledehaze-tmp-"


def temp_path_for(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}{TEMP_MARK}{os.getpid()}{dst.suffix}")


@contextmanager
def atomic_output(dst: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; on success rename it onto ``dst``, else remove it."""
    dst = Path(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {dst.parent}: {exc.strerror}") from None
    tmp = temp_path_for(dst)
    try:
        yield tmp
        os.replace(tmp, dst)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(describe_os_error(exc, dst)) from None
    except BaseException:
        _remove(tmp)
        raise


def write_atomic(dst: str | Path, data: bytes | str, *, mode: int = 0o666) -> None:
    """Write ``data`` (text as UTF-8) to ``dst`` atomically, created with ``mode`` (before the umask)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(dst) as tmp:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(payload)


def _remove(path: Path) -> None:
    """Remove a temporary file if it exists; never raises (the error that got us here matters more)."""
    try:
        path.unlink()
    except OSError:  # never created, or a read-only folder: nothing to remove, or nothing we can do
        pass


def describe_os_error(exc: OSError, dst: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {dst}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied writing {dst}"
    if exc.errno == errno.EROFS:
        return f"cannot write {dst}: the file system is read-only"
    return f"cannot write {dst}: {exc.strerror or exc}"
