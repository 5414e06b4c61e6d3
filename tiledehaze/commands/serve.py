"""``tiledehaze serve``: a local web page to restore images and compare before and after."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from ..errors import ConfigError
from . import add_command
from .process import add_model_options, run_options

EXAMPLES = """examples:
  tiledehaze serve                                  open http://127.0.0.1:8000 and drop in a photo
  tiledehaze serve scene.tif                        also pan and zoom through scene.tif, before and after
  tiledehaze serve --host 0.0.0.0 --port 8080       reachable from other machines (no authentication!)
  curl -F file=@photo.jpg -o out.jpg http://127.0.0.1:8000/api/restore

Images named on the command line may be of any size (TIFFs are read tile by tile); their
restored copies are written to a temporary folder (TMPDIR) and removed when the server stops.
"""


def register(sub) -> None:
    p = add_command(sub, "serve", help="a local web page: restore uploads, compare before and after, zoom huge images",
                    description="Start a local web app: upload an image and compare it with its restoration, "
                                "or pan and zoom through the images named here beside their restored copies.",
                    examples=EXAMPLES)
    p.add_argument("images", type=Path, nargs="*", metavar="IMAGE",
                   help="images of any size to view zoomable beside their restored copy")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload in MB (default: 50)")
    p.add_argument("--max-upload-mp", type=float, default=100.0,
                   help="largest upload in megapixels, whatever its file size (default: 100)")
    p.add_argument("--workers", type=int, default=1,
                   help="uploads restored at once (default: 1; each uses all inference threads)")
    add_model_options(p)
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace):
    """The server's settings from the command line (raises ConfigError when the web extra is missing)."""
    try:
        from ..serve import Settings
    except ImportError as exc:
        raise ConfigError(f"tiledehaze serve needs the web extra ({exc.name} is missing): "
                          "pip install 'tiledehaze[web]'") from None
    if args.max_upload_mb <= 0 or args.max_upload_mp <= 0 or args.workers < 1:
        raise ConfigError("--max-upload-mb, --max-upload-mp and --workers must be positive")
    return Settings(images=list(args.images), max_upload_mb=args.max_upload_mb,
                    max_upload_pixels=int(args.max_upload_mp * 1e6), workers=args.workers, options=run_options(args))


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, so that a taken port is one clear error before any work."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
    return sock


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    import uvicorn

    from ..serve import create_app

    sock = listen(args.host, args.port)
    with sock:
        server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
        host, port = sock.getsockname()[:2]
        print(f"tiledehaze: serving on http://{host if ':' not in host else f'[{host}]'}:{port}  (Ctrl-C to stop)",
              flush=True)
        server.run(sockets=[sock])
    return 0
