"""Vision Transformers ViT-B/16 and ViT-L/16 (torchvision) for small medical images.

The paper fine-tunes ImageNet-pretrained ViTs at 64×64 (or 128×128): B/16 = 12 layers, width 768,
MLP 3072, 12 heads; L/16 = 24 layers, 1024, 4096, 16 heads; dropout 0.1; head re-initialised;
position embeddings interpolated bilinearly from the pretrained 14×14 patch grid to the new one
(method §2.1). Here the transformer is torchvision's ``VisionTransformer``, so pretrained
weights are a torchvision state dict given by a local file (nothing can be downloaded); the
paper's vit-keras ``.npz`` checkpoints are not read.

Input (B, C, H, W) in [-1, 1] with C = 1 or 3 and H, W multiples of 16 (non-square grids such as
EMBED's 64×48 → 4×3 patches work: the patch sequence is built here rather than by torchvision's
``forward``, which only accepts square images). Grayscale is repeated to 3 channels.
Output (B, n_outputs) float32 logits.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from models.heads import float32_head
from models.registry import register_architecture
from models.torchvision_compat import import_torchvision

if TYPE_CHECKING:  # torchvision is imported at build time only: it is slow to import and needs a shim
    from torchvision.models.vision_transformer import VisionTransformer

PATCH_SIZE = 16
# torchvision's B/16 and L/16 configurations (same as the paper's vit-keras ones).
_VIT_CONFIGS: dict[str, dict[str, int]] = {
    "vit_b_16": {"num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
    "vit_l_16": {"num_layers": 24, "num_heads": 16, "hidden_dim": 1024, "mlp_dim": 4096},
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def interpolate_position_embedding(pos_embedding: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ViT position embedding to a new patch grid, keeping the class-token entry.

    ``pos_embedding`` is (1, 1 + g·g, D) for a square g×g source grid; the result is
    (1, 1 + grid[0]·grid[1], D). Bilinear with corners aligned, i.e. what the paper's
    ``scipy.ndimage.zoom(order=1)`` does; a no-op when the grid is unchanged.
    """
    if pos_embedding.dim() != 3 or pos_embedding.shape[0] != 1:
        raise ValueError(f"position embedding must be (1, 1 + patches, D), got {tuple(pos_embedding.shape)}")
    n_patches, dim = pos_embedding.shape[1] - 1, pos_embedding.shape[2]
    side = round(n_patches**0.5)
    if side * side != n_patches:
        raise ValueError(f"pretrained position embedding has {n_patches} patches, not a square grid")
    if (side, side) == tuple(grid):
        return pos_embedding
    class_token, patches = pos_embedding[:, :1], pos_embedding[:, 1:]
    patches = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, side, side)
    # Interpolate in float32 (a half-precision checkpoint would otherwise lose precision or fail on CPU).
    resized = F.interpolate(patches.float(), size=grid, mode="bilinear", align_corners=True)
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos_embedding.dtype)
    return torch.cat([class_token, resized], dim=1)


