"""Errors a user can cause. The CLI prints their message as one line and exits non-zero.

Anything else that escapes is a bug and keeps its traceback.
"""


class TileDehazeError(Exception):
    """Base class: something about the input, the options or the machine needs the user's attention."""

    exit_code = 2


class InputError(TileDehazeError):
    """The input cannot be read or is not an image we can restore."""


class OutputError(TileDehazeError):
    """The output cannot be written (exists, same as the input, no space, no permission)."""

    exit_code = 3


class ConfigError(TileDehazeError):
    """An option or configuration value is invalid."""


class BackendUnavailable(TileDehazeError):
    """The requested inference backend cannot run on this machine."""

    exit_code = 4


class OutOfMemory(TileDehazeError):
    """The machine ran out of memory restoring an image (too large a tile, or a damaged size)."""

    exit_code = 5


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a batch; ``report`` holds what finished (also written to the output folder)."""

    def __init__(self, report):
        super().__init__("interrupted")
        self.report = report


class MissingDependency(TileDehazeError):
    """A feature needs an optional dependency (an extra) that is not installed."""

    exit_code = 4


def require(module: str, *, extra: str, feature: str, hint: str = ""):
    """Import ``module``, or raise :class:`MissingDependency` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise  # installed but broken: keep the real error
        raise MissingDependency(f"{feature} needs {module}, which is not installed: "
                                f"pip install 'tiledehaze[{extra}]'{hint}") from None
