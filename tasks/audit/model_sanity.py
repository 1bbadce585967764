"""The sanity gate of `medaudit audit-model`: does the audited model do its task on the inputs it got?

A model fed the wrong inputs (other columns, double standardisation) or read through flipped or
mis-mapped logits still yields risks, and they look like "no leakage". Its task metric on its own
records does not: near chance or inverted. So before any verdict the model's task AUROC (binary;
multilabel: mean over labels with both classes) or accuracy (multiclass) is measured on its member and
its non-member records; below the floor the audit stops unless forced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from tasks.datasets.base import TaskSpec
from tasks.errors import MedauditError

CAUSES = (
    "the model was fed other inputs than it was trained on (--input-columns, `medaudit datasets --features`)",
    "inputs standardised twice or not at all (--standardize none for a model that standardises itself)",
    "logits flipped or mis-mapped to classes (--logit-columns; a two-class softmax needs NEG,POS)",
)


class SanityError(MedauditError):
    """The audited model fails its own task on the inputs/logits given: no verdict would mean anything."""


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """Rank AUROC of score (n,) for binary label (n,); NaN without both classes. Ties count half."""
    ok = np.isfinite(score) & np.isfinite(label)
    s, y = score[ok], label[ok] > 0.5
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def task_metric(logits: np.ndarray, labels: np.ndarray, task: TaskSpec, rows: np.ndarray) -> tuple[str, float, float]:
    """(metric name, value, chance level) of logits (N, V, C) against labels (N, C) on ``rows`` (bool (N,)).

    Views are averaged; records without a finite logit are left out."""
    z = np.nanmean(logits, axis=1)[rows]
    y = labels[rows]
    ok = np.isfinite(z).all(axis=1)
    z, y = z[ok], y[ok]
    if task.kind == "multiclass":
        truth = np.argmax(y, axis=1)
        majority = float(np.bincount(truth, minlength=z.shape[1]).max() / max(len(truth), 1))
        return "accuracy", float((np.argmax(z, axis=1) == truth).mean()) if len(z) else float("nan"), majority
    aucs = [auroc(z[:, c], y[:, c]) for c in range(z.shape[1])]
    aucs = [a for a in aucs if np.isfinite(a)]
    return "AUROC", float(np.mean(aucs)) if aucs else float("nan"), 0.5


def baseline_metric(x: np.ndarray, labels: np.ndarray, member: np.ndarray, task: TaskSpec, max_fit: int = 20_000, seed: int = 0) -> float:
    """What the data allows: a logistic regression on medaudit's (standardised) inputs, fitted on the
    model's member records (at most ``max_fit``), scored on its non-members with :func:`task_metric`'s
    metric. x: (N, D) tabular inputs; NaN for image/signal tasks (too costly to be a quick check)."""
    from sklearn.linear_model import LogisticRegression

    if task.modality != "tabular":
        return float("nan")
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mu, sd = x[member].mean(axis=0), x[member].std(axis=0)
    x = (x - mu) / np.where(sd > 0, sd, 1.0)
    fit = np.flatnonzero(member)
    if len(fit) > max_fit:
        fit = np.random.default_rng(seed).choice(fit, max_fit, replace=False)
    out = np.full((len(x), 1, labels.shape[1]), np.nan)
    if task.kind == "multiclass":
        clf = LogisticRegression(max_iter=300).fit(x[fit], np.argmax(labels[fit], axis=1))
        out[:, 0, clf.classes_] = clf.decision_function(x).reshape(len(x), -1)
        out[:, 0][np.isnan(out[:, 0])] = -np.inf  # classes the members lack
    else:
        for c in range(labels.shape[1]):
            y = labels[fit, c]
            ok = np.isfinite(y)
            if len(np.unique(y[ok])) == 2:
                out[:, 0, c] = LogisticRegression(max_iter=300).fit(x[fit][ok], y[ok] > 0.5).decision_function(x)
    return task_metric(out, labels, task, ~member)[1]


def sanity_check(
    logits: np.ndarray,
    labels: np.ndarray,
    member: np.ndarray,
    task: TaskSpec,
    *,
    min_auroc: float,
    force: bool,
    baseline: float = float("nan"),
    max_baseline_gap: float = 0.15,
) -> dict[str, Any]:
    """The model's task metric on members and non-members; raises SanityError when the non-member metric
    is inverted, below the floor (AUROC < ``min_auroc``; accuracy <= the majority-class share) or more than
    ``max_baseline_gap`` below ``baseline`` (:func:`baseline_metric`: wrong inputs typically leave a model
    working, but far worse than the data allows), unless ``force``. Returns the headline keys:
    sanity_metric, sanity_members, sanity_non_members, sanity_floor, sanity_baseline, sanity_passed,
    sanity_forced."""
    name, on_mem, _ = task_metric(logits, labels, task, member)
    _, on_non, chance_non = task_metric(logits, labels, task, ~member)
    floor = min_auroc if name == "AUROC" else chance_non
    above_floor = bool(np.isfinite(on_non) and (on_non >= floor if name == "AUROC" else on_non > floor))
    near_baseline = not (np.isfinite(baseline) and np.isfinite(on_non) and on_non < baseline - max_baseline_gap)
    passed = above_floor and near_baseline
    inverted = bool(np.isfinite(on_non) and on_non < (0.5 if name == "AUROC" else chance_non))
    out = {
        "sanity_metric": name,
        "sanity_members": on_mem,
        "sanity_non_members": on_non,
        "sanity_floor": floor,
        "sanity_baseline": baseline,
        "sanity_passed": passed,
        "sanity_forced": bool(force and not passed),
    }
    if not passed and not force:
        if inverted:
            what = "inverted (below chance)"
        elif not above_floor:
            what = f"below the floor {floor:.3f}"
        else:
            what = (
                f"{baseline - on_non:.3f} below what a logistic regression on medaudit's features of the same members reaches "
                f"({baseline:.3f}; allowed gap {max_baseline_gap:g})"
            )
        raise SanityError(
            f"the audited model's {name} on its own non-member records is {on_non:.3f} (members: {on_mem:.3f}): {what}. "
            "A membership verdict on these scores would mean nothing. Likely causes: "
            + "; ".join(CAUSES)
            + ". Fix the inputs or logits, or audit anyway with --force (the report then says so)."
        )
    return out
