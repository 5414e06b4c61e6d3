"""Inference backends behind one interface; see :mod:`.base`."""

from . import ort, torch_backend
from .base import AUTO_ORDER, Backend, BackendInfo, available_backends, create_backend, register_backend

register_backend("onnxruntime", ort.OnnxRuntimeBackend, ort.probe, auto_rank=0)
register_backend("torch", torch_backend.TorchBackend, torch_backend.probe, auto_rank=1)

__all__ = ["AUTO_ORDER", "Backend", "BackendInfo", "available_backends", "create_backend", "register_backend"]
