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

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

SD_FLOOR_ABS = 1e-6
SD_FLOOR_REL = 1e-6

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
