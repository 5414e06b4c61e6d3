"""``tiledehaze serve``: a local web app to see restoration work, built on FastAPI and uvicorn.

Needs the ``web`` extra: ``pip install 'tiledehaze[web]'``.
"""

from .app import Settings, create_app

__all__ = ["Settings", "create_app"]