class ImageViT(nn.Module):
    """A torchvision ``VisionTransformer`` body with input adaptation and a float32 head.

    * grayscale (C = 1) is repeated to 3 channels;
    * with ``imagenet_normalize`` the [-1, 1] input is standardised with ImageNet mean/std rescaled
      to that range (mean' = 2·mean − 1, std' = 2·std), which equals ImageNet normalisation of the
      [0, 1] image;
    * the patch sequence is built here for any (H/16)×(W/16) grid, so non-square images work;
    * the head is a Linear on the class token, run in float32 with autocast disabled.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        in_channels: int,
        image_hw: tuple[int, int],
        n_outputs: int,
        imagenet_normalize: bool,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"ViT input must have 1 or 3 channels, got {in_channels}")
        self.backbone = backbone
        self.in_channels = in_channels
        self.image_hw = image_hw
        self.grid = (image_hw[0] // PATCH_SIZE, image_hw[1] // PATCH_SIZE)
        hidden_dim = backbone.hidden_dim
        # torchvision sizes the position embedding for a square image; resize it for this grid.
        backbone.encoder.pos_embedding = nn.Parameter(torch.empty(1, 1 + self.grid[0] * self.grid[1], hidden_dim).normal_(std=0.02))
        # The class token feeds self.head instead; dropping torchvision's head keeps its state-dict
        # keys out of the backbone, so pretrained weights load strictly without them.
        backbone.heads = nn.Identity()
        self.head = nn.Linear(hidden_dim, n_outputs)
        # The paper re-initialises the head as a Keras Dense: glorot_uniform kernel, zero bias.
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.imagenet_normalize = imagenet_normalize
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("input_mean", 2 * mean - 1, persistent=False)
        self.register_buffer("input_std", 2 * std, persistent=False)

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ``VisionTransformer`` state dict (any square patch grid) into the body.

        Every key must match except torchvision's ``heads.*`` (dropped; the head stays freshly
        initialised). The position embedding is interpolated to this model's patch grid.
        """
        body_state = {k: v for k, v in state_dict.items() if not k.startswith("heads.")}
        if "encoder.pos_embedding" not in body_state:
            raise KeyError("pretrained ViT state dict has no 'encoder.pos_embedding'; is it a torchvision ViT?")
        body_state["encoder.pos_embedding"] = interpolate_position_embedding(body_state["encoder.pos_embedding"], self.grid)
        self.backbone.load_state_dict(body_state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, n_outputs) float32 logits."""
        b, c, h, w = x.shape
        if (c, h, w) != (self.in_channels, *self.image_hw):
            raise ValueError(f"ViT built for {(self.in_channels, *self.image_hw)} inputs, got {(c, h, w)}")
        if c == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.imagenet_normalize:
            x = (x - self.input_mean) / self.input_std
        body = self.backbone
        tokens = body.conv_proj(x).flatten(2).transpose(1, 2)  # (B, patches, D)
        tokens = torch.cat([body.class_token.expand(b, -1, -1), tokens], dim=1)
        # torchvision's encoder adds the position embedding, applies dropout, the blocks and the LayerNorm.
        class_token = body.encoder(tokens)[:, 0]  # (B, D)
        return float32_head(self.head, class_token)


def _build_vit(
    name: str,
    input_shape: tuple[int, ...],
    n_outputs: int,
    weights_path: str | os.PathLike[str] | None,
    dropout: float,
    imagenet_normalize: bool | None,
    overrides: dict[str, Any],
) -> ImageViT:
    if len(input_shape) != 3:
        raise ValueError(f"{name} expects image input_shape (C, H, W), got {input_shape}")
    channels, height, width = (int(d) for d in input_shape)
    if height % PATCH_SIZE or width % PATCH_SIZE:
        raise ValueError(f"{name} needs H and W divisible by {PATCH_SIZE}, got {height}×{width}")
    unknown = set(overrides) - set(_VIT_CONFIGS[name])
    if unknown:
        raise TypeError(f"{name} got unknown params {sorted(unknown)}; size overrides are {sorted(_VIT_CONFIGS[name])}")
    config = {**_VIT_CONFIGS[name], **overrides}
    torchvision = import_torchvision()
    # image_size only sizes torchvision's square position embedding, which ImageViT replaces.
    backbone = torchvision.models.vision_transformer.VisionTransformer(
        image_size=max(height, width),
        patch_size=PATCH_SIZE,
        dropout=dropout,
        **config,
    )
    if imagenet_normalize is None:
        # The paper normalises grayscale CXR input with ImageNet statistics and feeds RGB unchanged,
        # matching its vit-keras weights (which expect [-1, 1]). torchvision's ImageNet weights were
        # trained on ImageNet-normalised input, so with them RGB is normalised too.
        imagenet_normalize = channels == 1 or weights_path is not None
    model = ImageViT(backbone, channels, (height, width), n_outputs, imagenet_normalize)
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{weights_path}: expected a torchvision ViT state dict, found {type(state).__name__}")
        model.load_pretrained(state)
    return model


@register_architecture("vit_b_16", {"image"}, "ViT-B/16 (torchvision), weights_path = local ImageNet state dict")
def build_vit_b_16(
    input_shape: tuple[int, ...],
    n_outputs: int,
    weights_path: str | None = None,
    dropout: float = 0.1,
    imagenet_normalize: bool | None = None,
    **size_overrides: int,
) -> nn.Module:
    """ViT-B/16 for (C, H, W) images, H and W multiples of 16.

    ``weights_path``: a torchvision ``vit_b_16`` state-dict file (e.g. ``ViT_B_16_Weights``), loaded
    strictly except for the head, position embeddings interpolated to the new grid.
    ``imagenet_normalize``: None = grayscale, or any input when pretrained weights are loaded.
    ``size_overrides`` (num_layers, num_heads, hidden_dim, mlp_dim) build smaller ViTs, for tests.
    """
    return _build_vit("vit_b_16", input_shape, n_outputs, weights_path, dropout, imagenet_normalize, size_overrides)


@register_architecture("vit_l_16", {"image"}, "ViT-L/16 (torchvision), weights_path = local ImageNet state dict")
def build_vit_l_16(
    input_shape: tuple[int, ...],
    n_outputs: int,
    weights_path: str | None = None,
    dropout: float = 0.1,
    imagenet_normalize: bool | None = None,
    **size_overrides: int,
) -> nn.Module:
    """ViT-L/16; parameters as for :func:`build_vit_b_16`."""
    return _build_vit("vit_l_16", input_shape, n_outputs, weights_path, dropout, imagenet_normalize, size_overrides)
