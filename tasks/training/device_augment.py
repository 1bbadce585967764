"""The augmentation policies of tasks/training/augment.py with every sample's parameters drawn on the data's device.

``tasks.training.augment`` draws each sample's parameters on the host with the v2 transforms' own ``make_params``
(one Python call per sample and transform) and is *defined* by the v2 pipeline run sample by sample.
On a GPU that host loop and the per-batch upload of the parameters cost more than the warp itself. Here
the same policy (the same list of v2 transforms, built by the same registered builder) draws the
parameters of the whole batch at once from a ``torch.Generator`` on the data's device, from the same
distributions as v2's ``make_params``:

* RandomHorizontalFlip / RandomVerticalFlip(p): a coin with P(flip) = p per sample;
* RandomCrop: top ~ U{0, ..., padded_h - h}, left ~ U{0, ..., padded_w - w} (v2's ``randint``);
* RandomAffine: angle ~ U(degrees), translation round(U(-f·W, f·W)) pixels (f = its ``translate``,
  W the input side; ``torch.round`` rounds half to even like Python's ``round``), scale ~ U(scale)
  or 1, shear ~ U(shear) or 0;
* ColorJitter (brightness, contrast): factors ~ U(range), brightness first with probability 1/2
  (v2 applies its four functions in the order of ``randperm(4)``);
* Pad, CenterCrop, Normalize, Identity: deterministic.

and applies them with the same batched kernels as ``tasks.training.augment`` (``crop_gather``, ``affine_warp``,
``jitter``), which tests/training/test_augment.py checks equal to v2 given the parameters. So a batch here
is a draw from the same distribution as ``tasks.training.augment``'s (tests/training/test_device_augment.py checks
the parameter distributions against v2's ``make_params`` and the augmented images' statistics against
the per-sample path), but not the same draw: the two paths use different random streams. A policy with a
transform this module does not know (e.g. ColorJitter with saturation or hue) is refused at construction
(``DeviceAugmenter.supports``), and the caller keeps the host path.
"""

from __future__ import annotations

from typing import Any

import torch

from tasks.training.augment import (
    affine_center,
    affine_warp,
    crop_after_affine,
    crop_gather,
    get_augmentation,
    inverse_affine_matrices,
    is_image_batch,
    jitter,
    transform_fill,
    v2,
)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float64, device=device).uniform_(low, high, generator=gen)


