"""Import torchvision on a CPU-only torch whose torchvision wheel is a CUDA build.

On this stack (torch 2.13.0+cpu, torchvision 0.28.0+cu130) torchvision's compiled ``_C`` extension
does not load, and ``import torchvision`` then fails with ``operator torchvision::nms does not
exist``: its fake-tensor registrations expect the operator schemas that ``_C`` would have defined.
Defining those two schemas (no kernels) lets the pure-Python parts load. ``torchvision.models`` and
``torchvision.transforms.v2`` then work; ``torchvision.ops`` kernels and ``torchvision.io``
decoding do not, so images are decoded with PIL (design D22). Where the real extension loads, the
first import succeeds and nothing here is touched.

Every module that needs torchvision should import it through :func:`import_torchvision`.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

# Schemas of the operators torchvision's Python code registers fakes for at import time, as its C++
# extension would have defined them.
_MISSING_OP_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# The Library object owns the schema registrations: if it were garbage-collected the schemas would
# be deregistered, so it lives for the whole process.
_shim_library: torch.library.Library | None = None


def _op_is_defined(name: str) -> bool:
    return hasattr(torch.ops.torchvision, name)


def _define_missing_op_schemas() -> None:
    global _shim_library
    for name, schema in _MISSING_OP_SCHEMAS.items():
        # Skip schemas that exist already (an earlier call, or another shim), so this is idempotent.
        if _op_is_defined(name):
            continue
        if _shim_library is None:
            _shim_library = torch.library.Library("torchvision", "DEF")
        _shim_library.define(schema)


def _forget_partial_import() -> None:
    # A failed import leaves the submodules that did finish in sys.modules; drop them so the retry
    # runs torchvision/__init__ from scratch and sets every submodule attribute on the package.
    for module_name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module_name]


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, defining missing operator schemas first if needed.

    Raises the original error for any import failure other than the missing-``nms`` one.
    """
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise
        _define_missing_op_schemas()
        _forget_partial_import()
        import torchvision
    return torchvision
