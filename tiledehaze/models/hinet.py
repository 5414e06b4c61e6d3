"""HINet (Chen et al., CVPR Workshops 2021), loading the authors' checkpoints.

HINet is two U-Nets in a row. Each level of their encoders is a *HIN block*: a 3 x 3
convolution whose first half of channels is instance-normalised (affine), LeakyReLU(0.2), a
second 3 x 3 convolution, LeakyReLU, plus a 1 x 1 identity branch; a 4 x 4 stride-2 convolution
goes down a level. Decoders come back up with 2 x 2 transposed convolutions and skip
convolutions. Between the stages a supervised attention module (SAM) gates the features
passed on, and the second encoder adds both the first stage's encoder and decoder features at
every level (cross-stage feature fusion, CSFF). The output is the second stage's last
convolution plus the input (a residual), on RGB in [0, 1].

Parameter names and shapes are those of ``megvii-model/HINet`` (``basicsr/models/archs/hinet_arch.py``),
so their ``{'params': ...}`` checkpoints load as they are. The width (64 for the published
models, 32 for "HINet 0.5x"), the depth (5: inputs must be multiples of 2^4 = 16) and which
encoder levels carry instance normalisation (all five for SIDD, levels 3-4 for GoPro and REDS)
are read from the tensor shapes and names.

Instance normalisation uses statistics of the whole input, so a tile's output differs from the
whole image's: the original model tiles only approximately. The authors' follow-up TLC
("Revisiting Global Statistics Aggregation", megvii-research/TLC) computes the same statistics
over a sliding window instead and loads the same checkpoints. A window of ``base_size`` pixels
at full resolution (TLC: 1.5 x the 256 px training patches, 384) is ``base_size / 2^i`` pixels at
level ``i``; the window is shifted inside the image at its borders, as TLC pads its window
means by replication. With local statistics an output pixel depends only on input pixels at
most :func:`receptive_radius` away, so tiles reproduce whole-image inference exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .checkpoint import load_exact
from .spec import ModelSpec

#: TLC's reference input side: a window of ``base_size`` at full resolution is
#: ``(TRAIN_SIZE >> level) * base_size // TRAIN_SIZE`` pixels at ``level``, as TLC computes it
TRAIN_SIZE = 256
#: TLC's window for HINet (1.5 x the 256 px training patches)
DEFAULT_BASE_SIZE = 384
SLOPE = 0.2
EPS = 1e-5


def window_at(level: int, base_size: int) -> int:
    """Side of the local-statistics window at encoder ``level`` (TLC's rounding)."""
    return max(1, (TRAIN_SIZE >> level) * base_size // TRAIN_SIZE)


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window`` x ``window`` box around each pixel, the box kept inside the image.

    A box that would cross the border is shifted inside it (TLC pads its valid-window means by
    replication, which is the same); an axis shorter than the window is averaged whole. The sums
    come from an integral image in float64, so that a pixel's mean does not depend, beyond
    float32 rounding, on where the tile it was computed in starts.
    """
    h, w = x.shape[-2:]
    kh, kw = min(h, window), min(w, window)
    s = F.pad(x.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    sums = s[..., kh:, kw:] - s[..., :-kh, kw:] - s[..., kh:, :-kw] + s[..., :-kh, :-kw]
    pad = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    return F.pad((sums / (kh * kw)).to(x.dtype), pad, mode="replicate")


class HalfNorm(nn.Module):
    """The affine normalisation of a HIN block's first half of channels: over the whole input
    (``window`` None, instance normalisation) or over a sliding window (TLC's local statistics)."""

    def __init__(self, channels: int, window: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=EPS)
        mean = box_mean(x, self.window)
        var = (box_mean(x * x, self.window) - mean * mean).clamp_min(0.0)
        return (x - mean) * torch.rsqrt(var + EPS) * self.weight[:, None, None] + self.bias[:, None, None]


class ConvBlock(nn.Module):
    """One U-Net level: two 3 x 3 convolutions (the first half-normalised in a HIN block), a
    1 x 1 identity branch, optional cross-stage fusion and a 4 x 4 stride-2 way down."""

    def __init__(self, cin: int, cout: int, *, down: bool, csff: bool = False, norm: HalfNorm | None = None) -> None:
        super().__init__()
        self.identity = nn.Conv2d(cin, cout, 1)
        self.conv_1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv_2 = nn.Conv2d(cout, cout, 3, padding=1)
        if csff:
            self.csff_enc = nn.Conv2d(cout, cout, 3, padding=1)
            self.csff_dec = nn.Conv2d(cout, cout, 3, padding=1)
        self.csff = csff
        self.norm = norm
        self.downsample = nn.Conv2d(cout, cout, 4, stride=2, padding=1, bias=False) if down else None

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None,
                dec: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv_1(x)
        if self.norm is not None:
            a, b = out.chunk(2, dim=1)
            out = torch.cat([self.norm(a), b], dim=1)
        out = F.leaky_relu(out, SLOPE)
        out = F.leaky_relu(self.conv_2(out), SLOPE) + self.identity(x)
        if self.csff and enc is not None:
            out = out + self.csff_enc(enc) + self.csff_dec(dec)
        return out


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv_block = ConvBlock(cin, cout, down=False)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.up(x), bridge], dim=1))


