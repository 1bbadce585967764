"""Training augmentation (tasks/training/augment.py): torchvision v2 policies applied per sample, reproducibly.

Every policy keeps shape and dtype, is a function of the seed (equal seeds equal, different seeds
different), gives each sample of a batch its own parameters, leaves non-image inputs and the global
torch RNG alone, and its batched implementation equals the definition -- the v2 pipeline run on each
sample in turn. Plus the wiring: train_model and eval_views use it deterministically.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tasks.config import TrainRecipe
from tasks.datasets.base import TaskSpec
from tasks.training.augment import AugmentationPolicy, augment, get_augmentation, list_augmentations, register_augmentation, v2
from tasks.training.shadow import eval_views, train_model

POLICIES = ["none", "flip", "weak", "medium", "strong"]
RANDOM_POLICIES = [p for p in POLICIES if p != "none"]
SHAPES = [(1, 32, 32), (3, 32, 32), (1, 64, 48)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors on a shared 2-core machine
    yield
    torch.set_num_threads(previous)


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Images in [-1, 1], as the image adapters give them."""
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_holds_the_recipe_policies() -> None:
    names = [p.name for p in list_augmentations()]
    assert names == sorted(POLICIES)
    assert set(typing.get_args(TrainRecipe.model_fields["augment"].annotation)) == set(names)
    assert all(p.description for p in list_augmentations())
    with pytest.raises(KeyError, match="unknown augmentation 'heavy'; registered: flip, medium, none, strong, weak"):
        get_augmentation("heavy")
    with pytest.raises(ValueError, match="registered twice"):
        register_augmentation("weak")(lambda c, h, w: [])


def test_policies_are_built_from_v2_transforms() -> None:
    t = v2()
    kinds = {name: [type(m) for m in get_augmentation(name).transforms((1, 32, 32))] for name in POLICIES}
    assert kinds["none"] == []
    assert kinds["flip"] == [t.RandomHorizontalFlip]
    assert kinds["weak"] == [t.RandomHorizontalFlip, t.RandomCrop]
    assert kinds["medium"] == [t.RandomHorizontalFlip, t.Pad, t.RandomAffine, t.CenterCrop]
    assert kinds["strong"] == [*kinds["medium"], t.Normalize, t.ColorJitter, t.Normalize]
    crop = get_augmentation("weak").transforms((1, 64, 48))[1]
    assert crop.padding == [6, 6, 8, 8] and crop.padding_mode == "reflect"  # left, right, top, bottom: 1/8 of each side


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policy", POLICIES)
def test_shape_dtype_and_determinism(policy: str, shape: tuple[int, ...]) -> None:
    x = _images(16, shape)
    a = augment(x, policy, _gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, augment(x, policy, _gen(1)))
    if policy == "none":
        assert a is x
    else:
        assert not torch.equal(a, augment(x, policy, _gen(2)))
        assert not torch.equal(a, x)


@pytest.mark.parametrize("policy", POLICIES)
def test_batched_equals_the_v2_pipeline_per_sample(policy: str) -> None:
    pol = get_augmentation(policy)
    for shape in [*SHAPES, (3, 9, 7)]:
        x = _images(24, shape, seed=3)
        for seed in (0, 11):
            torch.testing.assert_close(pol.apply(x, seed), pol.reference(x, seed), rtol=0, atol=1e-5)


@pytest.mark.parametrize("policy", RANDOM_POLICIES)
def test_every_sample_draws_its_own_parameters(policy: str) -> None:
    x = _images(1, (1, 32, 32)).expand(64, 1, 32, 32).contiguous()  # 64 copies of one image
    out = augment(x, policy, _gen(0))
    distinct = torch.unique(out.flatten(1), dim=0).shape[0]
    # flip: two outcomes; the others: a flip, a shift and (medium, strong) a continuous angle per sample
    assert (distinct == 2) if policy == "flip" else (distinct > 32)


def test_flip_gives_each_sample_itself_or_its_mirror_image() -> None:
    x = _images(64, (3, 16, 16))
    out = augment(x, "flip", _gen(5))
    same = (out == x).flatten(1).all(dim=1)
    mirrored = (out == x.flip(-1)).flatten(1).all(dim=1)
    assert bool((same | mirrored).all())
    assert 10 < int(mirrored.sum()) < 54  # about half, each sample on its own


def test_weak_shifts_by_at_most_an_eighth_with_reflected_borders() -> None:
    x = _images(32, (1, 16, 24))  # 1/8: 2 rows, 3 columns
    out = augment(x, "weak", _gen(2))
    padded = torch.nn.functional.pad(torch.cat([x, x.flip(-1)], dim=1), (3, 3, 2, 2), mode="reflect")
    offsets = set()
    for i in range(len(x)):
        found = [
            (dy, dx)
            for k in (0, 1)
            for dy in range(5)
            for dx in range(7)
            if torch.equal(out[i, 0], padded[i, k, dy : dy + 16, dx : dx + 24])
        ]
        assert found, f"sample {i} is not a flip + shift of at most 2 rows and 3 columns of its input"
        offsets.update(found)
    assert len(offsets) > 10  # shifts differ between samples


