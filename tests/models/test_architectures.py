"""Every registered architecture builds for its modality, gives float32 logits, and can learn.

Plus the specifics: WRN structure/initialisation and parameter counts against the paper, the
small CNN's filter layout, the 1-D ResNet's GroupNorm constraint, and the ViT's input adaptation,
strict pretrained loading and position-embedding interpolation (checked against scipy's zoom,
which the paper used).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from models import build_model, get_architecture, list_architectures
from models.resnet1d import ResNet1d
from models.small_cnn import SmallCNN
from models.torchvision_compat import import_torchvision
from models.vit import ImageViT, interpolate_position_embedding
from models.wide_resnet import WideResNet

N_OUTPUTS = 3
INPUT_SHAPES: dict[str, list[tuple[int, ...]]] = {
    "tabular": [(64,)],
    "image": [(1, 64, 64), (3, 64, 64), (1, 64, 48)],
    "signal": [(12, 1000)],
}
# Small inputs for the training test (every architecture is size-agnostic); WRN-40-4 (9 M params)
# gets the smallest image so that 20 steps stay around a second.
TRAIN_SHAPES: dict[str, tuple[int, ...]] = {"tabular": (64,), "image": (1, 32, 32), "signal": (12, 128)}
TRAIN_SHAPE_OVERRIDES: dict[str, tuple[int, ...]] = {"wrn_40_4": (1, 16, 16)}
TINY_VIT: dict[str, Any] = {"num_layers": 1, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64, "dropout": 0.0}
# Size parameters that keep tests fast; names not listed are built with their defaults.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "wrn": {"depth": 10, "width": 1},
    "small_cnn": {"width_multiplier": 0.25},
    "resnet1d": {"filters": 16},
    "vit_b_16": TINY_VIT,
    "vit_l_16": TINY_VIT,
    "tabresnet": {"width": 40, "blocks": 2},
}

ARCHITECTURE_NAMES = [entry.name for entry in list_architectures()]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # These models are tiny per call; on a loaded 2-core machine two intra-op threads spin against
    # each other and a test takes 10x longer, one thread does not.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _modality(name: str) -> str:
    modalities = sorted(get_architecture(name).modalities)
    unknown = [m for m in modalities if m not in INPUT_SHAPES]
    assert not unknown, f"{name}: add test input shapes for modality {unknown}"
    return modalities[0]


def _build(name: str, input_shape: tuple[int, ...], n_outputs: int = N_OUTPUTS) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, input_shape, n_outputs, _modality(name), **TINY_PARAMS.get(name, {}))


def _forward_cases() -> list[Any]:
    cases = []
    for name in ARCHITECTURE_NAMES:
        for modality in sorted(get_architecture(name).modalities):
            for shape in INPUT_SHAPES.get(modality, [()]):
                cases.append(pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}"))
    return cases


def test_registry_holds_the_paper_architectures() -> None:
    expected = {"wrn", "wrn_28_2", "wrn_40_4", "small_cnn", "resnet1d", "resnet1d_128", "resnet1d_32"}
    assert expected | {"vit_b_16", "vit_l_16"} <= set(ARCHITECTURE_NAMES)


@pytest.mark.parametrize(("name", "input_shape"), _forward_cases())
def test_forward_gives_float32_logits_also_under_autocast(name: str, input_shape: tuple[int, ...]) -> None:
    model = _build(name, input_shape)
    x = torch.randn(2, *input_shape)
    with torch.no_grad():
        logits = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits_autocast = model(x)
    assert logits.shape == (2, N_OUTPUTS)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert logits_autocast.shape == (2, N_OUTPUTS)
    assert logits_autocast.dtype == torch.float32


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_sgd_reduces_loss_and_overfits_a_fixed_batch(name: str) -> None:
    input_shape = TRAIN_SHAPE_OVERRIDES.get(name, TRAIN_SHAPES[_modality(name)])
    model = _build(name, input_shape)
    model.train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, *input_shape, generator=generator)
    y = torch.tensor([0, 1, 2, 0])

    def loss_now() -> float:
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    initial = loss_now()
    # A small plain gradient step must lower the loss of the batch it was computed on.
    first_step = torch.optim.SGD(model.parameters(), lr=1e-3)
    F.cross_entropy(model(x), y).backward()
    first_step.step()
    assert loss_now() < initial

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(19):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert loss_now() < 0.6 * initial


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_build_model_refuses_a_wrong_modality(name: str) -> None:
    entry = get_architecture(name)
    wrong = next(m for m in ("tabular", "image", "signal") if m not in entry.modalities)
    with pytest.raises(ValueError, match=name):
        build_model(name, INPUT_SHAPES[wrong][0], N_OUTPUTS, wrong)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "paper_params"), [("wrn_28_2", 1.5e6), ("wrn_40_4", 9e6)])
def test_wrn_parameter_counts_match_the_paper(name: str, paper_params: float) -> None:
    model = build_model(name, (3, 32, 32), 10, "image")
    assert abs(_n_params(model) - paper_params) <= 0.15 * paper_params


def test_wrn_structure_follows_objax() -> None:
    model = build_model("wrn_28_2", (1, 64, 48), N_OUTPUTS, "image")
    assert isinstance(model, WideResNet)
    blocks = list(model.blocks)
    assert len(blocks) == 12  # (28 - 4) / 6 = 4 blocks in each of 3 groups
    # A projection exactly where channels or stride change: first block of each group (16 -> 32).
    assert [b.proj is not None for b in blocks] == [True, False, False, False] * 3
    assert [b.conv_1.out_channels for b in blocks[::4]] == [32, 64, 128]
    assert [b.conv_1.stride[0] for b in blocks[::4]] == [1, 2, 2]
    assert all(m.num_groups == 16 for m in model.modules() if isinstance(m, nn.GroupNorm))
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in model.modules())
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    # Width 1: the first block maps 16 -> 16 at stride 1, so its shortcut is the identity.
    narrow = build_model("wrn", (3, 32, 32), N_OUTPUTS, "image", depth=10, width=1)
    assert narrow.blocks[0].proj is None


def test_wrn_conv_init_is_objax_normal() -> None:
    model = build_model("wrn_28_2", (3, 32, 32), N_OUTPUTS, "image")
    weight = model.blocks[-1].conv_2.weight  # 128 -> 128, 3x3: 147k draws
    expected_std = 1 / math.sqrt(0.5 * 3 * 3 * 128)
    assert weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert abs(weight.mean().item()) < 0.05 * expected_std


def test_wrn_batchnorm_variant_uses_relu() -> None:
    model = build_model("wrn", (3, 32, 32), N_OUTPUTS, "image", depth=10, width=1, norm="batch")
    kinds = {type(m) for m in model.modules()}
    assert nn.BatchNorm2d in kinds and nn.ReLU in kinds
    assert nn.GroupNorm not in kinds and nn.LeakyReLU not in kinds


@pytest.mark.parametrize("depth", [12, 27, 4])
def test_wrn_rejects_depths_not_6n_plus_4(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn", (3, 32, 32), N_OUTPUTS, "image", depth=depth, width=1)


def test_small_cnn_filter_layout() -> None:
    model = build_model("small_cnn", (1, 64, 48), N_OUTPUTS, "image")
    assert isinstance(model, SmallCNN)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [32, 32, 64, 64, 64, 128, 128, 128, 256, N_OUTPUTS]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9


def test_resnet1d_widths_and_groupnorm_constraint() -> None:
    model = build_model("resnet1d_32", (12, 1000), 5, "signal")
    assert isinstance(model, ResNet1d)
    assert [block.convs[0].out_channels for block in model.blocks] == [32, 64, 64]
    assert [block.shortcut_conv is not None for block in model.blocks] == [True, True, False]
    with torch.no_grad():  # 'same' padding keeps the time axis, also for the even kernel 8
        assert model.blocks(torch.randn(1, 12, 1000)).shape == (1, 64, 1000)
    assert all(m.num_groups == 16 and m.eps == 1e-6 for m in model.modules() if isinstance(m, nn.GroupNorm))
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model("resnet1d", (12, 1000), 5, "signal", filters=24)


def test_import_torchvision_gives_the_vit_builders_and_is_idempotent() -> None:
    torchvision = import_torchvision()
    assert callable(torchvision.models.vit_b_16)
    assert callable(torchvision.models.vit_l_16)
    assert import_torchvision() is torchvision


def test_full_vit_b_16_at_64px_has_the_paper_size() -> None:
    model = build_model("vit_b_16", (1, 64, 64), N_OUTPUTS, "image")
    assert isinstance(model, ImageViT)
    assert model.backbone.encoder.pos_embedding.shape == (1, 1 + 4 * 4, 768)
    assert abs(_n_params(model) - 86e6) <= 0.05 * 86e6
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, N_OUTPUTS)


def _tiny_torchvision_vit(image_size: int, hidden_dim: int = 32) -> nn.Module:
    torchvision = import_torchvision()
    torch.manual_seed(0)
    vit = torchvision.models.vision_transformer.VisionTransformer(
        image_size=image_size, patch_size=16, num_layers=1, num_heads=2, hidden_dim=hidden_dim, mlp_dim=64,
        num_classes=N_OUTPUTS,
    )  # fmt: skip
    # torchvision zero-initialises its head; give it values so that head transfer would be visible.
    nn.init.normal_(vit.heads.head.weight)
    return vit.eval()


def _save_checkpoint(vit: nn.Module, tmp_path: Path) -> str:
    path = tmp_path / "tiny_vit.pth"
    torch.save(vit.state_dict(), path)
    return str(path)


def _tiny_vit_from(path: str | None, input_shape: tuple[int, ...], **params: Any) -> ImageViT:
    torch.manual_seed(1)
    model = build_model("vit_b_16", input_shape, N_OUTPUTS, "image", weights_path=path, **TINY_VIT, **params)
    assert isinstance(model, ImageViT)
    return model.eval()


def test_vit_at_the_pretrained_grid_reproduces_torchvision(tmp_path: Path) -> None:
    reference = _tiny_torchvision_vit(48)
    model = _tiny_vit_from(_save_checkpoint(reference, tmp_path), (3, 48, 48), imagenet_normalize=False)
    assert torch.equal(model.backbone.encoder.pos_embedding, reference.encoder.pos_embedding)
    # The head is not transferred; copy it to compare the whole forward pass with torchvision's.
    assert not torch.equal(model.head.weight, reference.heads.head.weight)
    model.head.load_state_dict(reference.heads.head.state_dict())
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize(("input_shape", "grid"), [((1, 64, 64), (4, 4)), ((1, 64, 48), (4, 3))])
def test_vit_pretrained_position_embedding_is_interpolated_like_scipy_zoom(
    tmp_path: Path, input_shape: tuple[int, ...], grid: tuple[int, int]
) -> None:
    reference = _tiny_torchvision_vit(48)  # 3x3 patch grid
    model = _tiny_vit_from(_save_checkpoint(reference, tmp_path), input_shape)
    old = reference.encoder.pos_embedding.detach()
    new = model.backbone.encoder.pos_embedding.detach()
    assert new.shape == (1, 1 + grid[0] * grid[1], 32)
    assert torch.equal(new[:, 0], old[:, 0])  # class token kept
    old_grid = old[0, 1:].reshape(3, 3, 32).numpy()
    zoomed = ndimage.zoom(old_grid, (grid[0] / 3, grid[1] / 3, 1), order=1)
    np.testing.assert_allclose(new[0, 1:].reshape(*grid, 32).numpy(), zoomed, rtol=1e-5, atol=1e-6)
    # Every other weight is the checkpoint's.
    for key, value in reference.state_dict().items():
        if key != "encoder.pos_embedding" and not key.startswith("heads."):
            assert torch.equal(model.backbone.state_dict()[key], value), key
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape)).shape == (2, N_OUTPUTS)


def test_position_embedding_interpolation_keeps_the_original_grid_points() -> None:
    torch.manual_seed(0)
    old = torch.randn(1, 1 + 3 * 3, 8)
    assert interpolate_position_embedding(old, (3, 3)) is old
    # 3 -> 5 points per side with aligned corners puts the old points at every other new one.
    new = interpolate_position_embedding(old, (5, 5))
    torch.testing.assert_close(new[0, 1:].reshape(5, 5, 8)[::2, ::2], old[0, 1:].reshape(3, 3, 8))
    with pytest.raises(ValueError, match="square"):
        interpolate_position_embedding(torch.randn(1, 1 + 6, 8), (2, 2))


def test_vit_pretrained_loading_is_strict(tmp_path: Path) -> None:
    reference = _tiny_torchvision_vit(32)
    state = reference.state_dict()
    del state["encoder.ln.weight"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"encoder\.ln\.weight"):
        _tiny_vit_from(str(path), (1, 64, 64))
    wider = _save_checkpoint(_tiny_torchvision_vit(32, hidden_dim=48), tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        _tiny_vit_from(wider, (1, 64, 64))


def test_vit_grayscale_input_is_repeated_and_imagenet_normalised() -> None:
    model = _tiny_vit_from(None, (1, 32, 32))
    assert model.imagenet_normalize
    seen: list[torch.Tensor] = []
    model.backbone.conv_proj.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    pixels = torch.rand(2, 1, 32, 32)  # in [0, 1]
    with torch.no_grad():
        model(pixels * 2 - 1)  # the model's [-1, 1] input range
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (pixels.expand(-1, 3, -1, -1) - mean) / std)


def test_vit_normalisation_default_depends_on_channels_and_weights(tmp_path: Path) -> None:
    assert not _tiny_vit_from(None, (3, 32, 32)).imagenet_normalize  # paper: RGB in [-1, 1] as is
    weights = _save_checkpoint(_tiny_torchvision_vit(32), tmp_path)
    assert _tiny_vit_from(weights, (3, 32, 32)).imagenet_normalize  # torchvision weights expect it


def test_vit_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        build_model("vit_b_16", (1, 64, 40), N_OUTPUTS, "image", **TINY_VIT)
    with pytest.raises(TypeError, match="patch_size"):
        build_model("vit_b_16", (1, 64, 64), N_OUTPUTS, "image", patch_size=8)
    model = _tiny_vit_from(None, (1, 64, 48))
    with pytest.raises(ValueError, match="built for"):
        model(torch.randn(1, 1, 48, 64))


def test_bf16_models_are_scored_under_the_autocast_they_trained_with() -> None:
    from tasks.datasets import get_dataset
    from tasks.training.shadow import score_model

    task = get_dataset("ptb-xl").task
    torch.manual_seed(0)
    model = build_model("resnet1d", task.input_shape, task.n_outputs, task.modality, filters=16).eval()
    x = np.random.default_rng(0).normal(size=(6, *task.input_shape)).astype(np.float32)
    fp32 = score_model(model, x, task, 1, 0)
    bf16 = score_model(model, x, task, 1, 0, precision="bf16")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(torch.from_numpy(x)).float().numpy()
    assert bf16.dtype == np.float32 and bf16.shape == (6, 1, task.n_outputs)
    np.testing.assert_array_equal(bf16[:, 0], expected)
    assert not np.array_equal(bf16, fp32)  # the precision really changes the function scored
