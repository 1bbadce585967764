"""Membership-inference attacks and per-record statistics (method §4.2-§4.4, design D13, D15).

Pure numpy/scipy/pandas: nothing here knows about Prefect, Dask, DuckDB or torch.

``ATTACKS`` names the aggregate attacks run on held-out target models, with their version strings in
``ATTACK_VERSIONS`` (bump a version when an attack's numbers change, so stored results are not
mixed). The callables do not share one signature:

* ``lira_*``: ``fn(target_scores (T, N, V), ref: LiraReference) -> (T, N)``
* ``rmia_*``: ``fn(target_x, ref_x, ref_in_x, target_z, ref_z, **kw) -> (T, N)``
  (``rmia_offline`` also takes ``a``, tuned with :func:`tune_rmia_a`)
* ``loss``: ``fn(target_scores (T, N, V)) -> (T, N)``

Higher output = more likely a member, for every attack.

``scores`` holds the score transforms (logits -> the score the attacks read), ``auc`` the Mann-Whitney ROC
AUC.

May import: numpy, scipy, pandas and tasks.errors only (tasks.risk builds on this package, not the reverse).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from tasks.attacks.lira import LiraReference, fit_lira_reference, lira_offline, lira_online
from tasks.attacks.loss import loss_attack
from tasks.attacks.record_auc import (
    binormal_auc,
    hanley_mcneil_se,
    record_statistics,
    se_vs_model_count,
)
from tasks.attacks.rmia import rmia_scores, tune_rmia_a

ATTACKS: dict[str, Callable[..., Any]] = {
    "lira_online": lira_online,
    "lira_offline": lira_offline,
    "lira_online_fixed_var": partial(lira_online, fix_variance=True),
    "lira_offline_fixed_var": partial(lira_offline, fix_variance=True),
    "rmia_online": partial(rmia_scores, online=True),
    "rmia_offline": partial(rmia_scores, online=False),
    "loss": loss_attack,
}

ATTACK_VERSIONS: dict[str, str] = {name: "1" for name in ATTACKS}

__all__ = [
    "ATTACKS",
    "ATTACK_VERSIONS",
    "LiraReference",
    "binormal_auc",
    "fit_lira_reference",
    "hanley_mcneil_se",
    "lira_offline",
    "lira_online",
    "loss_attack",
    "record_statistics",
    "rmia_scores",
    "se_vs_model_count",
    "tune_rmia_a",
]