@pytest.mark.parametrize("policy", ["weak", "medium"])
def test_no_fill_reaches_the_output(policy: str) -> None:
    # reflect borders: a constant image stays constant under shifts and rotations (fill would be 0)
    x = torch.full((64, 1, 32, 32), 0.7)
    torch.testing.assert_close(augment(x, policy, _gen(0)), x, rtol=0, atol=1e-5)


def test_strong_jitters_brightness_and_contrast_within_the_image_range() -> None:
    x = _images(64, (3, 32, 32))
    out = augment(x, "strong", _gen(0))
    assert float(out.min()) >= -1.0 - 1e-6 and float(out.max()) <= 1.0 + 1e-6
    spread = out.flatten(1).std(dim=1) / get_augmentation("medium").apply(x, 0).flatten(1).std(dim=1)
    assert float(spread.std()) > 0.01  # per-sample contrast factors


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", [(8, 20), (8, 12, 100), (8, 1, 1, 30)])
def test_non_image_inputs_pass_through(policy: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    gen = _gen(0)
    state = gen.get_state()
    assert augment(x, policy, gen) is x
    assert torch.equal(gen.get_state(), state)  # the training generator is not advanced either


@pytest.mark.parametrize("policy", POLICIES)
def test_global_rng_is_left_alone(policy: str) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    augment(_images(8, (1, 16, 16)), policy, _gen(0))
    get_augmentation(policy).reference(_images(4, (3, 12, 10)), 0)  # building a new shape's plan too
    assert torch.equal(torch.get_rng_state(), before)


def test_the_training_generator_advances_once_per_batch() -> None:
    x = _images(8, (1, 16, 16))
    gen = _gen(0)
    first = augment(x, "weak", gen)
    second = augment(x, "weak", gen)
    assert not torch.equal(first, second)  # the next batch draws new parameters


def test_transforms_without_a_batched_kernel_fall_back_to_the_loop() -> None:
    t = v2()
    pol = AugmentationPolicy("rotate", lambda c, h, w: [t.RandomRotation(15), t.ColorJitter(saturation=0.3)], "test only")
    assert not pol._plan((3, 16, 16)).batched
    x = _images(6, (3, 16, 16))
    out = pol(x, _gen(0))
    assert torch.equal(out, pol(x, _gen(0))) and not torch.equal(out, x)
    torch.testing.assert_close(pol.apply(x, 4), pol.reference(x, 4), rtol=0, atol=0)


def test_eval_views_are_deterministic_identity_flip_then_weak() -> None:
    x = _images(16, (1, 16, 16))
    task = SimpleNamespace(flip_views_ok=True)
    before = torch.get_rng_state()
    views = eval_views(x, 4, task, seed=7)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))
    assert not torch.equal(views[2], views[3])
    for a, b in zip(views, eval_views(x, 4, task, seed=7), strict=True):  # type: ignore[arg-type]
        assert torch.equal(a, b)
    assert not torch.equal(views[2], eval_views(x, 3, task, seed=8)[2])  # type: ignore[arg-type]
    assert len(eval_views(x, 3, SimpleNamespace(flip_views_ok=False), seed=7)) == 3  # type: ignore[arg-type]


def test_train_model_augments_deterministically_per_seed() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((32, 1, 16, 16)) * 2 - 1).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 32)]
    task = TaskSpec("multiclass", ("a", "b"), (1, 16, 16), "image", "softmax_mass", "small_cnn", flip_views_ok=True)

    def weights(augment_policy: str, seed: int) -> torch.Tensor:
        recipe = TrainRecipe(epochs=1, batch_size=16, augment=augment_policy)
        model, _ = train_model(x, y, task, "small_cnn", {"width_multiplier": 0.125}, recipe, seed)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    medium = weights("medium", 3)
    assert torch.equal(medium, weights("medium", 3))
    assert not torch.equal(medium, weights("none", 3))
    assert not torch.equal(medium, weights("strong", 3))


def test_batched_training_refuses_to_skip_image_augmentation() -> None:
    from tasks.training.batched import train_models_batched

    task = TaskSpec("multiclass", ("a", "b"), (1, 8, 8), "image", "softmax_mass", "small_cnn")
    x, y = np.zeros((8, 1, 8, 8), np.float32), np.eye(2, dtype=np.float32)[[0, 1] * 4]
    with pytest.raises(ValueError, match="not augmented in the batched path"):
        train_models_batched(x, y, [np.arange(8)] * 2, task, "small_cnn", {}, TrainRecipe(augment="weak"), [0, 1])
