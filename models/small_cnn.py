"""The paper's small fully convolutional image classifier (``small_cnn``, about 1 M parameters).

Three stages of three 3×3 convs (32, 32, 64 | 64, 64, 128 | 128, 128, 256 filters), each conv →
BatchNorm → LeakyReLU(0.1), a 2×2 max-pool after each stage, then a 3×3 conv to ``n_outputs`` and
global average pooling, whose result is the logits (method §2.1). There is no dense layer,
so any H, W ≥ 8 works (64×64 or EMBED's 64×48).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.heads import float32_head
from models.registry import register_architecture

_STAGE_FILTERS: tuple[tuple[int, int, int], ...] = ((32, 32, 64), (64, 64, 128), (128, 128, 256))
_LEAKY_SLOPE = 0.1
# Keras's BatchNormalization epsilon. Its momentum 0.99 (torch 0.01) is not copied: shadow models
# here train for far fewer steps than the paper's, and running statistics that slow would still sit
# near their initial values when the model is scored in eval mode. torch's default 0.1 is used.
_BATCH_NORM_EPS = 1e-3


def _he_normal_(conv: nn.Conv2d) -> None:
    # Keras "he_normal": truncated normal (cut at ±2σ) whose variance is 2 / fan_in.
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978  # undo the variance lost by truncation
    nn.init.trunc_normal_(conv.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _conv_bn_act(n_in: int, n_out: int) -> nn.Sequential:
    conv = nn.Conv2d(n_in, n_out, 3, padding=1)
    _he_normal_(conv)
    return nn.Sequential(conv, nn.BatchNorm2d(n_out, eps=_BATCH_NORM_EPS), nn.LeakyReLU(_LEAKY_SLOPE))


class SmallCNN(nn.Module):
    """Input (B, in_channels, H, W); output (B, n_outputs) float32 logits.

    The last conv runs in float32 with autocast disabled, so logits are float32 under autocast too.
    ``width_multiplier`` scales every stage's filters (1.0 = the paper's net; smaller for tests).
    """

    def __init__(self, in_channels: int, n_outputs: int, width_multiplier: float = 1.0):
        super().__init__()
        if width_multiplier <= 0:
            raise ValueError(f"small_cnn width_multiplier must be > 0, got {width_multiplier}")
        layers: list[nn.Module] = []
        n_in = in_channels
        for stage in _STAGE_FILTERS:
            for filters in stage:
                n_out = max(1, round(filters * width_multiplier))
                layers.append(_conv_bn_act(n_in, n_out))
                n_in = n_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(n_in, n_outputs, 3, padding=1)
        _he_normal_(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, 256·w, H/8, W/8)
        return float32_head(self.classifier, h).mean(dim=(2, 3))


@register_architecture("small_cnn", {"image"}, "Small 3-stage CNN of the paper, ~1 M params (width_multiplier)")
def build_small_cnn(input_shape: tuple[int, ...], n_outputs: int, width_multiplier: float = 1.0) -> nn.Module:
    """Build ``small_cnn`` for image input_shape (C, H, W) with H, W ≥ 8."""
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn expects image input_shape (C, H, W), got {input_shape}")
    return SmallCNN(int(input_shape[0]), n_outputs, width_multiplier=width_multiplier)
