"""Score transforms: per-record membership scores from model logits (design D12).

Every transform maps the logits of one model on N records to one score per record and view::

    fn(logits: (N, V, C) float, labels: (N, C) float 0/1) -> (scores (N, V) float64, flags (N,) object)

* ``logits`` may have any float dtype (float16 heads included) and may contain +-inf / NaN;
  everything is computed in float64.
* ``labels`` are 0/1 floats; a label counts as *positive* when it is >= 0.5 (so a CheXpert-style
  "uncertain" -1 counts as negative; adapters decide how to map those beforehand).
* ``flags`` holds ``''`` for a normal record, else a short reason. Records flagged
  ``'nonfinite_logits'`` (any NaN/inf logit in any view) or ``'nonfinite_labels'`` get NaN scores in
  every view, so that a model either scores a record completely or not at all. The other flags mark a
  fallback rule that still gives a finite score.

Scores are built from log-sum-exp / log-sigmoid terms, never as the log of a probability that may
have under- or overflowed (the paper added ``eps = 1e-45`` inside ``log``, which saturates at about
+-103). For the softmax mass, ``log p_true - log p_wrong`` equals
``logsumexp(z[positive]) - logsumexp(z[negative])`` exactly (the softmax normaliser cancels), which is
what is computed.

Registered transforms: ``softmax_mass``, ``softmax_mass_cxr``, ``binary_logit`` (LiRA scores) and
``rmia_probability``, ``rmia_probability_cxr`` (RMIA probabilities). Use
:func:`probability_transform_for` to find the RMIA probability transform that matches a score transform.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

_REGISTRY: dict[str, Transform] = {}

FLAG_NONFINITE_LOGITS = "nonfinite_logits"
FLAG_NONFINITE_LABELS = "nonfinite_labels"
FLAG_NO_POSITIVE = "no_positive_label"
FLAG_ALL_POSITIVE = "all_labels_positive"
FLAG_NO_FINDING = "no_finding_rule"

# Which RMIA probability transform goes with which LiRA score transform.
_PROBABILITY_FOR: dict[str, str] = {
    "softmax_mass": "rmia_probability",
    "softmax_mass_cxr": "rmia_probability_cxr",
    "binary_logit": "rmia_probability",
}


def register_transform(name: str) -> Callable[[Transform], Transform]:
    """Decorator registering a score transform under ``name``.

    Raises ValueError if a *different* function is already registered under that name.
    """

    def deco(fn: Transform) -> Transform:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"score transform {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def get_transform(name: str) -> Transform:
    """Return the transform registered under ``name`` (KeyError naming the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown score transform {name!r}; known: {sorted(_REGISTRY)}") from None


def list_transforms() -> list[str]:
    """Names of all registered transforms, sorted."""
    return sorted(_REGISTRY)


def probability_transform_for(score_transform: str) -> str:
    """Name of the RMIA probability transform matching LiRA score transform ``score_transform``."""
    try:
        return _PROBABILITY_FOR[score_transform]
    except KeyError:
        raise KeyError(f"no probability transform known for {score_transform!r}") from None


def score_and_probability(score_transform: str, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LiRA scores, their flags and the matching RMIA probabilities (one rule: :func:`probability_transform_for`).

    logits (N, V, C), labels (N, C) -> scores (N, V), probabilities (N, V), flags (N,) of the score transform.
    """
    scores, flags = get_transform(score_transform)(logits, labels)
    probs, _ = get_transform(probability_transform_for(score_transform))(logits, labels)
    return scores, probs, flags


# --------------------------------------------------------------------------------------------------
# helpers


def _prepare(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes and return (z (N,V,C) float64 with bad entries zeroed, y (N,C) bool,
    invalid (N,) bool, flags (N,) object)."""
    z = np.asarray(logits)
    if z.ndim != 3:
        raise ValueError(f"logits must have shape (N, V, C), got {z.shape}")
    z = z.astype(np.float64, copy=True)
    lab = np.asarray(labels, dtype=np.float64)
    if lab.ndim == 1:
        lab = lab[:, None]
    n, _, c = z.shape
    if lab.shape != (n, c):
        raise ValueError(f"labels must have shape (N, C) = {(n, c)}, got {lab.shape}")
    flags = np.full(n, "", dtype=object)
    bad_labels = ~np.isfinite(lab).all(axis=1)
    bad_logits = ~np.isfinite(z).all(axis=(1, 2))
    flags[bad_labels] = FLAG_NONFINITE_LABELS
    flags[bad_logits] = FLAG_NONFINITE_LOGITS  # takes precedence
    invalid = bad_labels | bad_logits
    z[invalid] = 0.0  # placeholders; results are overwritten with NaN
    y = np.where(np.isfinite(lab), lab, 0.0) >= 0.5
    return z, y, invalid, flags


def _masked_logsumexp(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log sum_{c: mask} exp(z[..., c]) over the last axis; -inf where the mask is empty.

    z: (N, V, C) float64 finite; mask: (N, 1, C) or (N, V, C) bool. Returns (N, V).
    """
    zm = np.where(mask, z, -np.inf)
    m = zm.max(axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(zm - m_safe), axis=-1)) + m_safe[..., 0]
    return out


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-x))) computed stably (exact for large |x|)."""
    return -np.logaddexp(0.0, -x)


def _joint_bernoulli_loglik(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum_c log P(label_c = y_c) under independent sigmoids. z (N,V,C), y (N,C) -> (N,V)."""
    signed = np.where(y[:, None, :], z, -z)
    return _log_sigmoid(signed).sum(axis=-1)


def _softmax_mass_parts(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lse_pos, lse_neg, lse_all) each (N,V) and the per-record case code (N,) int:
    0 normal, 1 no positive label, 2 all labels positive."""
    pos = y[:, None, :]
    lse_pos = _masked_logsumexp(z, pos)
    lse_neg = _masked_logsumexp(z, ~pos)
    lse_all = _masked_logsumexp(z, np.ones_like(pos))
    n_pos = y.sum(axis=1)
    case = np.zeros(y.shape[0], dtype=np.int8)
    case[n_pos == 0] = 1
    case[n_pos == y.shape[1]] = 2  # C == 0 impossible (shape check); C==n_pos>0
    return lse_pos, lse_neg, lse_all, case


def _apply_no_finding(y: np.ndarray, flags: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """CXR rule (design D12): a row without any positive label gets label 0 ('No Finding') positive."""
    empty = ~y.any(axis=1)
    y = y.copy()
    y[empty, 0] = True
    flags[empty & ~invalid] = FLAG_NO_FINDING
    return y


def _softmax_mass_score(logits: np.ndarray, labels: np.ndarray, cxr: bool) -> tuple[np.ndarray, np.ndarray]:
    z, y, invalid, flags = _prepare(logits, labels)
    if cxr:
        y = _apply_no_finding(y, flags, invalid)
    lse_pos, lse_neg, _, case = _softmax_mass_parts(z, y)
    with np.errstate(invalid="ignore"):
        scores = lse_pos - lse_neg
    fallback = case != 0
    if fallback.any():
        scores[fallback] = _joint_bernoulli_loglik(z[fallback], y[fallback])
        ok = ~invalid
        flags[(case == 1) & ok] = FLAG_NO_POSITIVE
        flags[(case == 2) & ok] = FLAG_ALL_POSITIVE
    scores[invalid] = np.nan
    return scores, flags


def _softmax_mass_prob(logits: np.ndarray, labels: np.ndarray, cxr: bool) -> tuple[np.ndarray, np.ndarray]:
    z, y, invalid, flags = _prepare(logits, labels)
    if z.shape[2] == 1:
        return _binary_prob(z, y, invalid, flags)
    if cxr:
        y = _apply_no_finding(y, flags, invalid)
    lse_pos, _, lse_all, case = _softmax_mass_parts(z, y)
    with np.errstate(invalid="ignore"):
        probs = np.exp(lse_pos - lse_all)
    fallback = case != 0
    if fallback.any():
        probs[fallback] = np.exp(_joint_bernoulli_loglik(z[fallback], y[fallback]))
        ok = ~invalid
        flags[(case == 1) & ok] = FLAG_NO_POSITIVE
        flags[(case == 2) & ok] = FLAG_ALL_POSITIVE
    probs = np.clip(probs, 0.0, 1.0)  # exp(lse_pos - lse_all) can exceed 1 by an ulp
    probs[invalid] = np.nan
    return probs, flags


def _binary_prob(z: np.ndarray, y: np.ndarray, invalid: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    signed = np.where(y[:, None, :], z, -z)[..., 0]
    probs = np.exp(_log_sigmoid(signed))
    probs[invalid] = np.nan
    return probs, flags


# --------------------------------------------------------------------------------------------------
# registered transforms


@register_transform("softmax_mass")
def softmax_mass(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logit of the softmax mass on the positive labels (the paper's multiclass transform, method §4.1).

    logits (N, V, C), labels (N, C) -> scores (N, V) float64, flags (N,) object.

    score = log p_true - log p_wrong, p_true = sum of softmax(z) over positive labels,
    p_wrong = 1 - p_true; computed as logsumexp(z[pos]) - logsumexp(z[neg]).
    Fallbacks (flagged), because the softmax mass is then constant:

    * no positive label (``'no_positive_label'``) and all labels positive
      (``'all_labels_positive'``, this includes every single-output task): the joint Bernoulli
      log-likelihood ``sum_c log P(y_c | sigmoid(z_c))`` of the label vector.
    """
    return _softmax_mass_score(logits, labels, cxr=False)


@register_transform("softmax_mass_cxr")
def softmax_mass_cxr(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmax_mass` with the chest X-ray rule of design D12.

    A record whose label row is all zero counts as label 0 ('No Finding') positive and is flagged
    ``'no_finding_rule'``. Label index 0 must therefore be 'No Finding' (the paper applied the rule to
    column 0 of TorchXrayVision outputs, where column 0 is Atelectasis; check the label order).
    Shapes as in :func:`softmax_mass`.
    """
    return _softmax_mass_score(logits, labels, cxr=True)


@register_transform("binary_logit")
def binary_logit(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logit of the correct class for single-logit binary tasks.

    logits (N, V, 1), labels (N, 1) or (N,) -> scores (N, V) float64, flags (N,) object.

    score = z if y == 1 else -z, which is exactly log sigma(+-z) - log sigma(-+z), the log-odds of the
    correct class; it is exact and finite for every finite z (z = +-40 gives +-40).

    Difference from the paper (method §4.1): the paper computed
    ``log(p*y + 1e-45) - log(p*(1-y) + 1e-45)`` with p = sigmoid(z), i.e. ``log p + 103.3`` for y = 1
    and ``-log p - 103.3`` for y = 0. That is monotone in the confidence but saturates: every confident
    positive (p -> 1) gets about 103.3, so the IN/OUT score distributions of well-fitted records
    collapse and the Gaussian LiRA / binormal AUC fits see artificial near-zero variances. The
    correct-class logit is the quantity LiRA assumes (Carlini et al. 2022) and does not saturate.
    """
    z, y, invalid, flags = _prepare(logits, labels)
    if z.shape[2] != 1:
        raise ValueError(f"binary_logit needs a single output (C=1), got C={z.shape[2]}")
    scores = np.where(y[:, None, :], z, -z)[..., 0]
    scores[invalid] = np.nan
    return scores, flags


@register_transform("rmia_probability")
def rmia_probability(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probability of the correct outcome, the input of RMIA (method §4.1).

    logits (N, V, C), labels (N, C) -> probabilities (N, V) float64 in [0, 1], flags (N,) object.

    * C > 1: softmax mass on the positive labels, exp(logsumexp(z[pos]) - logsumexp(z)); rows with no
      or only positive labels use the joint Bernoulli probability of the label vector (flagged as in
      :func:`softmax_mass`).
    * C == 1 (binary): sigma(z) if y == 1 else 1 - sigma(z). The paper used sigma(z) regardless of the
      label, i.e. the *wrong*-class probability for negatives; this is the fixed version.
    """
    return _softmax_mass_prob(logits, labels, cxr=False)


@register_transform("rmia_probability_cxr")
def rmia_probability_cxr(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rmia_probability` with the 'No Finding' rule of :func:`softmax_mass_cxr`."""
    return _softmax_mass_prob(logits, labels, cxr=True)
