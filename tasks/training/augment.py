"""Training-time image augmentation: a registry of ``torchvision.transforms.v2`` policies, applied per sample.

A policy is a named builder ``(channels, height, width) -> [v2 transforms]``, registered with
``@register_augmentation``; ``TrainRecipe.augment`` names one. ``augment(x, name, gen)`` applies it to an
image batch (B, C, H, W) so that *every sample draws its own random parameters*, reproducibly: one seed
is drawn from ``gen`` per batch, and the v2 transforms (which draw from torch's global RNG) run with
torch's global CPU generator seeded with it and restored afterwards (as ``torch.random.fork_rng``
would), so the caller's RNG is left as it was. (That generator is the process's: like train_model's
``torch.manual_seed``, this assumes one training thread per process.) Anything that is not a float
image batch (tabular rows, 1-D signals) is returned unchanged and ``gen`` is not advanced.

The result is by definition that of the v2 pipeline run on each sample in turn,
``torch.stack([v2.Compose(transforms)(xi) for xi in x])`` under that seed (``AugmentationPolicy.reference``).
``apply`` computes the same thing batched, about 2x (flip, weak) to 5x (medium, strong) faster
(docs/PERFORMANCE.md; tests/training/test_augment.py checks both agree): it draws every sample's
parameters with the transforms' own ``make_params`` in the loop's order, then applies each transform
once to the whole batch --
deterministic ones (Pad, CenterCrop, Normalize) directly, the flips through ``v2.functional`` on a
per-sample mask, ``RandomCrop`` as one ``v2.functional.pad`` and a per-sample crop gather,
``RandomAffine`` as one ``grid_sample`` with a per-sample matrix (v2's inverse-affine matrix, sampling
grid and fill blending; when a CenterCrop follows, only the crop is sampled), and ``ColorJitter``
(brightness/contrast) with per-sample factors and order. A policy holding any other transform runs
the reference loop (correct, slower).

The built-in policies (shifted and rotated images get reflected borders, not a constant fill):

* ``none``: identity;
* ``flip``: random horizontal flip;
* ``weak``: flip + random translation up to 1/8 of the size (``RandomCrop`` of the reflect-padded image);
* ``medium``: flip + random rotation (±10°) and translation (±1/8) by ``RandomAffine`` on an image
  reflect-padded by 1/4 (enough that no fill reaches the centre crop), then the centre crop;
* ``strong``: ``medium`` + mild brightness/contrast jitter (``ColorJitter(0.2, 0.2)``). v2's colour ops
  treat float images as [0, 1]; image inputs here are in [-1, 1] (tasks/datasets/imaging.py), so the
  jitter runs between two ``Normalize`` that map [-1, 1] to [0, 1] and back (and clamps to that range).

An image with a side of 1 pixel cannot be reflect-padded; it is passed through like non-image data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import nn

from models.torchvision_compat import import_torchvision

# (channels, height, width) -> the v2 transforms of one sample, in order
Builder = Callable[[int, int, int], list[nn.Module]]


def v2() -> ModuleType:
    """``torchvision.transforms.v2``, imported through the project's CPU-torch guard."""
    import_torchvision()
    from torchvision.transforms import v2 as module

    return module


def _v2f() -> ModuleType:
    return v2().functional


@dataclass
class _Plan:
    """A policy built for one image shape: its transforms and the (C, H, W) each one receives."""

    transforms: list[nn.Module]
    in_shapes: list[tuple[int, int, int]]  # and the output shape last
    batched: bool  # every transform has a batched per-sample kernel below


