"""Inference backends behind one interface; see :mod:`.base`.

``auto`` tries them in this order and takes the first that can run here: TensorRT, torch on
CUDA, ONNX Runtime's CUDA provider, then the CPU paths (ONNX Runtime, about 2x torch on
CPU, before torch). ``onnxruntime-tensorrt`` is only used when asked for by name: where it
works, the native ``tensorrt`` backend does too and comes first.
"""

from . import ort, tensorrt, torch_backend
from .base import (AUTO_ORDER, Backend, BackendInfo, available_backends, check_backend, create_backend,
                   register_backend)

register_backend("tensorrt", tensorrt.TensorRTBackend, tensorrt.probe, auto_rank=0, gpu_only=True)
register_backend("torch-cuda", torch_backend.create_cuda, torch_backend.probe_cuda, auto_rank=1, gpu_only=True)
register_backend("onnxruntime-cuda", ort.create_cuda, ort.probe_cuda, auto_rank=2, gpu_only=True)
register_backend("onnxruntime", ort.OnnxRuntimeBackend, ort.probe, auto_rank=3)
register_backend("torch", torch_backend.TorchBackend, torch_backend.probe, auto_rank=4)
register_backend("onnxruntime-tensorrt", ort.create_tensorrt, ort.probe_tensorrt, auto_rank=5, gpu_only=True)

__all__ = ["AUTO_ORDER", "Backend", "BackendInfo", "available_backends", "check_backend", "create_backend",
           "register_backend"]
