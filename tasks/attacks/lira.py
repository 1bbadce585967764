"""Likelihood-ratio attack, LiRA (Carlini et al. 2022; method §4.2, design D15).

Reference models of the pool give, per record and view, a Gaussian for the IN scores and one for
the OUT scores; a target model's score is then judged by a likelihood ratio (online) or by how far
it lies above the OUT Gaussian (offline).

Differences from the paper's code, on purpose:

* Records are not truncated to the smallest IN/OUT count over all records: each record uses all its
  reference models with finite scores (a model counts for a record only if all its views are finite).
* Zero / tiny stds are floored at ``SD_FLOOR_ABS + SD_FLOOR_REL * |mu|`` (1e-6 + 1e-6 |mu|) instead of
  adding 1e-12 / 1e-30, so finite scores always give finite outputs.
* Offline LiRA is the one-sided test ``log Phi((s - mu_out) / sd_out)``, view-averaged, higher =
  member. The paper returned the un-negated, per-view log density, which cannot be used as a score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import log_ndtr
from scipy.stats import t as student_t

from tasks.attacks.base import Attack, AttackInputs, register_attack

SD_FLOOR_ABS = 1e-6
SD_FLOOR_REL = 1e-6
PER_RECORD_MIN_OUT = 16  # few-reference "auto": per-record stds once the median OUT count reaches this

_BLOCK_ELEMENTS = 4_000_000


@dataclass
class LiraReference:
    """Per-record Gaussians fitted on reference models.

    mu_in, mu_out: (N, V) medians of the IN / OUT reference scores (NaN without such models).
    sd_in, sd_out: (N, V) stds (ddof 0, about the mean) of the same scores.
    sd_in_global, sd_out_global: fixed-variance variants: the median, over records and views with at
        least 2 models on that side, of the per-record stds (robust to a few degenerate records; the
        paper's ``fix_variance`` took one global std per side).
    n_in, n_out: (N,) int64 number of reference models per side with finite scores in every view.
    """

    mu_in: np.ndarray
    mu_out: np.ndarray
    sd_in: np.ndarray
    sd_out: np.ndarray
    sd_in_global: float
    sd_out_global: float
    n_in: np.ndarray
    n_out: np.ndarray


def _masked_median_std(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and std (ddof 0) over the model axis of x (n, V, M) restricted to w (n, M).

    Returns median (n, V), std (n, V), count (n,). NaN where the count is 0.
    """
    n, v, _ = x.shape
    cnt = w.sum(axis=1)
    wv = w[:, None, :]
    srt = np.sort(np.where(wv, x, np.nan), axis=2)  # NaN last
    lo = np.broadcast_to(np.clip((cnt - 1) // 2, 0, None)[:, None, None], (n, v, 1))
    hi = np.broadcast_to(np.clip(cnt // 2, 0, None)[:, None, None], (n, v, 1))
    med = 0.5 * (np.take_along_axis(srt, lo, axis=2) + np.take_along_axis(srt, hi, axis=2))[:, :, 0]
    x0 = np.where(wv, x, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = x0.sum(axis=2) / cnt[:, None]
        dev = np.where(wv, x0 - mean[:, :, None], 0.0)
        sd = np.sqrt(np.einsum("nvm,nvm->nv", dev, dev) / cnt[:, None])
    empty = cnt == 0
    med[empty] = np.nan
    sd[empty] = np.nan
    return med, sd, cnt


def fit_lira_reference(ref_scores: np.ndarray, ref_in: np.ndarray) -> LiraReference:
    """Fit the per-record IN / OUT Gaussians.

    ref_scores: (M, N, V) float (NaN = not scored; (M, N) means V = 1); ref_in: (M, N) bool.
    Returns a :class:`LiraReference` with (N, V) arrays.
    """
    s = np.asarray(ref_scores)
    if s.ndim == 2:
        s = s[:, :, None]
    if s.ndim != 3:
        raise ValueError(f"ref_scores must have shape (M, N, V), got {s.shape}")
    mask = np.asarray(ref_in, dtype=bool)
    m, n, v = s.shape
    if mask.shape != (m, n):
        raise ValueError(f"ref_in must have shape {(m, n)}, got {mask.shape}")
    out = {k: np.full((n, v), np.nan) for k in ("mu_in", "mu_out", "sd_in", "sd_out")}
    n_in = np.zeros(n, dtype=np.int64)
    n_out = np.zeros(n, dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // max(1, m * v))
    for a in range(0, n, block):
        x = np.ascontiguousarray(s[:, a : a + block].transpose(1, 2, 0), dtype=np.float64)  # (n, V, M)
        inn = mask[:, a : a + block].T
        valid = np.isfinite(x).all(axis=1)
        sl = slice(a, a + x.shape[0])
        out["mu_in"][sl], out["sd_in"][sl], n_in[sl] = _masked_median_std(x, valid & inn)
        out["mu_out"][sl], out["sd_out"][sl], n_out[sl] = _masked_median_std(x, valid & ~inn)

    def _global(sd: np.ndarray, cnt: np.ndarray) -> float:
        vals = sd[cnt >= 2]
        vals = vals[np.isfinite(vals)]
        return float(np.median(vals)) if vals.size else float("nan")

    return LiraReference(
        mu_in=out["mu_in"],
        mu_out=out["mu_out"],
        sd_in=out["sd_in"],
        sd_out=out["sd_out"],
        sd_in_global=_global(out["sd_in"], n_in),
        sd_out_global=_global(out["sd_out"], n_out),
        n_in=n_in,
        n_out=n_out,
    )


def _floor_sd(sd: np.ndarray | float, mu: np.ndarray) -> np.ndarray:
    """max(sd, 1e-6 + 1e-6 |mu|); NaN sd stays NaN."""
    floor = SD_FLOOR_ABS + SD_FLOOR_REL * np.abs(mu)
    sd = np.asarray(sd, dtype=np.float64)
    return np.where(sd < floor, floor, sd)


def _target_3d(target_scores: np.ndarray, ref: LiraReference) -> np.ndarray:
    s = np.asarray(target_scores, dtype=np.float64)
    if s.ndim == 2:
        s = s[:, :, None]
    if s.ndim != 3 or s.shape[1:] != ref.mu_out.shape:
        raise ValueError(f"target_scores must have shape (T, {ref.mu_out.shape}), got {s.shape}")
    return s


def lira_online(target_scores: np.ndarray, ref: LiraReference, fix_variance: bool = False) -> np.ndarray:
    """Online LiRA: ``log N(s; mu_in, sd_in) - log N(s; mu_out, sd_out)`` averaged over views.

    target_scores: (T, N, V) (or (T, N) for V = 1) -> (T, N) float64; higher = member.
    ``fix_variance`` uses ``ref.sd_in_global`` / ``ref.sd_out_global`` for every record.
    Stds are floored (module docstring), so finite scores give finite values whenever the record has
    IN and OUT reference models; a NaN score in any view, or a record without IN or OUT references,
    gives NaN.
    """
    s = _target_3d(target_scores, ref)
    if fix_variance:
        sd_in = _floor_sd(ref.sd_in_global, ref.mu_in)
        sd_out = _floor_sd(ref.sd_out_global, ref.mu_out)
    else:
        sd_in = _floor_sd(ref.sd_in, ref.mu_in)
        sd_out = _floor_sd(ref.sd_out, ref.mu_out)
    z_in = (s - ref.mu_in) / sd_in
    z_out = (s - ref.mu_out) / sd_out
    llr = -0.5 * (z_in * z_in - z_out * z_out) - np.log(sd_in) + np.log(sd_out)
    return llr.mean(axis=2)


def lira_offline(target_scores: np.ndarray, ref: LiraReference, fix_variance: bool = False) -> np.ndarray:
    """Offline LiRA: one-sided test against the OUT Gaussian, ``log Phi((s - mu_out) / sd_out)``.

    target_scores: (T, N, V) (or (T, N)) -> (T, N) float64, averaged over views; higher = member
    (a score far above what OUT models give). Uses ``scipy.special.log_ndtr``, exact in both tails.
    NaN score or no OUT references -> NaN.
    """
    s = _target_3d(target_scores, ref)
    sd_out = _floor_sd(ref.sd_out_global if fix_variance else ref.sd_out, ref.mu_out)
    return np.asarray(log_ndtr((s - ref.mu_out) / sd_out)).mean(axis=2)


@dataclass
class FewReferenceRisk:
    """Per-record results of one audited model against few reference models.

    lira_offline: (N,) log Phi score (higher = member); risk: (N,) exp of it, in (0, 1);
    n_out: (N,) OUT reference models per record; variance: "per_record" or "fixed" as used.
    """

    lira_offline: np.ndarray
    risk: np.ndarray
    n_out: np.ndarray
    variance: str
    extra: dict[str, Any] = field(default_factory=dict)


def few_reference_lira(target_scores: np.ndarray, ref_scores: np.ndarray, ref_in: np.ndarray, variance: str = "auto") -> FewReferenceRisk:
    """Offline LiRA of one model against few reference models (the model audit's record risk).

    target_scores: (N, V) or (N,); ref_scores: (M, N, V) or (M, N); ref_in: (M, N) bool.
    ``variance``: "per_record", "fixed" (one pooled OUT variance, better with few references) or "auto".

    With few references the plain offline LiRA z-score is over-dispersed: the OUT std is estimated
    from a handful of models (ddof 0 underestimates it) and the OUT median is itself noisy. So the
    variance is the unbiased (ddof 1) one, pooled over records for "fixed", and widened by the
    sampling variance of the median, ``sd * sqrt(1 + pi / (2 n_out))``, and a per-record z is read
    against Student's t with n_out - 1 degrees of freedom: a non-member's risk is then
    close to uniform even with 4 OUT models per record (tested by simulation).
    Records without OUT references (or with only one, per_record) or with a non-finite score get NaN.
    """
    t = np.asarray(target_scores, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    ref = fit_lira_reference(ref_scores, ref_in)
    if variance == "auto":
        med = float(np.median(ref.n_out)) if ref.n_out.size else 0.0
        variance = "per_record" if med >= PER_RECORD_MIN_OUT else "fixed"
    if variance not in {"per_record", "fixed"}:
        raise ValueError(f"variance must be auto, per_record or fixed, got {variance!r}")
    n = ref.n_out.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        var1 = np.where(n >= 2, ref.sd_out**2 * n / (n - 1), np.nan)  # (N, V) unbiased
        if variance == "fixed":
            var1 = np.broadcast_to(np.nanmean(var1, axis=0, keepdims=True), var1.shape)
        sd = np.sqrt(var1 * (1.0 + np.pi / (2.0 * n)))
        sd = np.maximum(sd, SD_FLOOR_ABS + SD_FLOOR_REL * np.abs(ref.mu_out))
        z = (t - ref.mu_out) / sd
        # a per-record std from n models makes z Student-t with n - 1 degrees of freedom
        score = (log_ndtr(z) if variance == "fixed" else student_t.logcdf(z, np.maximum(n - 1, 1))).mean(axis=1)
    score[(ref.n_out == 0) | ~np.isfinite(score)] = np.nan
    return FewReferenceRisk(lira_offline=score, risk=np.exp(score), n_out=ref.n_out, variance=variance)


class _PoolLira(Attack):
    """LiRA on a pool's held-out targets: one reference fit per block, shared by the four variants.

    Fixed variance uses one pair of global stds for the whole pool, taken from the first block.
    """

    audits = ("pool",)
    llr = True
    online: bool
    fix_variance: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.global_sd: tuple[float, float] | None = None

    def score(self, inputs: AttackInputs) -> np.ndarray:
        reference = inputs.shared("lira_reference", lambda: fit_lira_reference(inputs.ref_scores, inputs.ref_in))
        if self.global_sd is None:
            self.global_sd = (reference.sd_in_global, reference.sd_out_global)
        reference = dataclasses.replace(reference, sd_in_global=self.global_sd[0], sd_out_global=self.global_sd[1])
        return (lira_online if self.online else lira_offline)(inputs.target_scores, reference, fix_variance=self.fix_variance)

    def params(self, n_reference_models: int) -> dict[str, Any]:
        fixed = self.fix_variance and self.global_sd is not None
        return {
            "fix_variance": self.fix_variance,
            "n_reference_models": n_reference_models,
            "n_views": self.context.n_views,
            "mu": "median",
            "sd": "std_ddof0",
            "sd_floor_abs": SD_FLOOR_ABS,
            "sd_floor_rel": SD_FLOOR_REL,
            **({"sd_in_global": self.global_sd[0], "sd_out_global": self.global_sd[1]} if fixed else {}),
        }


# The pool's LiRA variants: (name, online, fix_variance), registered in this order.
POOL_LIRA_VARIANTS = (
    ("lira_online", True, False),
    ("lira_offline", False, False),
    ("lira_online_fixed_var", True, True),
    ("lira_offline_fixed_var", False, True),
)
for _name, _online, _fixed in POOL_LIRA_VARIANTS:
    register_attack(type(f"Lira_{_name}", (_PoolLira,), {"name": _name, "online": _online, "fix_variance": _fixed}))


@register_attack
class FewReferenceLiraOffline(Attack):
    """The model audit's offline LiRA (:func:`few_reference_lira`); ``fit`` keeps the last result, the audit's record risk."""

    name = "lira_offline"
    audits = ("model",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fit: FewReferenceRisk | None = None

    def score(self, inputs: AttackInputs) -> np.ndarray:
        target = np.asarray(inputs.target_scores)
        self.fit = few_reference_lira(target[0], inputs.ref_scores, inputs.ref_in, variance=self.context.variance)
        return self.fit.lira_offline[None]
