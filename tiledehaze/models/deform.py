"""Modulated deformable convolution (DCNv2, Zhu et al. 2019) in plain torch.

A deformable convolution reads each of its ``kh x kw`` taps not on the regular grid but at a
learned, fractional offset from it, interpolated bilinearly, and scales the tap by a learned
mask. The usual implementations are compiled extensions (DCNv2's CUDA code, torchvision's
``deform_conv2d``); torchvision does not import beside every torch build, so this module samples
with :func:`torch.nn.functional.grid_sample` (all taps of a band of output rows in one call)
and contracts the sampled columns with the kernel in one matrix product. The columns are
``C * kh * kw`` values per output pixel, so they are built a band of rows at a time, at most
:data:`COLUMN_BYTES` at once.

Conventions are those of DCNv2, torchvision and ONNX's ``DeformConv`` (opset 19), which agree:

* ``offset`` is (N, 2 * G * kh * kw, Ho, Wo), ordered (group, tap, (dy, dx)), taps row-major;
* ``mask`` is (N, G * kh * kw, Ho, Wo), multiplying each sampled value;
* a tap samples the input at ``(ho * stride - pad + i * dilation + dy, wo * stride - pad + j * dilation + dx)``
  in pixel coordinates; bilinear interpolation treats every pixel outside the input as 0.

Gradients flow to the input, the offsets, the mask, the weight and the bias, so the layer trains.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


#: the most memory the sampled columns of one band of output rows may take
COLUMN_BYTES = 64 << 20


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None, *, stride: int | tuple[int, int] = 1,
                  padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1) -> torch.Tensor:
    """Deformable convolution of ``x`` (N, C, H, W) with ``weight`` (O, C, kh, kw); see the module notes.

    The number of offset groups G is read from ``offset``'s channels; C must be a multiple of it.
    Without ``mask`` every tap has weight 1 (DCNv1).
    """
    n, c, h, w = x.shape
    o, cw, kh, kw = weight.shape
    if cw != c:
        raise ValueError(f"weight expects {cw} input channels, the input has {c}")
    taps = kh * kw
    groups, rest = divmod(offset.shape[1], 2 * taps)
    if rest or groups == 0 or c % groups:
        raise ValueError(f"offset has {offset.shape[1]} channels: not 2 x offset groups x {taps} taps dividing {c} channels")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = offset.shape[2:]
    expect = ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    if (ho, wo) != expect:
        raise ValueError(f"offset is {ho}x{wo}, the convolution's output is {expect[0]}x{expect[1]}")
    if mask is not None and mask.shape[1] != groups * taps:
        raise ValueError(f"mask has {mask.shape[1]} channels, expected {groups * taps}")

    offset = offset.reshape(n, groups, taps, 2, ho, wo)
    # where every tap samples, in pixel coordinates: the regular grid plus the offsets
    arange = lambda size: torch.arange(size, dtype=x.dtype, device=x.device)  # noqa: E731
    tap_y, tap_x = (arange(kh) * dh).repeat_interleave(kw), (arange(kw) * dw).repeat(kh)
    y = (arange(ho) * sh - ph).view(ho, 1) + tap_y.view(taps, 1, 1) + offset[:, :, :, 0]  # (N, G, taps, Ho, Wo)
    xx = (arange(wo) * sw - pw).view(1, wo) + tap_x.view(taps, 1, 1) + offset[:, :, :, 1]
    # grid_sample's normalised coordinates (align_corners=False): pixel p -> (2p + 1) / size - 1
    grid = torch.stack(((2 * xx + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    source = x.reshape(n * groups, c // groups, h, w)  # one sampling image per (batch, group)
    kernel = weight.reshape(o, c * taps)
    # the sampled columns (C x taps values per output pixel) are built a band of output rows at a time
    rows = max(1, COLUMN_BYTES // (n * c * taps * wo * x.element_size()))
    bands = []
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        cols = F.grid_sample(source, grid[:, :, :, r0:r1].reshape(n * groups, taps * (r1 - r0), wo, 2),
                             mode="bilinear", padding_mode="zeros", align_corners=False)
        cols = cols.reshape(n, groups, c // groups, taps, r1 - r0, wo)
        if mask is not None:
            cols = cols * mask.reshape(n, groups, 1, taps, ho, wo)[..., r0:r1, :]
        bands.append((kernel @ cols.reshape(n, c * taps, (r1 - r0) * wo)).reshape(n, o, r1 - r0, wo))
    out = torch.cat(bands, dim=2)
    return out if bias is None else out + bias.view(1, o, 1, 1)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2's ``DCN`` layer: a plain convolution predicts the offsets and the mask of a deformable one.

    Parameters (their names are DCNv2's, so its checkpoints load): ``weight`` (O, C, k, k),
    ``bias`` (O,), and ``conv_offset_mask``, a k x k convolution with ``3 * G * k * k`` outputs
    whose first two thirds are the offsets (in :func:`deform_conv2d`'s order) and whose last
    third, through a sigmoid, is the mask. The offset convolution starts at zero, so a fresh layer
    is an ordinary convolution that learns to deform.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                 padding: int = 1, dilation: int = 1, offset_groups: int = 1):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * offset_groups * kernel_size * kernel_size, kernel_size,
                                          stride=stride, padding=padding, dilation=dilation)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's offsets and (sigmoid) mask for input ``x``."""
        raw = self.conv_offset_mask(x)
        split = raw.shape[1] * 2 // 3
        return raw[:, :split], torch.sigmoid(raw[:, split:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(x, offset, self.weight, self.bias, mask, stride=self.stride, padding=self.padding,
                             dilation=self.dilation)
