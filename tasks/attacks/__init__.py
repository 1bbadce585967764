"""Membership-inference attacks and per-record statistics (method §4.2-§4.4, design D13, D15).

Pure numpy/scipy/pandas: nothing here knows about Prefect, Dask, DuckDB or torch.

``base`` holds the :class:`~tasks.attacks.base.Attack` interface and the registry that both audits iterate
(``register_attack``, ``list_attacks``, ``get_attack``). Every module of this package is imported here, so an
attack in a new module registers itself: adding an attack is one new file. The attacks: LiRA online,
offline and their fixed-variance variants, and the few-reference offline LiRA of the model audit
(``lira``), RMIA online / offline (``rmia``), LOSS (``loss``). Higher score = more likely a member.

``record_auc`` holds the per-record statistics, ``scores`` the score transforms (logits -> the score the
attacks read), ``auc`` the Mann-Whitney ROC AUC.

May import: numpy, scipy, pandas and tasks.errors only (tasks.risk builds on this package, not the reverse).
"""

from __future__ import annotations

import importlib
import pkgutil

from tasks.attacks.base import Attack, AttackContext, AttackInputs, get_attack, list_attacks, register_attack
from tasks.attacks.lira import LiraReference, fit_lira_reference, lira_offline, lira_online
from tasks.attacks.loss import loss_attack
from tasks.attacks.record_auc import (
    binormal_auc,
    hanley_mcneil_se,
    record_statistics,
    se_vs_model_count,
)
from tasks.attacks.rmia import rmia_scores, tune_rmia_a

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Attack",
    "AttackContext",
    "AttackInputs",
    "LiraReference",
    "binormal_auc",
    "fit_lira_reference",
    "get_attack",
    "hanley_mcneil_se",
    "lira_offline",
    "lira_online",
    "list_attacks",
    "loss_attack",
    "record_statistics",
    "register_attack",
    "rmia_scores",
    "se_vs_model_count",
    "tune_rmia_a",
]
