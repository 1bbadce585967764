"""Torch architectures behind a registry.

Every module in this package is imported on first use, so a new architecture is one new file
with an ``@register_architecture`` builder.
"""

import importlib
import pkgutil

from models.registry import build_model, get_architecture, list_architectures, register_architecture

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in {"registry"}:
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["build_model", "get_architecture", "list_architectures", "register_architecture"]
