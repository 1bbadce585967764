"""Image decoding shared by the image adapters: PIL, resize, scale to [-1, 1] (paper-method.md §1.0)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError


class DecodeError(Exception):
    """An image file could not be turned into model input; the message is the quarantine reason."""


def load_image(path: Path, size: tuple[int, int], mode: Literal["L", "RGB"] = "L", channel0: bool = False) -> np.ndarray:
    """Decode ``path`` and return float32 (H, W, C) in [-1, 1]; ``size`` is (height, width).

    ``mode='L'`` gives C=1, ``'RGB'`` C=3; ``channel0`` keeps only the first channel of a colour file
    (FairVision). Raises DecodeError with a reason naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DecodeError(f"{path.name}: image file listed but missing")
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
        raise DecodeError(f"{path.name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr / 127.5 - 1.0
