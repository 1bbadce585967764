"""Architectures for tabular EHR features (MIMIC-IV-ED): MLP and the paper's tabular ResNet."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.heads import float32_head
from models.registry import register_architecture


class MLP(nn.Module):
    """Fully connected net: [Linear -> ReLU] x depth -> Linear (float32 head).

    Input (B, F) float32, output (B, n_outputs) logits.
    """

    def __init__(self, n_features: int, n_outputs: int, width: int = 256, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        d = n_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return float32_head(self.head, self.body(x))


class _TabularBlock(nn.Module):
    def __init__(self, width: int, groups: int, dropout: float):
        super().__init__()
        self.norm = nn.GroupNorm(groups, width)
        self.shortcut = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.shortcut(h) + self.drop(self.fc2(self.drop(torch.relu(self.fc1(h)))))


class TabularResNet(nn.Module):
    """Tabular ResNet of the paper (tabresnet_<width>_<blocks>): stem, residual blocks, GN-ReLU-head.

    Input (B, F), output (B, n_outputs).
    """

    def __init__(self, n_features: int, n_outputs: int, width: int = 300, blocks: int = 6, groups: int = 10, dropout: float = 0.0):
        super().__init__()
        if width % groups:
            raise ValueError(f"tabular ResNet width {width} must be divisible by groups {groups}")
        self.stem = nn.Linear(n_features, width)
        self.blocks = nn.Sequential(*[_TabularBlock(width, groups, dropout) for _ in range(blocks)])
        self.norm = nn.GroupNorm(groups, width)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return float32_head(self.head, torch.relu(self.norm(self.blocks(self.stem(x)))))


def _n_features(input_shape: tuple[int, ...]) -> int:
    return int(math.prod(input_shape))


@register_architecture("mlp", {"tabular"}, "MLP for tabular features (width, depth, dropout)")
def build_mlp(input_shape: tuple[int, ...], n_outputs: int, width: int = 256, depth: int = 2, dropout: float = 0.0) -> nn.Module:
    return MLP(_n_features(input_shape), n_outputs, width=width, depth=depth, dropout=dropout)


@register_architecture("tabresnet", {"tabular"}, "Tabular ResNet (paper: width 300, 6 blocks)")
def build_tabresnet(
    input_shape: tuple[int, ...], n_outputs: int, width: int = 300, blocks: int = 6, groups: int = 10, dropout: float = 0.0
) -> nn.Module:
    return TabularResNet(_n_features(input_shape), n_outputs, width=width, blocks=blocks, groups=groups, dropout=dropout)
