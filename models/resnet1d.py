"""1-D ResNet for 12-lead ECG (PTB-XL), after Wang et al. 2019 as the paper built it.

Three residual blocks of three Conv1d layers (kernel sizes 8, 5, 3, 'same' padding), each followed by
GroupNorm(16 groups, eps 1e-6); leaky ReLU with slope 0.2 (Keras's ``"leaky_relu"`` default) between
them, except one plain ReLU after the second conv of block 2, as in the paper's code. Blocks 1 and 2
have a 1×1 conv + norm shortcut, block 3 (same width) a norm-only shortcut; after each sum another
leaky ReLU. Filters F, 2F, 2F; global average pooling over time; float32 Linear head
(method §2.1). ``resnet1d_128`` is the paper's PTB-XL model, ``resnet1d_32`` its DP model.

Input (B, 12, L) channels-first, e.g. (B, 12, 1000) for 10 s at 100 Hz; any L works.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.heads import float32_head
from models.registry import register_architecture

_GROUPS = 16
_NORM_EPS = 1e-6
_LEAKY_SLOPE = 0.2
_KERNEL_SIZES = (8, 5, 3)


def _conv1d(n_in: int, n_out: int, kernel_size: int) -> nn.Conv1d:
    # Unpadded: ResidualBlock1d pads explicitly (see _same_padding), which keeps the layer a plain
    # nn.Conv1d for Opacus and avoids torch's warning about padding="same" with even kernels.
    conv = nn.Conv1d(n_in, n_out, kernel_size)
    # Keras Conv1D defaults: glorot_uniform kernel, zero bias.
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _same_padding(kernel_size: int) -> tuple[int, int]:
    # Keras/TF 'same': output length = input length, the odd extra pad of an even kernel on the right.
    total = kernel_size - 1
    return total // 2, total - total // 2


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_GROUPS, channels, eps=_NORM_EPS)


class ResidualBlock1d(nn.Module):
    """Three conv-norm layers plus shortcut: (B, n_in, L) -> (B, n_out, L).

    ``relu_after_second`` swaps the second activation for a plain ReLU (block 2 of the paper's net).
    The shortcut is 1×1 conv + norm when ``project`` is set, else norm only (needs n_in == n_out).
    """

    def __init__(self, n_in: int, n_out: int, project: bool, relu_after_second: bool = False):
        super().__init__()
        if not project and n_in != n_out:
            raise ValueError(f"a norm-only shortcut needs n_in == n_out, got {n_in} -> {n_out}")
        self.convs = nn.ModuleList(_conv1d(c_in, n_out, k) for c_in, k in zip((n_in, n_out, n_out), _KERNEL_SIZES, strict=True))
        self.norms = nn.ModuleList(_norm(n_out) for _ in _KERNEL_SIZES)
        self.relu_after_second = relu_after_second
        self.shortcut_conv = _conv1d(n_in, n_out, 1) if project else None
        self.shortcut_norm = _norm(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = norm(conv(F.pad(h, _same_padding(conv.kernel_size[0]))))
            if i == 1 and self.relu_after_second:
                h = F.relu(h)
            elif i < 2:
                h = F.leaky_relu(h, _LEAKY_SLOPE)
        shortcut = self.shortcut_conv(x) if self.shortcut_conv is not None else x
        return F.leaky_relu(h + self.shortcut_norm(shortcut), _LEAKY_SLOPE)


class ResNet1d(nn.Module):
    """Input (B, in_channels, L); output (B, n_outputs) float32 logits (also under autocast: the
    head runs with autocast disabled on float32 pooled features)."""

    def __init__(self, in_channels: int, n_outputs: int, filters: int = 128):
        super().__init__()
        if filters < _GROUPS or filters % _GROUPS:
            raise ValueError(f"resnet1d filters must be a positive multiple of {_GROUPS} (GroupNorm), got {filters}")
        self.blocks = nn.Sequential(
            ResidualBlock1d(in_channels, filters, project=True),
            ResidualBlock1d(filters, 2 * filters, project=True, relu_after_second=True),
            ResidualBlock1d(2 * filters, 2 * filters, project=False),
        )
        self.head = nn.Linear(2 * filters, n_outputs)
        # Keras Dense defaults: glorot_uniform kernel, zero bias.
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.blocks(x).mean(dim=2)  # (B, 2F)
        return float32_head(self.head, pooled)


def _signal_channels(input_shape: tuple[int, ...], name: str) -> int:
    if len(input_shape) != 2:
        raise ValueError(f"{name} expects signal input_shape (C, L), e.g. (12, 1000), got {input_shape}")
    return int(input_shape[0])


@register_architecture("resnet1d", {"signal"}, "1-D ResNet for ECG (param filters=128, multiple of 16)")
def build_resnet1d(input_shape: tuple[int, ...], n_outputs: int, filters: int = 128) -> nn.Module:
    """1-D ResNet with filters F, 2F, 2F for signal input_shape (C, L)."""
    return ResNet1d(_signal_channels(input_shape, "resnet1d"), n_outputs, filters=filters)


@register_architecture("resnet1d_128", {"signal"}, "1-D ResNet, F=128: the paper's PTB-XL model")
def build_resnet1d_128(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """The paper's main PTB-XL model (F = 128)."""
    return ResNet1d(_signal_channels(input_shape, "resnet1d_128"), n_outputs, filters=128)


@register_architecture("resnet1d_32", {"signal"}, "1-D ResNet, F=32: the paper's DP-SGD PTB-XL model")
def build_resnet1d_32(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """The paper's PTB-XL model for DP-SGD (F = 32)."""
    return ResNet1d(_signal_channels(input_shape, "resnet1d_32"), n_outputs, filters=32)
