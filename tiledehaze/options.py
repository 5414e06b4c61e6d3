"""What to run: one frozen options object, built once and handed whole to the layers below.

The command line, :func:`tiledehaze.restore`, :func:`tiledehaze.process_file` and
:func:`tiledehaze.process_batch` all build a :class:`RunOptions` from their keyword arguments;
the model registry, the backends and the batch manifest read it from there. A misspelt option
(``precison="fp16"``) is a :class:`~tiledehaze.errors.ConfigError` naming the valid ones, never
silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ConfigError

if TYPE_CHECKING:
    from .models.base import Model

#: options that change where or how fast a model runs, never what it writes: left out of the fingerprint
RUN_ONLY = ("backend", "threads", "batch", "device")


@dataclass(frozen=True)
class RunOptions:
    """Everything that decides which model runs, how it is tiled and where it runs.

    ``model_options`` holds the model's own options (``patch=`` for ``"dcp"``) as sorted
    ``(name, value)`` pairs, so that the object is hashable and can key a model cache.
    """

    #: ``None``: the network ``weights`` belong to, else the default model (see :func:`~tiledehaze.models.resolve_model`)
    model: str | Model | None = None
    weights: str | None = None
    tile: int | None = 1024
    overlap: int | None = None
    batch: int | None = None
    backend: str = "auto"
    threads: int | None = None
    precision: str | None = None
    device: str | None = None
    model_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def create(cls, **options: Any) -> RunOptions:
        """Options from keyword arguments; anything that is neither a run option nor one of the
        model's own options raises :class:`ConfigError` (one line: the bad key and the valid ones).
        """
        own = {k: options.pop(k) for k in list(options) if k not in _FIELDS}
        return cls(**options, model_options=tuple(own.items()))

    def __post_init__(self) -> None:
        if self.weights is not None:  # absolute, so that workers elsewhere find the same file
            object.__setattr__(self, "weights", str(Path(self.weights).resolve()))
        if self.model is None:
            from .models import resolve_model

            object.__setattr__(self, "model", resolve_model(None, self.weights))
        object.__setattr__(self, "model_options", tuple(sorted(dict(self.model_options).items())))
        self._check()

    def _check(self) -> None:
        """Refuse model options the model does not take."""
        valid = model_option_names(self.model)
        bad = [k for k, _ in self.model_options if k not in valid]
        if bad:
            name = self.model if isinstance(self.model, str) else self.model.name
            raise ConfigError(f"unknown option {bad[0]!r} for model {name!r}; valid options: "
                              f"{', '.join(sorted(_RUN_FIELDS + valid))}")

    def replace(self, **changes: Any) -> RunOptions:
        return dataclasses.replace(self, **changes)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(self.model_options)

    def backend_kwargs(self) -> dict[str, Any]:
        """What a backend takes from these options (threads, precision, device, tile, batch), when set."""
        return {k: v for k in ("threads", "precision", "device", "tile", "batch")
                if (v := getattr(self, k)) is not None}

    def fingerprint_key(self) -> dict[str, Any]:
        """The options that change the output, as JSON-ready values (weights by content)."""
        extra = dict(self.model_options)
        if self.precision is not None:
            extra["precision"] = self.precision
        model = self.model if isinstance(self.model, str) else self.model.describe()
        return {"model": model, "weights": _weights_digest(self.weights_path()),
                "tile": self.tile, "overlap": self.overlap,
                "options": [[k, v] for k, v in sorted(extra.items()) if k not in RUN_ONLY]}

    def weights_path(self) -> Path | None:
        """The weights file the model loads: ``weights``, else the registered model's shipped weights."""
        if self.weights is not None:
            return Path(self.weights)
        if not isinstance(self.model, str):
            return None
        from .models import model_entry

        return model_entry(self.model).default_weights

    def weights_sha256(self) -> str | None:
        """SHA-256 of :meth:`weights_path`'s content; ``None`` for a model without weights."""
        path = self.weights_path()
        return None if path is None else file_digest(path)

    def fingerprint(self) -> str:
        """A short hash of the options that change the output (not backend, threads, batch or device)."""
        return fingerprint(self.fingerprint_key())


_FIELDS = tuple(f.name for f in dataclasses.fields(RunOptions) if f.name != "model_options")
_RUN_FIELDS = tuple(f for f in _FIELDS if f != "model")


def model_option_names(model: str | Model) -> tuple[str, ...]:
    """The options a registered model takes besides the run options; none for a ready model."""
    if not isinstance(model, str):
        return ()
    from .models import model_entry

    return model_entry(model).options


def resolve(options: RunOptions | None, given: Mapping[str, Any], model_options: Mapping[str, Any]) -> RunOptions:
    """The options of an API call: ``options`` when given (then every other run keyword must keep
    its default), else built from the keywords."""
    if options is None:
        return RunOptions.create(**given, **model_options)
    defaults = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    changed = [k for k, v in given.items() if v != defaults[k]] + list(model_options)
    if changed:
        raise ConfigError(f"pass either options= or {changed[0]}=, not both")
    return options


def fingerprint(key: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``key`` (with the package version) as canonical JSON."""
    from . import __version__

    key = {"version": __version__, **key}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_digest(path: Path | None) -> str:
    if path is None:
        return "none"
    try:
        return file_digest(path)
    except OSError:
        return f"unreadable:{path.name}"
