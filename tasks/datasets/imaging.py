"""Image inputs shared by the image adapters: the image task, PIL decoding, resize, scale to [-1, 1]
(method §1.0), channels-first InputChunks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from tasks.datasets.base import InputChunk, TaskKind, TaskSpec
from tasks.datasets.layout import decode_each
from tasks.datasets.reasons import decode_failure, exception_text


class DecodeError(Exception):
    """An image file could not be turned into model input; the message is the quarantine reason."""


def image_task(kind: TaskKind, labels: Sequence[str], input_shape: tuple[int, int, int], score_transform: str = "softmax_mass") -> TaskSpec:
    """An image task on (C, H, W) inputs, WRN-28-2 by default (the paper's main image model).

    Horizontal flips are label-preserving evaluation views for every image dataset here: skin lesions,
    chest findings (not side-specific labels), fundus disease status and breast density do not change
    when mirrored.
    """
    return TaskSpec(
        kind=kind,
        label_names=tuple(labels),
        input_shape=input_shape,
        modality="image",
        score_transform=score_transform,
        default_architecture="wrn_28_2",
        flip_views_ok=True,
    )


def load_image(path: Path, size: tuple[int, int], mode: Literal["L", "RGB"] = "L", channel0: bool = False) -> np.ndarray:
    """Decode ``path`` and return float32 (H, W, C) in [-1, 1]; ``size`` is (height, width).

    ``mode='L'`` gives C=1, ``'RGB'`` C=3; ``channel0`` keeps only the first channel of a colour file
    (FairVision). Raises DecodeError with the reason; it never names the file, whose name or folders can
    hold the patient id (the quarantine row's source_file + line say which record it is).
    """
    path = Path(path)
    if not path.exists():
        raise DecodeError(decode_failure("image listed but missing"))
    try:
        with Image.open(path) as img:
            img.load()
            if channel0:
                img = img.convert("RGB").getchannel(0)
            elif img.mode != mode:
                img = img.convert(mode)
            img = img.resize((size[1], size[0]))
            arr = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # Some PIL messages carry the path, whose name or folders can hold the raw patient id (design D4).
        raise DecodeError(decode_failure(f"cannot decode image ({exception_text(exc, path)})", path)) from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr / 127.5 - 1.0


def image_mode(path: Path) -> str | None:
    """The PIL mode of an image file from its header only; None if PIL cannot identify it
    (load_image then gives the precise reason)."""
    try:
        with Image.open(path) as img:
            return str(img.mode)
    except Exception:  # any header problem is reported by load_image with its own message
        return None


def decode_image_files(
    positions: Iterable[int],
    paths: Iterable[Path],
    size: tuple[int, int],
    *,
    mode: Literal["L", "RGB"],
    accepted_modes: frozenset[str] | None = None,
    channel0: bool = False,
) -> InputChunk:
    """Decode image files into an InputChunk: x float32 (n_ok, C, H, W) in [-1, 1], channels-first.

    ``size`` is (H, W); ``mode`` 'L' gives C=1, 'RGB' C=3 (``channel0`` keeps the first channel, C=1).
    With ``accepted_modes``, a file whose stored mode is not in it is a failure: PIL would convert it
    (CMYK inverted, 16-bit clipped to white), which yields a plausible-looking but wrong input.
    """
    channels = 1 if (mode == "L" or channel0) else 3

    def load(path: Path) -> np.ndarray:
        path = Path(path)
        stored = image_mode(path) if accepted_modes is not None and path.exists() else None
        if stored is not None and accepted_modes is not None and stored not in accepted_modes:
            raise DecodeError(decode_failure(f"unsupported image mode {stored!r} (expected one of {sorted(accepted_modes)})"))
        return load_image(path, size, mode=mode, channel0=channel0).transpose(2, 0, 1)

    return decode_each(positions, paths, load, (DecodeError,), (channels, *size))
