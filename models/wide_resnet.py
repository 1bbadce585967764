"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016) as in the paper: objax's pre-activation variant.

The paper's main image model is WRN-28-2 (about 1.5 M parameters); WRN-40-4 (about 9 M) is the
larger one of its model-scaling plots. Layout, initialisation and defaults follow
method §2.1:

* stem: 3×3 conv to 16 channels;
* 3 groups of (d − 4) / 6 pre-activation blocks with widths 16k, 32k, 64k, stride 2 in groups 2 and 3;
  a block is norm → act → conv3×3(stride) → norm → act → conv3×3, plus a shortcut that is the
  identity, or a 1×1 conv of the *activated* input where channels or stride change;
* final norm → act → global average pooling → float32 Linear head.

Inputs are (B, C, H, W) with any C (1 for CXR/EMBED, 3 for Fitzpatrick) and any H, W (64×64, 64×48).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from models.heads import float32_head
from models.registry import register_architecture

NormKind = Literal["group", "batch"]
ActivationKind = Literal["leaky_relu", "relu"]

# The paper's Keras code uses GroupNormalization(groups=16) with Keras's default epsilon (1e-3),
# and, before commit 59d9dbe, BatchNormalization(momentum=0.9, epsilon=1e-5). Keras's momentum is
# the weight of the old running statistic, torch's that of the new batch: 0.9 there is 0.1 here.
_GROUPS = 16
_GROUP_NORM_EPS = 1e-3
_BATCH_NORM_EPS = 1e-5
_BATCH_NORM_MOMENTUM = 0.1
_LEAKY_SLOPE = 0.1
_DEFAULT_ACTIVATION: dict[str, ActivationKind] = {"group": "leaky_relu", "batch": "relu"}


def _norm_factory(norm: NormKind) -> Callable[[int], nn.Module]:
    if norm == "group":
        return lambda channels: nn.GroupNorm(_GROUPS, channels, eps=_GROUP_NORM_EPS)
    if norm == "batch":
        return lambda channels: nn.BatchNorm2d(channels, eps=_BATCH_NORM_EPS, momentum=_BATCH_NORM_MOMENTUM)
    raise ValueError(f"WRN norm must be 'group' or 'batch', got {norm!r}")


def _activation_factory(activation: ActivationKind) -> Callable[[], nn.Module]:
    if activation == "leaky_relu":
        return lambda: nn.LeakyReLU(_LEAKY_SLOPE)
    if activation == "relu":
        return nn.ReLU
    raise ValueError(f"WRN activation must be 'leaky_relu' or 'relu', got {activation!r}")