class DeviceAugmenter:
    """Augmentation policy ``name`` for (B, C, H, W) batches of one image shape on ``device``, seeded with ``seed``."""

    def __init__(self, name: str, shape: tuple[int, int, int], device: torch.device | str, seed: int):
        self.policy = get_augmentation(name)
        self.shape = tuple(int(s) for s in shape)
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(int(seed))
        self.plan = self.policy._plan(self.shape) if min(self.shape[1:]) > 1 else None
        why = self.blocker()
        if why is not None:
            raise ValueError(f"augmentation {name!r} cannot run batched on the device: {why}")

    def blocker(self) -> str | None:
        """Why this policy cannot draw on the device (None: it can)."""
        if self.plan is None:
            return None
        t = v2()
        known = (
            t.RandomHorizontalFlip,
            t.RandomVerticalFlip,
            t.RandomCrop,
            t.RandomAffine,
            t.ColorJitter,
            t.Pad,
            t.CenterCrop,
            t.Normalize,
            t.Identity,
        )
        for tr in self.plan.transforms:
            if type(tr) not in known:
                return f"no device kernel for {type(tr).__name__}"
            if isinstance(tr, t.ColorJitter) and (tr.saturation is not None or tr.hue is not None):
                return "ColorJitter with saturation or hue"
        return None

    @staticmethod
    def supports(name: str, shape: tuple[int, ...]) -> bool:
        try:
            DeviceAugmenter(name, tuple(shape), "cpu", 0)  # type: ignore[arg-type]
        except ValueError:
            return False
        return True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment (B, C, H, W) ``x`` (on ``device``), every sample with its own parameters; non-images unchanged."""
        if self.plan is None or not self.plan.transforms or not is_image_batch(x):
            return x
        params = self.draw(x.shape[0])
        i = 0
        while i < len(self.plan.transforms):
            tr = self.plan.transforms[i]
            window = crop_after_affine(self.plan, i)
            x = self._apply(tr, x, params[i], window)
            i += 2 if window is not None else 1
        return x

    def draw(self, b: int) -> list[dict[str, Any] | None]:
        """Every transform's parameters for a batch of ``b``: tensors of length b on the device."""
        t, gen, dev = v2(), self.gen, self.device
        out: list[dict[str, Any] | None] = []
        for tr, in_shape in zip(self.plan.transforms, self.plan.in_shapes[:-1], strict=True):
            _, h_in, w_in = in_shape
            if isinstance(tr, t.RandomHorizontalFlip | t.RandomVerticalFlip):
                out.append({"flip": torch.rand(b, generator=gen, device=dev) < tr.p})
            elif isinstance(tr, t.RandomCrop):
                fixed = tr.make_params([torch.empty(in_shape, device="cpu")])  # padding and sizes only (its random draws are discarded)
                left, top, right, bottom = fixed["padding"]
                ph, pw = h_in + top + bottom, w_in + left + right
                out.append(
                    {
                        "fixed": fixed,
                        "top": torch.randint(0, ph - fixed["height"] + 1, (b,), generator=gen, device=dev),
                        "left": torch.randint(0, pw - fixed["width"] + 1, (b,), generator=gen, device=dev),
                    }
                )
            elif isinstance(tr, t.RandomAffine):
                p = torch.zeros(b, 6, dtype=torch.float64, device=dev)
                p[:, 0] = _uniform(b, tr.degrees[0], tr.degrees[1], gen, dev)
                if tr.translate is not None:
                    max_dx, max_dy = float(tr.translate[0] * w_in), float(tr.translate[1] * h_in)
                    p[:, 1] = torch.round(_uniform(b, -max_dx, max_dx, gen, dev))
                    p[:, 2] = torch.round(_uniform(b, -max_dy, max_dy, gen, dev))
                p[:, 3] = _uniform(b, tr.scale[0], tr.scale[1], gen, dev) if tr.scale is not None else 1.0
                if tr.shear is not None:
                    p[:, 4] = _uniform(b, tr.shear[0], tr.shear[1], gen, dev)
                    if len(tr.shear) == 4:
                        p[:, 5] = _uniform(b, tr.shear[2], tr.shear[3], gen, dev)
                out.append({"p": p})
            elif isinstance(tr, t.ColorJitter):
                d: dict[str, Any] = {}
                for name in ("brightness", "contrast"):
                    rng = getattr(tr, name)
                    d[name] = None if rng is None else _uniform(b, rng[0], rng[1], gen, dev).view(b, 1, 1, 1)
                d["b_first"] = torch.rand(b, generator=gen, device=dev) < 0.5
                out.append(d)
            else:
                out.append(None)
        return out

    def _apply(self, tr: Any, x: torch.Tensor, p: dict[str, Any] | None, window: tuple[int, int, int, int] | None) -> torch.Tensor:
        t = v2()
        if p is None:
            return tr(x)  # deterministic v2 transforms treat leading dims as batch dims
        if "flip" in p:
            flipped = x.flip(-1) if isinstance(tr, t.RandomHorizontalFlip) else x.flip(-2)
            return torch.where(p["flip"][:, None, None, None], flipped, x)
        if "top" in p:
            fixed = p["fixed"]
            if fixed["needs_pad"]:
                x = v2().functional.pad(x, padding=fixed["padding"], fill=transform_fill(tr, x), padding_mode=tr.padding_mode)
            if not fixed["needs_crop"]:
                return x
            return crop_gather(x, p["top"], p["left"], fixed["height"], fixed["width"])
        if "p" in p:
            theta = inverse_affine_matrices(p["p"], affine_center(tr, x)).to(x.dtype)
            return affine_warp(tr, x, theta, window)
        fb, fc = p["brightness"], p["contrast"]
        return jitter(x, None if fb is None else fb.to(x.dtype), None if fc is None else fc.to(x.dtype), p["b_first"])
