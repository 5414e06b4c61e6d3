"""The web app: a page, an upload API and lazily read tiles of the images named at start-up.

Routes
------
``GET /``                                      the page
``GET /api/models``                            models and the options the page offers for each
``POST /api/restore``                          multipart ``file`` (+ ``model`` and its options) -> restored
                                               image in the uploaded format
``POST /api/preview``                          multipart ``file`` -> 8-bit PNG the browser can show
``GET /api/images``                            the images named at start-up and their restoration progress
``GET /api/images/{id}/{side}/{level}/{x}/{y}.png``  a 256 px tile, ``side`` ``input`` or ``output``,
                                               ``level`` k downscaled by 2**k

Restoration runs in a thread pool, off the event loop. Models come from the engine's cache,
one instance per model and options, shared by the pool's threads: ONNX Runtime sessions and
the Dark Channel Prior are safe to call from several threads, and the GPU backends serialise
their streams with a lock.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from ..api import load_model
from ..errors import BackendUnavailable, ConfigError, OutOfMemory, OutputError, TileDehazeError
from ..models import list_models
from ..options import RunOptions
from .gallery import Gallery
from .pyramid import NotReady
from .limits import BodyLimit, BodyTooLarge
from .uploads import NotAnImage, TooLarge, Workspace, preview_upload, restore_upload

#: options the page offers per model: (name, label, type, minimum, maximum, step, default)
MODEL_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "aodnet": [],
    "dcp": [
        {"name": "omega", "label": "haze removed", "type": "float", "min": 0.5, "max": 1.0, "step": 0.05,
         "default": 0.95},
        {"name": "patch", "label": "dark-channel patch (px)", "type": "int", "min": 3, "max": 31, "step": 2,
         "default": 15},
    ],
}
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
#: HTTP status per error type; other user errors are 400
_STATUS = {TooLarge: 413, NotAnImage: 415, OutOfMemory: 507, OutputError: 500, BackendUnavailable: 503}


@dataclass
class Settings:
    """What ``tiledehaze serve`` was started with."""

    images: list[Path] = field(default_factory=list)
    max_upload_mb: float = 50.0
    max_upload_pixels: int = 100_000_000
    workers: int = 1
    #: the model and how it runs; the page's default model, and every restoration's run options
    options: RunOptions = field(default_factory=RunOptions)


def error(status: int, message: str) -> PlainTextResponse:
    """Errors are one line of text: what happened and what to do."""
    return PlainTextResponse(message.splitlines()[0] if message else "error", status_code=status)


def request_options(form, defaults: RunOptions) -> RunOptions:
    """The server's run options with the request's model and its options, checked against :data:`MODEL_OPTIONS`."""
    name = str(form.get("model") or defaults.model)
    names = [entry.name for entry in list_models()]
    if name not in names:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(names)}")
    options: dict[str, Any] = {}
    for spec in MODEL_OPTIONS.get(name, []):
        value = form.get(spec["name"])
        if value in (None, ""):
            continue
        try:
            number = int(value) if spec["type"] == "int" else float(value)
        except ValueError:
            raise ConfigError(f"{spec['name']} must be a number, not {str(value)[:40]!r}") from None
        if not spec["min"] <= number <= spec["max"]:
            raise ConfigError(f"{spec['name']} must be between {spec['min']} and {spec['max']}, not {number}")
        options[spec["name"]] = number
    if name == defaults.model:
        options = {**defaults.model_kwargs, **options}
    return defaults.replace(model=name, model_options=tuple(options.items()))


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``; images named there are opened now, so a bad one fails here."""
    # load the default model now: a missing backend or bad weights fail at start, not on the first upload
    load_model(settings.options)
    gallery = Gallery(settings.images, settings.options)
    limit = int(settings.max_upload_mb * (1 << 20))
    runtime: dict[str, Any] = {}  # the work folder and thread pools, while the server runs

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime["workdir"] = workdir = Path(tempfile.mkdtemp(prefix="tiledehaze-serve-"))
        runtime["pool"] = pool = ThreadPoolExecutor(max(1, settings.workers), thread_name_prefix="tiledehaze-restore")
        background = ThreadPoolExecutor(1, thread_name_prefix="tiledehaze-gallery")
        gallery.start(background, workdir)
        try:
            yield
        finally:
            gallery.stop()
            background.shutdown(wait=True, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)
            gallery.close()
            shutil.rmtree(workdir, ignore_errors=True)

    app = FastAPI(title="tiledehaze", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=limit)
    app.state.settings, app.state.gallery = settings, gallery

    async def in_pool(fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(runtime["pool"], lambda: fn(*args, **kwargs))

    async def run_upload(request: Request, job):
        """``job(form, file)`` in the pool on the form's ``file`` part; errors become one-line responses."""
        try:
            form = await request.form(max_files=1, max_fields=20)
        except BodyTooLarge:
            raise  # answered with 413 by the middleware
        except Exception as exc:  # malformed multipart, wrong content type
            return error(400, f"expected a multipart form with a 'file' field ({exc})")
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                return error(400, "expected a multipart form with a 'file' field holding an image")
            return await in_pool(job, form, file)
        except TileDehazeError as exc:
            return error(_STATUS.get(type(exc), 400), str(exc))
        finally:
            await form.close()

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(_static("index.html"), media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            return error(404, "not found")
        return Response(_static(name), media_type=STATIC[name])

    @app.get("/api/models")
    def models() -> JSONResponse:
        return JSONResponse({
            "default": settings.options.model,
            "max_upload_mb": settings.max_upload_mb,
            # a model whose weights do not ship is offered only when the server was started with it
            "models": [{"name": e.name, "description": e.description, "options": MODEL_OPTIONS.get(e.name, [])}
                       for e in list_models() if e.ships_weights or not e.spec.weights_source
                       or e.name == settings.options.model],
        })

    @app.post("/api/restore")
    async def restore(request: Request) -> Response:
        work = Workspace(runtime["workdir"])

        def job(form, file):
            return restore_upload(work, file.file, file.filename, max_pixels=settings.max_upload_pixels,
                                  options=request_options(form, settings.options))

        try:
            result = await run_upload(request, job)
        except BaseException:
            work.cleanup()
            raise
        if isinstance(result, Response):
            work.cleanup()
            return result
        return FileResponse(result.path, media_type=result.media_type, filename=result.filename,
                            background=BackgroundTask(work.cleanup))

    @app.post("/api/preview")
    async def preview(request: Request) -> Response:
        work = Workspace(runtime["workdir"])

        def job(form, file):
            return preview_upload(work, file.file, file.filename, max_pixels=settings.max_upload_pixels)

        try:
            result = await run_upload(request, job)
        finally:
            work.cleanup()
        return result if isinstance(result, Response) else Response(result, media_type="image/png")

    @app.get("/api/images")
    def images() -> JSONResponse:
        return JSONResponse([entry.describe() for entry in gallery.entries])

    @app.get("/api/images/{image_id}/{side}/{level}/{x}/{y}.png")
    def tile(image_id: int, side: Literal["input", "output"], level: int, x: int, y: int) -> Response:
        entry = gallery.get(image_id)
        if entry is None:
            return error(404, f"no image {image_id}")
        source = entry.source if side == "input" else entry.restored
        if source is None:
            return error(409, f"image {image_id} is not restored yet ({entry.status})")
        cols, rows = source.tiles(level) if 0 <= level < source.levels else (0, 0)
        if not (0 <= x < cols and 0 <= y < rows):
            return error(404, f"no tile {level}/{x}/{y}")
        try:
            png = source.tile(level, x, y)
        except NotReady:
            return error(409, f"image {image_id} is still being prepared ({entry.status})")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return app


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()