def _conv(n_in: int, n_out: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 'same'-padded conv with objax's WRN init N(0, 1/sqrt(0.5·k²·n_out))."""
    conv = nn.Conv2d(n_in, n_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    nn.init.normal_(conv.weight, mean=0.0, std=1.0 / math.sqrt(0.5 * kernel_size**2 * n_out))
    return conv


def _glorot_normal_(linear: nn.Linear) -> None:
    # Keras "glorot_normal" (the paper's head init): truncated normal (cut at ±2σ) whose variance is
    # 2 / (fan_in + fan_out); zero bias.
    std = math.sqrt(2.0 / (linear.in_features + linear.out_features)) / 0.87962566103423978
    nn.init.trunc_normal_(linear.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(linear.bias)


class WRNBlock(nn.Module):
    """Pre-activation residual block: (B, n_in, H, W) -> (B, n_out, ceil(H/stride), ceil(W/stride))."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        stride: int,
        norm: Callable[[int], nn.Module],
        activation: Callable[[], nn.Module],
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm_1 = norm(n_in)
        self.act_1 = activation()
        self.conv_1 = _conv(n_in, n_out, 3, stride)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm_2 = norm(n_out)
        self.act_2 = activation()
        self.conv_2 = _conv(n_out, n_out, 3)
        # Projection only where the identity cannot be added (objax/the paper's rule).
        self.proj = _conv(n_in, n_out, 1, stride) if n_in != n_out or stride > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.act_1(self.norm_1(x))
        y = self.conv_2(self.act_2(self.norm_2(self.dropout(self.conv_1(activated)))))
        # The projection sees the activated input, not x: pre-activation as in objax.
        shortcut = self.proj(activated) if self.proj is not None else x
        return y + shortcut


class WideResNet(nn.Module):
    """WRN-depth-width for images.

    Input (B, in_channels, H, W); output (B, n_outputs) float32 logits, float32 also under autocast
    (the head runs with autocast disabled on a float32 copy of the pooled features, so the logits the
    audit scores are never rounded to half precision).
    """

    def __init__(
        self,
        in_channels: int,
        n_outputs: int,
        depth: int = 28,
        width: int = 2,
        norm: NormKind = "group",
        activation: ActivationKind | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if width < 1:
            raise ValueError(f"WRN width must be a positive integer, got {width}")
        make_norm = _norm_factory(norm)
        make_act = _activation_factory(activation or _DEFAULT_ACTIVATION[norm])
        blocks_per_group = (depth - 4) // 6

        self.stem = _conv(in_channels, 16, 3)
        blocks: list[nn.Module] = []
        n_in = 16
        for group, n_out in enumerate((16 * width, 32 * width, 64 * width)):
            for b in range(blocks_per_group):
                stride = 2 if group > 0 and b == 0 else 1
                blocks.append(WRNBlock(n_in, n_out, stride, make_norm, make_act, dropout))
                n_in = n_out
        self.blocks = nn.Sequential(*blocks)
        self.final_norm = make_norm(n_in)
        self.final_act = make_act()
        self.head = nn.Linear(n_in, n_outputs)
        _glorot_normal_(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.final_act(self.final_norm(self.blocks(self.stem(x))))
        pooled = h.mean(dim=(2, 3))  # (B, 64·width)
        return float32_head(self.head, pooled)


def _image_channels(input_shape: tuple[int, ...], name: str) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"{name} expects image input_shape (C, H, W), got {input_shape}")
    return int(input_shape[0])


@register_architecture("wrn", {"image"}, "Wide ResNet WRN-depth-width (params depth=28, width=2, norm, dropout)")
def build_wrn(
    input_shape: tuple[int, ...],
    n_outputs: int,
    depth: int = 28,
    width: int = 2,
    norm: NormKind = "group",
    activation: ActivationKind | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Any WRN-depth-width. ``norm='batch'`` gives the paper's pre-2025-08-04 BatchNorm + ReLU variant."""
    return WideResNet(
        _image_channels(input_shape, "wrn"),
        n_outputs,
        depth,
        width,
        norm=norm,
        activation=activation,
        dropout=dropout,
    )


@register_architecture("wrn_28_2", {"image"}, "WRN-28-2, the paper's main image model (~1.5 M params)")
def build_wrn_28_2(
    input_shape: tuple[int, ...],
    n_outputs: int,
    norm: NormKind = "group",
    activation: ActivationKind | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN-28-2 (paper default for CheXpert, MIMIC-CXR, Fitzpatrick, FairVision, EMBED)."""
    return WideResNet(
        _image_channels(input_shape, "wrn_28_2"),
        n_outputs,
        28,
        2,
        norm=norm,
        activation=activation,
        dropout=dropout,
    )


@register_architecture("wrn_40_4", {"image"}, "WRN-40-4, the larger model of the paper's scaling plots (~9 M)")
def build_wrn_40_4(
    input_shape: tuple[int, ...],
    n_outputs: int,
    norm: NormKind = "group",
    activation: ActivationKind | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN-40-4."""
    return WideResNet(
        _image_channels(input_shape, "wrn_40_4"),
        n_outputs,
        40,
        4,
        norm=norm,
        activation=activation,
        dropout=dropout,
    )
