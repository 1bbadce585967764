"""tasks/training/device_augment.py: the augmentation policies with parameters drawn on the device, against v2.

Three checks: (1) given the same parameters, the device kernels give v2's per-sample result exactly
(``AugmentationPolicy.reference``); (2) the parameters are drawn from the distributions of v2's own
``make_params`` (two-sample tests against draws of the real transforms); (3) end to end, augmented batches
of one image agree with tasks.training.augment's in every pixel's mean (z-scores of the difference behave as N(0, 1)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from tasks.training.augment import _kernel_for, _seeded_cpu_rng, get_augmentation, v2
from tasks.training.device_augment import DeviceAugmenter

SHAPE = (1, 16, 16)


def _host_params_as_device(name: str, b: int, seed: int) -> list[dict[str, Any] | None]:
    """v2's make_params draws for b samples (in tasks.training.augment's order under ``seed``), in DeviceAugmenter's format."""
    policy = get_augmentation(name)
    plan = policy._plan(SHAPE)
    t = v2()
    with _seeded_cpu_rng(seed):
        probes = [torch.empty(s) for s in plan.in_shapes[:-1]]
        draws: list[list[Any]] = [[] for _ in plan.transforms]
        for _ in range(b):
            for tr, probe, out in zip(plan.transforms, probes, draws, strict=True):
                out.append(_kernel_for(tr)[0](tr, probe))
    params: list[dict[str, Any] | None] = []
    for tr, d in zip(plan.transforms, draws, strict=True):
        if isinstance(tr, t.RandomHorizontalFlip):
            params.append({"flip": torch.tensor(d)})
        elif isinstance(tr, t.RandomCrop):
            params.append({"fixed": d[0], "top": torch.tensor([p["top"] for p in d]), "left": torch.tensor([p["left"] for p in d])})
        elif isinstance(tr, t.RandomAffine):
            rows = [[p["angle"], *p["translate"], p["scale"], *p["shear"]] for p in d]
            params.append({"p": torch.tensor(rows, dtype=torch.float64)})
        elif isinstance(tr, t.ColorJitter):
            fb = torch.tensor([p["brightness_factor"] for p in d], dtype=torch.float64).view(b, 1, 1, 1)
            fc = torch.tensor([p["contrast_factor"] for p in d], dtype=torch.float64).view(b, 1, 1, 1)
            order = torch.tensor([p["fn_idx"].tolist().index(0) < p["fn_idx"].tolist().index(1) for p in d])
            params.append({"brightness": fb, "contrast": fc, "b_first": order})
        else:
            params.append(None)
    return params


@pytest.mark.parametrize("name", ["flip", "weak", "medium", "strong"])
def test_device_kernels_equal_v2_given_the_same_parameters(name: str) -> None:
    x = torch.rand(24, *SHAPE) * 2 - 1
    aug = DeviceAugmenter(name, SHAPE, "cpu", 0)
    aug.draw = lambda b: _host_params_as_device(name, b, seed=7)  # type: ignore[method-assign]
    torch.testing.assert_close(aug(x), get_augmentation(name).reference(x, 7), atol=2e-5, rtol=1e-5)


def _v2_draws(tr: Any, shape: tuple[int, int, int], n: int) -> list[dict[str, Any]]:
    with _seeded_cpu_rng(1):
        return [tr.make_params([torch.empty(shape)]) for _ in range(n)]


def test_parameters_follow_v2s_distributions() -> None:
    n = 4000
    aug = DeviceAugmenter("strong", SHAPE, "cpu", 3)
    t = v2()
    drawn = aug.draw(n)
    for tr, in_shape, p in zip(aug.plan.transforms, aug.plan.in_shapes[:-1], drawn, strict=True):
        if isinstance(tr, t.RandomHorizontalFlip):
            assert stats.binomtest(int(p["flip"].sum()), n, 0.5).pvalue > 1e-3
        elif isinstance(tr, t.RandomAffine):
            ref = _v2_draws(tr, in_shape, n)
            assert stats.ks_2samp(p["p"][:, 0].numpy(), [d["angle"] for d in ref]).pvalue > 1e-3
            for col, axis in ((1, 0), (2, 1)):  # integer shifts: same support and frequencies
                ours = p["p"][:, col].numpy().astype(int)
                theirs = np.array([d["translate"][axis] for d in ref])
                values = np.union1d(ours, theirs)
                table = np.array([[np.sum(ours == v) for v in values], [np.sum(theirs == v) for v in values]])
                assert stats.chi2_contingency(table).pvalue > 1e-3
            assert torch.all(p["p"][:, 3:4] == 1.0) and torch.all(p["p"][:, 4:] == 0.0)
        elif isinstance(tr, t.ColorJitter):
            ref = _v2_draws(tr, in_shape, n)
            assert stats.ks_2samp(p["brightness"].flatten().numpy(), [d["brightness_factor"] for d in ref]).pvalue > 1e-3
            assert stats.ks_2samp(p["contrast"].flatten().numpy(), [d["contrast_factor"] for d in ref]).pvalue > 1e-3
            b_first = [d["fn_idx"].tolist().index(0) < d["fn_idx"].tolist().index(1) for d in ref]
            table = [[int(p["b_first"].sum()), n - int(p["b_first"].sum())], [sum(b_first), n - sum(b_first)]]
            assert stats.chi2_contingency(table).pvalue > 1e-3
    crop = DeviceAugmenter("weak", SHAPE, "cpu", 4)
    p = crop.draw(n)[1]
    ref = _v2_draws(crop.plan.transforms[1], SHAPE, n)
    for key in ("top", "left"):
        ours, theirs = p[key].numpy(), np.array([d[key] for d in ref])
        values = np.union1d(ours, theirs)
        assert set(values) == set(range(5))  # 16 px, reflect-padded by 2 on each side
        assert stats.chi2_contingency(np.array([[np.sum(ours == v) for v in values], [np.sum(theirs == v) for v in values]])).pvalue > 1e-3


@pytest.mark.parametrize("name", ["weak", "medium", "strong"])
def test_augmented_images_agree_with_the_host_path_in_distribution(name: str) -> None:
    torch.manual_seed(0)
    n = 1500
    x = (torch.rand(1, *SHAPE) * 2 - 1).expand(n, -1, -1, -1).contiguous()
    ours = DeviceAugmenter(name, SHAPE, "cpu", 11)(x)
    theirs = get_augmentation(name).apply(x, 12)
    se = torch.sqrt(ours.var(0) / n + theirs.var(0) / n)
    z = ((ours.mean(0) - theirs.mean(0)) / se)[se > 1e-6]
    # under "same distribution" each z is ~N(0, 1) (neighbouring pixels correlate, so look at the bulk and the tail)
    assert 0.6 < z.abs().mean() < 1.0 and z.abs().max() < 5.0
