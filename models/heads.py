"""Output layers shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


def float32_head(head: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Run the output layer in float32 even under autocast (method pitfall 4: float16 heads quantise logits)."""
    with torch.autocast(h.device.type, enabled=False):
        return head(h.float())