@dataclass(frozen=True)
class AugmentationPolicy:
    name: str
    builder: Builder
    description: str
    _plans: dict[tuple[int, int, int], _Plan] = field(default_factory=dict, compare=False, repr=False)

    def transforms(self, shape: Sequence[int]) -> list[nn.Module]:
        """The v2 transforms of one (C, H, W) sample."""
        return self._plan(shape).transforms

    def _plan(self, shape: Sequence[int]) -> _Plan:
        key = (int(shape[0]), int(shape[1]), int(shape[2]))
        if key not in self._plans:
            transforms = list(self.builder(*key))
            in_shapes, probe = [], torch.zeros(key)
            with _seeded_cpu_rng(0):  # the probe's draws must not touch the caller's RNG
                for t in transforms:
                    in_shapes.append(tuple(probe.shape))
                    probe = t(probe)
                in_shapes.append(tuple(probe.shape))
            batched = all(_kernel_for(t) is not None for t in transforms)
            self._plans[key] = _Plan(transforms, in_shapes, batched)
        return self._plans[key]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augment an image batch, each sample with its own parameters drawn from ``gen`` (one seed per call)."""
        if not is_image_batch(x) or not self.transforms(x.shape[1:]):
            return x
        return self.apply(x, seed_from(gen))

    def apply(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """The batched per-sample augmentation of (B, C, H, W) ``x`` under ``seed``; equals ``reference``."""
        if not is_image_batch(x):
            return x
        plan = self._plan(x.shape[1:])
        if not plan.transforms:
            return x
        if not plan.batched:
            return self.reference(x, seed)
        kernels = [_kernel_for(t) for t in plan.transforms]
        with _seeded_cpu_rng(seed):
            probes = [torch.empty(s) for s in plan.in_shapes[:-1]]  # make_params reads only their shapes
            # sample-major, as the per-sample loop draws: sample 0's parameters for every transform, then sample 1's, ...
            params: list[list[Any]] = [[] for _ in plan.transforms]
            for _ in range(x.shape[0]):
                for t, kernel, probe, out in zip(plan.transforms, kernels, probes, params, strict=True):
                    out.append(kernel[0](t, probe))
        i = 0
        while i < len(plan.transforms):
            t, p = plan.transforms[i], params[i]
            if (window := crop_after_affine(plan, i)) is not None:  # RandomAffine then CenterCrop: warp only the crop
                x = _apply_random_affine(t, x, p, window)
                i += 2
                continue
            x = kernels[i][1](t, x, p)
            i += 1
        return x

    def reference(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """The definition: the v2 pipeline run on each sample in turn under ``seed`` (slow)."""
        if not is_image_batch(x) or not self.transforms(x.shape[1:]):
            return x
        compose = v2().Compose(self.transforms(x.shape[1:]))
        with _seeded_cpu_rng(seed):
            return torch.stack([compose(xi) for xi in x])


_POLICIES: dict[str, AugmentationPolicy] = {}


def register_augmentation(name: str, description: str = "") -> Callable[[Builder], Builder]:
    """Register ``builder(channels, height, width) -> [v2 transforms]`` as augmentation policy ``name``."""

    def decorate(builder: Builder) -> Builder:
        if name in _POLICIES:
            raise ValueError(f"augmentation {name!r} registered twice")
        _POLICIES[name] = AugmentationPolicy(name, builder, description or (builder.__doc__ or "").strip().split("\n")[0])
        return builder

    return decorate


def get_augmentation(name: str) -> AugmentationPolicy:
    try:
        return _POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown augmentation {name!r}; registered: {', '.join(sorted(_POLICIES))}") from None


def list_augmentations() -> list[AugmentationPolicy]:
    return [_POLICIES[k] for k in sorted(_POLICIES)]


def augment(x: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
    """Apply augmentation policy ``policy`` to ``x`` per sample (images only; anything else unchanged)."""
    return get_augmentation(policy)(x, gen)


def is_image_batch(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[0] > 0 and x.is_floating_point() and min(x.shape[2], x.shape[3]) > 1


def seed_from(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))


@contextmanager
def _seeded_cpu_rng(seed: int) -> Iterator[None]:
    """torch's global CPU generator (which v2's transforms draw from) seeded with ``seed``, restored on exit.

    ``fork_rng(devices=[])`` + ``torch.manual_seed`` without their side effects: manual_seed would also
    reseed the CUDA generators, which fork_rng(devices=[]) does not restore.
    """
    generator = torch.random.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


# --- the built-in policies ---------------------------------------------------------------------------


def _eighth(height: int, width: int) -> tuple[int, int]:
    """Padding of 1/8 of each side (at least 1 px, less than the side, as reflect padding needs)."""
    return min(max(1, height // 8), height - 1), min(max(1, width // 8), width - 1)


@register_augmentation("none", "no augmentation")
def _none(channels: int, height: int, width: int) -> list[nn.Module]:
    return []


@register_augmentation("flip", "random horizontal flip")
def _flip(channels: int, height: int, width: int) -> list[nn.Module]:
    return [v2().RandomHorizontalFlip(0.5)]


@register_augmentation("weak", "flip + random translation up to 1/8 (reflect-padded random crop)")
def _weak(channels: int, height: int, width: int) -> list[nn.Module]:
    t = v2()
    ph, pw = _eighth(height, width)
    return [t.RandomHorizontalFlip(0.5), t.RandomCrop((height, width), padding=[pw, ph], padding_mode="reflect")]


@register_augmentation("medium", "flip + random rotation (±10°) and translation (±1/8), reflect borders")
def _medium(channels: int, height: int, width: int) -> list[nn.Module]:
    t = v2()
    ph, pw = _eighth(height, width)
    # A 1/4 reflect border covers a 10° rotation plus a 1/8 shift of the centre crop (0.08 + 0.125 of a side).
    qh, qw = min(2 * ph, height - 1), min(2 * pw, width - 1)
    big_h, big_w = height + 2 * qh, width + 2 * qw
    return [
        t.RandomHorizontalFlip(0.5),
        t.Pad([qw, qh], padding_mode="reflect"),
        # RandomAffine shifts by round(U(-f*side, f*side)) pixels: f*side = the 1/8 padding
        t.RandomAffine(degrees=10.0, translate=(pw / big_w, ph / big_h), interpolation=t.InterpolationMode.BILINEAR),
        t.CenterCrop((height, width)),
    ]


@register_augmentation("strong", "medium + brightness/contrast jitter (±20%) on [-1, 1] images")
def _strong(channels: int, height: int, width: int) -> list[nn.Module]:
    t = v2()
    return [
        *_medium(channels, height, width),
        t.Normalize(mean=[-1.0] * channels, std=[2.0] * channels),  # [-1, 1] -> [0, 1], v2's float image range
        t.ColorJitter(brightness=0.2, contrast=0.2),
        t.Normalize(mean=[0.5] * channels, std=[0.5] * channels),  # and back
    ]


# --- batched per-sample kernels: (draw one sample's params, apply the list of params to the batch) -------

Draw = Callable[[Any, torch.Tensor], Any]
Apply = Callable[[Any, torch.Tensor, list[Any]], torch.Tensor]
_KERNELS: dict[type, tuple[Draw, Apply]] = {}


def _kernel_for(t: nn.Module) -> tuple[Draw, Apply] | None:
    """The batched kernel of transform ``t``, or None where there is none (the policy then loops per sample)."""
    kernel = _kernels().get(type(t))
    if kernel is not None and isinstance(t, v2().ColorJitter) and (t.saturation is not None or t.hue is not None):
        return None  # the batched ColorJitter covers brightness and contrast
    return kernel


def _kernels() -> dict[type, tuple[Draw, Apply]]:
    if not _KERNELS:
        t = v2()
        for cls in (t.Pad, t.CenterCrop, t.Normalize, t.Identity):
            _KERNELS[cls] = (_draw_nothing, _apply_whole_batch)
        _KERNELS[t.RandomHorizontalFlip] = (_draw_coin, _apply_flip)
        _KERNELS[t.RandomVerticalFlip] = (_draw_coin, _apply_flip)
        _KERNELS[t.RandomCrop] = (_draw_make_params, _apply_random_crop)
        _KERNELS[t.RandomAffine] = (_draw_make_params, _apply_random_affine)
        _KERNELS[t.ColorJitter] = (_draw_make_params, _apply_color_jitter)
    return _KERNELS


def transform_fill(t: Any, x: torch.Tensor) -> Any:
    """The fill value v2 uses for a plain tensor (its _get_fill on the transform's fill table)."""
    table = t._fill
    return table[type(x)] if type(x) in table else table.get("others")


def _draw_nothing(t: Any, probe: torch.Tensor) -> None:
    return None


def _apply_whole_batch(t: Any, x: torch.Tensor, params: list[Any]) -> torch.Tensor:
    return t(x)  # deterministic v2 transforms treat leading dims as batch dims


def _draw_coin(t: Any, probe: torch.Tensor) -> bool:
    return bool(torch.rand(1) < t.p)  # as v2's _RandomApplyTransform.forward (its make_params draws nothing)


def _apply_flip(t: Any, x: torch.Tensor, params: list[bool]) -> torch.Tensor:
    mask = torch.tensor(params, device=x.device)
    if not mask.any():
        return x
    f = _v2f()
    flipped = f.horizontal_flip(x) if isinstance(t, v2().RandomHorizontalFlip) else f.vertical_flip(x)
    return torch.where(mask[:, None, None, None], flipped, x)


def crop_after_affine(plan: _Plan, i: int) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of the CenterCrop that follows RandomAffine ``i``, if it only crops."""
    t = v2()
    if i + 1 >= len(plan.transforms) or type(plan.transforms[i]) is not t.RandomAffine or type(plan.transforms[i + 1]) is not t.CenterCrop:
        return None
    (_, h_in, w_in), (_, h, w) = plan.in_shapes[i + 1], plan.in_shapes[i + 2]
    if h > h_in or w > w_in:
        return None  # CenterCrop pads: not a window
    return round((h_in - h) / 2.0), round((w_in - w) / 2.0), h, w  # v2's center-crop anchor


def _draw_make_params(t: Any, probe: torch.Tensor) -> dict[str, Any]:
    return t.make_params([probe])


def _apply_random_crop(t: Any, x: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
    first = params[0]  # padding and crop size depend on the shape only: equal for every sample
    if first["needs_pad"]:
        x = _v2f().pad(x, padding=first["padding"], fill=transform_fill(t, x), padding_mode=t.padding_mode)
    if not first["needs_crop"]:
        return x
    tops = torch.tensor([p["top"] for p in params], device=x.device)
    lefts = torch.tensor([p["left"] for p in params], device=x.device)
    return crop_gather(x, tops, lefts, first["height"], first["width"])


def crop_gather(x: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sample i's window x[i, :, tops[i] : tops[i] + h, lefts[i] : lefts[i] + w] of (B, C, H, W) ``x``, as one gather.

    ``tops``, ``lefts``: (B,) int64 on x's device."""
    b, c, h_in, w_in = x.shape
    corner = tops * w_in + lefts  # flat index of each crop's corner
    window = (torch.arange(h, device=x.device)[:, None] * w_in + torch.arange(w, device=x.device)).view(1, h * w)
    index = (corner[:, None] + window)[:, None, :].expand(b, c, h * w)
    return x.reshape(b, c, h_in * w_in).gather(2, index).view(b, c, h, w)


def _inverse_affine_thetas(params: list[dict[str, Any]], center: tuple[float, float], dtype: torch.dtype) -> torch.Tensor:
    """(B, 2, 3) output->input pixel maps of v2's affine (its _get_inverse_affine_matrix, per sample, float64)."""
    p = torch.tensor(
        [[d["angle"], d["translate"][0], d["translate"][1], d["scale"], d["shear"][0], d["shear"][1]] for d in params],
        dtype=torch.float64,
    )
    return inverse_affine_matrices(p, center).to(dtype)


def inverse_affine_matrices(p: torch.Tensor, center: tuple[float, float]) -> torch.Tensor:
    """(B, 2, 3) output->input pixel maps from (B, 6) float64 rows (angle°, tx, ty, scale, shear_x°, shear_y°), on p's device."""
    rot, tx, ty, scale = torch.deg2rad(p[:, 0]), p[:, 1], p[:, 2], p[:, 3]
    sx, sy = torch.deg2rad(p[:, 4]), torch.deg2rad(p[:, 5])
    cx, cy = center
    # rotate-scale-shear R(a) S(s) SHy(sy) SHx(sx), inverted (its determinant is 1 before scaling)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def _apply_random_affine(
    t: Any, x: torch.Tensor, params: list[dict[str, Any]], window: tuple[int, int, int, int] | None = None
) -> torch.Tensor:
    """v2's affine_image per sample; with ``window`` (top, left, height, width), only that crop of its output."""
    theta = _inverse_affine_thetas(params, affine_center(t, x), x.dtype).to(x.device)
    return affine_warp(t, x, theta, window)