class SAM(nn.Module):
    """Supervised attention between the stages: a stage-one image, and features gated by it."""

    def __init__(self, channels: int, image_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, image_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(image_channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        stage_one = self.conv2(x) + image
        return self.conv1(x) * torch.sigmoid(self.conv3(stage_one)) + x


class HINet(nn.Module):
    """HINet with the authors' parameter names; ``forward`` returns the final (second-stage) image.

    ``base_size`` None keeps the authors' instance normalisation; a size switches to TLC's local
    statistics over windows of that many full-resolution pixels.
    """

    def __init__(self, *, width: int = 64, depth: int = 5, in_channels: int = 3,
                 hin_levels: Iterable[int] = range(5), base_size: int | None = None) -> None:
        super().__init__()
        self.width, self.depth, self.base_size = width, depth, base_size
        self.hin_levels = tuple(sorted(set(hin_levels)))
        self.conv_01 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv_02 = nn.Conv2d(in_channels, width, 3, padding=1)
        chans = [width << i for i in range(depth)]
        self.down_path_1, self.down_path_2 = nn.ModuleList(), nn.ModuleList()
        for i, c in enumerate(chans):
            down = i + 1 < depth
            cin = chans[max(i - 1, 0)]
            self.down_path_1.append(ConvBlock(cin, c, down=down, norm=self._norm(i, c)))
            self.down_path_2.append(ConvBlock(cin, c, down=down, csff=down, norm=self._norm(i, c)))
        ups = list(reversed(range(depth - 1)))
        self.up_path_1 = nn.ModuleList(UpBlock(chans[i + 1], chans[i]) for i in ups)
        self.up_path_2 = nn.ModuleList(UpBlock(chans[i + 1], chans[i]) for i in ups)
        self.skip_conv_1 = nn.ModuleList(nn.Conv2d(chans[i], chans[i], 3, padding=1) for i in ups)
        self.skip_conv_2 = nn.ModuleList(nn.Conv2d(chans[i], chans[i], 3, padding=1) for i in ups)
        self.sam12 = SAM(width, in_channels)
        self.cat12 = nn.Conv2d(2 * width, width, 1)
        self.last = nn.Conv2d(width, in_channels, 3, padding=1)

    def _norm(self, level: int, channels: int) -> HalfNorm | None:
        if level not in self.hin_levels:
            return None
        return HalfNorm(channels // 2, None if self.base_size is None else window_at(level, self.base_size))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one halving per level below the top)."""
        return 1 << (self.depth - 1)

    def _encode(self, blocks: nn.ModuleList, x: torch.Tensor,
                fuse: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, block in enumerate(blocks):
            enc, dec = fuse[i] if fuse is not None and i < len(fuse) else (None, None)
            x = block(x, enc, dec)
            if block.downsample is not None:
                skips.append(x)
                x = block.downsample(x)
        return x, skips

    @staticmethod
    def _decode(ups: nn.ModuleList, skip_convs: nn.ModuleList, x: torch.Tensor,
                skips: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for up, skip_conv, skip in zip(ups, skip_convs, reversed(skips)):
            x = up(x, skip_conv(skip))
            outs.append(x)
        return outs

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x, encs = self._encode(self.down_path_1, self.conv_01(image))
        decs = self._decode(self.up_path_1, self.skip_conv_1, x, encs)
        x = self.cat12(torch.cat([self.conv_02(image), self.sam12(decs[-1], image)], dim=1))
        x, skips = self._encode(self.down_path_2, x, list(zip(encs, reversed(decs))))
        return self.last(self._decode(self.up_path_2, self.skip_conv_2, x, skips)[-1]) + image


def receptive_radius(depth: int, hin_levels: Iterable[int] = (), base_size: int | None = None) -> int:
    """How far (full-resolution pixels) an output pixel of HINet can see, tile origins on multiples of 2^(depth-1).

    Followed through both stages: a 3 x 3 convolution at level ``i`` reaches ``2^i`` further, so do
    the 4 x 4 stride-2 way down and the 2 x 2 way up (which lands on either half of a pixel one
    level lower); a local-statistics window of side ``k`` reaches ``k // 2`` pixels of its level.
    Without ``base_size`` it is the convolutions' reach alone (instance normalisation sees the
    whole tile whatever the halo).
    """
    hin = set(hin_levels) if base_size is not None else set()

    def block(r: int, level: int) -> int:  # conv_1, the norm, conv_2 (the identity branch is 1 x 1)
        s = 1 << level
        r += s
        if level in hin:
            r += (window_at(level, base_size) // 2) * s
        return r + s

    def stage(r: int, fuse: list[tuple[int, int]] | None) -> tuple[int, list[int], list[int]]:
        skips = []
        for level in range(depth):
            r = block(r, level)
            if fuse is not None and level + 1 < depth:  # csff_enc and csff_dec: 3 x 3 each
                r = max(r, fuse[level][0] + (1 << level), fuse[level][1] + (1 << level))
            if level + 1 < depth:
                skips.append(r)
                r += 1 << level
        decs = []
        for level in reversed(range(depth - 1)):
            s = 1 << level
            r = max(r + s, skips[level] + s)  # up, and the skip convolution
            r = r + 2 * s  # the up block's two convolutions
            decs.append(r)
        return r, skips, decs

    r, encs, decs = stage(1, None)  # conv_01
    sam = r + 2  # conv2 then conv3 on the stage-one image
    dec_at = list(reversed(decs))  # decoder output per level, level 0 first
    r, _, _ = stage(max(1, sam), list(zip(encs, dec_at)))
    return r + 1  # last


def infer_layout(tensors: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """Width, depth, input channels and HIN levels of a HINet state dict, from names and shapes."""
    first = tensors.get("conv_01.weight")
    if first is None or first.ndim != 4:
        raise ConfigError("not a HINet checkpoint: it has no 4-D 'conv_01.weight'")
    depth = 0
    while f"down_path_1.{depth}.conv_1.weight" in tensors:
        depth += 1
    if depth < 2:
        raise ConfigError(f"not a HINet checkpoint: it has {depth} encoder level(s) ('down_path_1.N.conv_1.weight'), "
                          "HINet has at least 2")
    if first.shape[1] != 3:
        raise ConfigError(f"a HINet for {first.shape[1]}-channel images: tiledehaze runs RGB HINet (3 channels) only")
    hin = tuple(i for i in range(depth) if f"down_path_1.{i}.norm.weight" in tensors)
    return {"width": int(first.shape[0]), "in_channels": int(first.shape[1]), "depth": depth, "hin_levels": hin}


def from_state_dict(tensors: Mapping[str, torch.Tensor], *, base_size: int | None = None) -> HINet:
    """A HINet in eval mode with these weights; hyper-parameters are read from the shapes.

    Every key and shape must match (:func:`.checkpoint.load_exact` says in one line what does not).
    """
    if base_size is not None and (not isinstance(base_size, int) or base_size < 1):
        raise ConfigError(f"base_size must be a positive number of pixels, not {base_size}")
    with torch.device("meta"):  # no random initialisation of up to 88 M parameters replaced at once
        net = HINet(**infer_layout(tensors), base_size=base_size)
    load_exact(net.to_empty(device="cpu"), tensors, "HINet")
    return net


def no_onnx(module: nn.Module) -> bytes:
    """TLC's windows depend on the input size (a window never exceeds the image), which an ONNX graph
    traced at one size would freeze: the local-statistics variant runs on torch only."""
    from .adapter import ExportFailed

    raise ExportFailed("HINet with local statistics has no ONNX form (its windows depend on the input size); "
                       "use --backend torch")


def spec_for(net: HINet, spec: ModelSpec) -> ModelSpec:
    """The registered spec, with the size multiple, alignment and halo of the checkpoint's layout."""
    return replace(spec, size_multiple=net.size_multiple, align=net.size_multiple,
                   halo=receptive_radius(net.depth, net.hin_levels, net.base_size))
