"""tiledehaze: dehaze images of any size, tiled, streamed and blended without seams."""

__version__ = "0.1.0"
