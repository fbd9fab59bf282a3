"""MiniFASNet (V2 and V1SE) in PyTorch, written for Veriframe.

The architecture follows the published MiniFASNet design of Silent-Face-Anti-Spoofing
(minivision-ai, Apache-2.0): a MobileFaceNet-style stack of depthwise-separable blocks with
PReLU, a 5x5 global depthwise conv for 80x80 inputs, a 128-d embedding and 3 logits.
Parameter names and shapes are identical to the upstream state dicts (``module.`` prefix
removed), so a file written by :func:`save_safetensors` loads in Veriframe's Rust runtime
(``src/detect/nets/minifasnet/``) exactly like the upstream ``2.7_80x80_MiniFASNetV2`` weights.

Input: N x 3 x 80 x 80, **B,G,R** channel order, raw 0-255 floats, no normalisation.
Output: logits over 3 classes; class 1 = real (bona fide), 0 = print attack, 2 = screen/replay.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

# Mid (expansion) widths of every depthwise-separable block, per stage. Each stage's
# in/out width is fixed by the design: 32 -> 64 (conv_23), 64 (conv_3), 64 -> 128 (conv_34),
# 128 (conv_4, conv_45, conv_5).
V2_MIDS: Dict[str, List[int]] = {
    "conv_23": [103],
    "conv_3": [13, 13, 13, 13],
    "conv_34": [231],
    "conv_4": [231, 52, 26, 77, 26, 26],
    "conv_45": [308],
    "conv_5": [26, 26],
}
V1SE_MIDS: Dict[str, List[int]] = {
    "conv_23": [103],
    "conv_3": [13, 26, 13, 52],
    "conv_34": [231],
    "conv_4": [154, 52, 26, 52, 26, 26],
    "conv_45": [308],
    "conv_5": [26, 26],
}

NUM_CLASSES = 3
REAL_CLASS = 1
PRINT_CLASS = 0
SCREEN_CLASS = 2


class ConvBlock(nn.Module):
    """conv (no bias) -> BN -> PReLU; ``prelu=False`` gives the linear (projection) block."""

    def __init__(self, cin, cout, k=1, s=1, p=0, groups=1, prelu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout) if prelu else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels // reduction)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.relu(self.bn1(self.fc1(w)))
        w = torch.sigmoid(self.bn2(self.fc2(w)))
        return x * w


class DepthWise(nn.Module):
    """1x1 expand (PReLU) -> 3x3 depthwise (PReLU) -> 1x1 project (linear) [+ SE] [+ residual]."""

    def __init__(self, cin, mid, cout, stride, residual, se=False):
        super().__init__()
        self.conv = ConvBlock(cin, mid, 1)
        self.conv_dw = ConvBlock(mid, mid, 3, stride, 1, groups=mid)
        self.project = ConvBlock(mid, cout, 1, prelu=False)
        self.se_module = SEModule(cout) if se else None
        self.residual = residual

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, channels: int, mids: Sequence[int], se_last: bool):
        super().__init__()
        self.model = nn.Sequential(
            *[
                DepthWise(channels, m, channels, 1, True, se=se_last and i == len(mids) - 1)
                for i, m in enumerate(mids)
            ]
        )

    def forward(self, x):
        return self.model(x)


class MiniFASNet(nn.Module):
    def __init__(self, mids: Dict[str, List[int]] = V2_MIDS, se: bool = False, drop: float = 0.0):
        super().__init__()
        self.conv1 = ConvBlock(3, 32, 3, 2, 1)
        self.conv2_dw = ConvBlock(32, 32, 3, 1, 1, groups=32)
        self.conv_23 = DepthWise(32, mids["conv_23"][0], 64, 2, False)
        self.conv_3 = Residual(64, mids["conv_3"], se)
        self.conv_34 = DepthWise(64, mids["conv_34"][0], 128, 2, False)
        self.conv_4 = Residual(128, mids["conv_4"], se)
        self.conv_45 = DepthWise(128, mids["conv_45"][0], 128, 2, False)
        self.conv_5 = Residual(128, mids["conv_5"], se)
        self.conv_6_sep = ConvBlock(128, 512, 1)
        # 80x80 input -> 5x5 feature map; kernel = ((80 + 15) // 16) = 5.
        self.conv_6_dw = ConvBlock(512, 512, 5, 1, 0, groups=512, prelu=False)
        self.linear = nn.Linear(512, 128, bias=False)
        self.bn = nn.BatchNorm1d(128)
        self.drop = nn.Dropout(drop)
        self.prob = nn.Linear(128, NUM_CLASSES, bias=False)

    def embed(self, x):
        for m in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34,
                  self.conv_4, self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = m(x)
        return self.bn(self.linear(x.flatten(1)))

    def forward(self, x):
        return self.prob(self.drop(self.embed(x)))


def minifasnet_v2(drop: float = 0.0) -> MiniFASNet:
    return MiniFASNet(V2_MIDS, se=False, drop=drop)


def minifasnet_v1se() -> MiniFASNet:
    return MiniFASNet(V1SE_MIDS, se=True)


def load_safetensors(model: nn.Module, path: str, strict: bool = True) -> None:
    """Load an upstream-named state dict (``num_batches_tracked`` is optional)."""
    from safetensors.torch import load_file

    sd = load_file(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if strict and (missing or unexpected or bad_shape):
        raise ValueError(
            f"{path}: missing {missing[:5]} unexpected {unexpected[:5]} shape {bad_shape[:5]}"
        )
    own.update({k: v.to(own[k].dtype) for k, v in sd.items() if k in own})
    model.load_state_dict(own)


def save_safetensors(model: nn.Module, path: str, metadata: Dict[str, str] | None = None) -> None:
    """Write f32 weights + BN running stats with upstream key names.

    ``num_batches_tracked`` (I64) is written too, as the upstream files have it, so a loader
    keyed on the upstream file sees the same set of names.
    """
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    sd = {k: (v.float() if v.is_floating_point() else v.to(torch.int64)) for k, v in sd.items()}
    save_file(sd, path, metadata=metadata or {})