def affine_center(t: Any, x: torch.Tensor) -> tuple[float, float]:
    """RandomAffine ``t``'s centre relative to the image centre of (B, C, H, W) ``x``."""
    h_in, w_in = x.shape[-2:]
    return (0.0, 0.0) if t.center is None else (t.center[0] - w_in * 0.5, t.center[1] - h_in * 0.5)


def affine_warp(t: Any, x: torch.Tensor, theta: torch.Tensor, window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Warp (B, C, H, W) ``x`` by per-sample (B, 2, 3) ``theta`` (x's dtype and device) with RandomAffine ``t``'s
    interpolation and fill; with ``window`` (top, left, height, width), only that crop of the output."""
    b, c, h_in, w_in = x.shape
    top, left, h, w = window if window is not None else (0, 0, h_in, w_in)
    # v2's _affine_grid: output pixel centres about the image centre, mapped by theta, normalised by half the size
    xs = torch.linspace((1.0 - w_in) * 0.5, (w_in - 1.0) * 0.5, steps=w_in, dtype=x.dtype, device=x.device)[left : left + w]
    ys = torch.linspace((1.0 - h_in) * 0.5, (h_in - 1.0) * 0.5, steps=h_in, dtype=x.dtype, device=x.device)[top : top + h]
    base = torch.ones(1, h, w, 3, dtype=x.dtype, device=x.device)
    base[..., 0], base[..., 1] = xs, ys.unsqueeze(-1)
    # (B, 3, 2): x and y columns over half the width and height; Python scalars, not a small tensor uploaded per
    # batch (a pageable host-to-device copy synchronises the host with the GPU, once per batch)
    scaled = torch.stack((theta[:, 0] / (0.5 * w_in), theta[:, 1] / (0.5 * h_in)), dim=2)
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    # v2's _apply_grid_transform: sample with a ones channel that marks where the image (not the fill) lands
    fill = transform_fill(t, x)
    mode = v2().InterpolationMode(t.interpolation).value
    img = x if fill is None else torch.cat([x, torch.ones(b, 1, h_in, w_in, dtype=x.dtype, device=x.device)], dim=1)
    out = nn.functional.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if fill is None:
        return out
    out, mask = out[:, :c], out[:, c:].expand(b, c, h, w)
    values = [float(v) for v in fill] if isinstance(fill, list | tuple) else [float(fill)]
    fill_img = torch.cat([torch.full((1, 1, 1, 1), v, dtype=x.dtype, device=x.device) for v in values], dim=1)  # no host copy
    if mode == "nearest":
        return torch.where(mask < 0.5, fill_img.expand_as(out), out)
    return (out - fill_img).mul_(mask).add_(fill_img)


def _apply_color_jitter(t: Any, x: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
    b = x.shape[0]

    def factors(name: str) -> torch.Tensor | None:
        if params[0][f"{name}_factor"] is None:
            return None
        return torch.tensor([p[f"{name}_factor"] for p in params], dtype=x.dtype, device=x.device).view(b, 1, 1, 1)

    fb, fc = factors("brightness"), factors("contrast")
    b_first = None
    if fb is not None and fc is not None:  # each sample applies the two in its own random order (fn_idx)
        orders = [p["fn_idx"].tolist() for p in params]
        b_first = torch.tensor([o.index(0) < o.index(1) for o in orders], device=x.device)
    return jitter(x, fb, fc, b_first)


def jitter(x: torch.Tensor, fb: torch.Tensor | None, fc: torch.Tensor | None, b_first: torch.Tensor | None) -> torch.Tensor:
    """v2's brightness and contrast adjustment of (B, C, H, W) ``x`` in [0, 1] with per-sample (B, 1, 1, 1) factors
    (None: not applied); where both apply, ``b_first`` (B,) bool says which comes first."""

    def brightness(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:  # v2's adjust_brightness_image
        return img.mul(f).clamp_(0, 1.0)

    def contrast(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:  # v2's adjust_contrast_image (_blend)
        gray = _v2f().rgb_to_grayscale(img) if img.shape[1] == 3 else img
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        return img.mul(f).add_(mean * (1.0 - f)).clamp_(0, 1.0)

    if fb is None and fc is None:
        return x
    if fb is None:
        return contrast(x, fc)
    if fc is None:
        return brightness(x, fb)
    return torch.where(b_first[:, None, None, None], contrast(brightness(x, fb), fc), brightness(contrast(x, fc), fb))
