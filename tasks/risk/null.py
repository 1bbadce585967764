"""The pool's own null: IN/OUT swaps within complementary pairs, pooled p-values, FDR, evidence.

Models 2k and 2k+1 of a pool train on complementary halves of the patients (tasks/training/masks.py). Swapping the
roles of the two models of pair k -- for every patient at once -- maps the mask design onto itself, and
under "no membership effect" with i.i.d. model seeds it leaves the joint distribution of all scores
unchanged. A *swap* is one sign per pair, ``sigma_b in {+1, -1}^K``; ``-1`` exchanges which model of
pair k counts as IN for every patient (so a patient's records all move together and the patient maximum's
null comes from the same swaps). Models outside a complete pair keep their side.

Every per-record quantity the binormal AUC needs is linear in the signs. For pair k and record n with
IN score ``a`` and OUT score ``b`` (per view), and validity ``va``/``vb`` (all views finite):

    sum_IN(sigma) = sum_k (a + b) / 2 + sum_k sigma_k (a - b) / 2    (OUT: minus)
    sumsq_IN      = sum_k (a^2 + b^2) / 2 + sum_k sigma_k (a^2 - b^2) / 2
    count_IN      = sum_k (va + vb) / 2 + sum_k sigma_k (va - vb) / 2

so B swaps of a block are three matrix products ``signs (B, K) @ (K, n*V)`` (:func:`swap_z`). The
statistic is the record's binormal z, ``(mu_in - mu_out) / sqrt(sd_in^2 + sd_out^2)`` with per-view
means and ddof-0 stds averaged over views, exactly as tasks/attacks/record_auc.py; ``auc_raw = Phi(z)``.

p-values pool the null over units (SAM / permutation FDR): ``p_j = (1 + #{null >= T_j}) / (1 + N_null)``
with all N_null null statistics of all units and swaps; Benjamini-Hochberg on these p-values equals the
estimate ``FDR(t) = E0(t) / R(t)``, where ``E0(t)`` is the mean over swaps of the number of units at or above
t and ``R(t)`` the observed number. Record p-values come from a z histogram (bin width ``Z_BIN``; a null
value in T_j's own bin counts as >= T_j, which only makes p larger); patient p-values are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from tasks.risk.fdr import bh_qvalues

# Record-level z histogram: [-Z_MAX, Z_MAX] in bins of Z_BIN; +-inf land in the end bins.
Z_MAX = 50.0
Z_BIN = 1e-3
# Elements (max(B + 1, K) x records x views) per sub-block: bounds the null's temporaries (~8 MB each).
_BLOCK_ELEMENTS = 1_000_000
# Risk grid of the null survival band (AUC values).
SURVIVAL_GRID = np.round(np.linspace(0.5, 1.0, 101), 6)
# Candidate pool sizes for the "how many models" projection.
PROJECTION_COUNTS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# Fewest models per pool: 3 complementary pairs. With 2 pairs a record's swap null has only 4 patterns,
# two of them mirror images (z -> -z) of the other two, so half of all records look "most extreme" by
# chance, and the sd of a side comes from 2 models.
MIN_MODELS = 6


def minimum_models(min_models_per_side: int) -> int:
    """Smallest pool (models, even) the statistics can work with: MIN_MODELS or 2 x the per-side minimum + 2."""
    return max(MIN_MODELS, 2 * min_models_per_side + 2)


def pair_layout(models: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions in ``models`` of complete complementary pairs (2k, 2k+1) and of the unpaired models.

    Returns (first (K,), second (K,), fixed (F,)) int arrays of positions into ``models``.
    """
    pos = {int(m): i for i, m in enumerate(models)}
    first, second = [], []
    for m, i in pos.items():
        if m % 2 == 0 and m + 1 in pos:
            first.append(i)
            second.append(pos[m + 1])
    paired = set(first) | set(second)
    fixed = [i for i in range(len(models)) if i not in paired]
    return np.asarray(first, dtype=np.intp), np.asarray(second, dtype=np.intp), np.asarray(fixed, dtype=np.intp)


def swap_signs(n_swaps: int, n_pairs: int, seed: int) -> np.ndarray:
    """(n_swaps, n_pairs) float64 of +-1, drawn from ``default_rng(seed)``; row b is swap b."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n_swaps, n_pairs)) < 0.5, -1.0, 1.0)


def swap_z(
    scores: np.ndarray,
    in_mask: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    signs: np.ndarray,
    min_per_side: int = 2,
) -> np.ndarray:
    """Binormal z of every record under every swap.

    scores (M, n, V) (NaN = not scored), in_mask (M, n) bool, first/second (K,) positions of the pairs
    (models first[k] and second[k] must be complementary on every record), signs (B, K) of +-1.
    Returns (B, n) float64: NaN where a side has fewer than ``min_per_side`` valid models or both sides
    are constant with equal means; +-inf where both sides are constant and the means differ.
    A row of all +1 reproduces ``norm.ppf(record_statistics(...).auc_raw)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2:
        s = s[:, :, None]
    mask = np.asarray(in_mask, dtype=bool)
    sg = np.asarray(signs, dtype=np.float64)
    m, n, v = s.shape
    if (mask[first] == mask[second]).any():
        raise ValueError("models of a complementary pair are on the same side for some record (masks are not complementary)")
    b = sg.shape[0]
    out = np.empty((b, n))
    step = max(1, _BLOCK_ELEMENTS // (max(b, len(first), 1) * v))
    fixed = np.setdiff1d(np.arange(m), np.concatenate([first, second]))
    for lo in range(0, n, step):
        out[:, lo : lo + step] = _swap_z_block(s[:, lo : lo + step], mask[:, lo : lo + step], first, second, fixed, sg, min_per_side)
    return out


def _swap_z_block(
    s: np.ndarray, mask: np.ndarray, first: np.ndarray, second: np.ndarray, fixed: np.ndarray, sg: np.ndarray, min_per_side: int
) -> np.ndarray:
    _, n, v = s.shape
    b, k = sg.shape[0], len(first)
    x = np.ascontiguousarray(s.transpose(0, 2, 1))  # (M, V, n): per-view slices are contiguous rows
    valid = np.isfinite(x).all(axis=1)  # (M, n)
    if not valid.all():  # a new array: x may be a view of the caller's scores
        x = np.where(valid[:, None, :], x, 0.0)
    vf = valid.astype(np.float64)
    sgn = np.where(mask[first], 1.0, -1.0)[:, None, :]  # (K, 1, n): +1 where the pair's first model is IN
    xa, xb = x[first], x[second]
    tot = xa + xb  # (K, V, n)
    dif = xa - xb
    dif *= sgn  # IN minus OUT score of each pair
    sq = tot * dif  # IN^2 minus OUT^2
    half_s = tot.sum(0) * 0.5  # (V, n)
    half_q = (xa * xa).sum(0)
    half_q += (xb * xb).sum(0)
    half_q *= 0.5
    del tot, xa, xb
    g = (vf[first] - vf[second]) * sgn[:, 0, :]  # (K, n): IN minus OUT validity
    half_c = (vf[first] + vf[second]).sum(0) * 0.5
    fin = mask[fixed][:, None, :]  # unpaired models stay on their side
    fx, fv = x[fixed], vf[fixed]
    s_in, s_out = half_s + (fx * fin).sum(0), half_s + (fx * ~fin).sum(0)
    q_in, q_out = half_q + (fx * fx * fin).sum(0), half_q + (fx * fx * ~fin).sum(0)
    c_in, c_out = half_c + (fv * fin[:, 0, :]).sum(0), half_c + (fv * ~fin[:, 0, :]).sum(0)
    # the swap-dependent halves: matrix products (B, K) @ (K, V * n)
    dif *= 0.5
    sq *= 0.5
    d_s = (sg @ dif.reshape(k, v * n)).reshape(b, v, n)
    d_q = (sg @ sq.reshape(k, v * n)).reshape(b, v, n)
    if g.any():  # a model of some pair did not score a record: counts depend on the swap
        d_c = sg @ (g * 0.5)
        cnt_in, cnt_out = np.rint(c_in + d_c), np.rint(c_out - d_c)  # (B, n)
    else:
        cnt_in, cnt_out = np.broadcast_to(c_in, (b, n)), np.broadcast_to(c_out, (b, n))
    # a variance below 1e-12 of the record's mean square is rounding of a constant side
    with np.errstate(divide="ignore", invalid="ignore"):
        tol = 1e-12 * (half_q * 2.0) / np.maximum(half_c * 2.0 + fv.sum(0), 1.0)  # (V, n)
        inv_in, inv_out = (1.0 / cnt_in)[:, None, :], (1.0 / cnt_out)[:, None, :]
        mu_in = np.add(s_in, d_s) * inv_in
        mu_out = np.subtract(s_out, d_s, out=d_s)
        mu_out *= inv_out
        sd_in = _sd(np.add(q_in, d_q) * inv_in, mu_in, tol)
        m2_out = np.subtract(q_out, d_q, out=d_q)
        m2_out *= inv_out
        sd_out = _sd(m2_out, mu_out, tol)
        diff, sd_a, sd_b = mu_in[:, 0] - mu_out[:, 0], sd_in[:, 0].copy(), sd_out[:, 0].copy()
        for j in range(1, v):  # averages over views (sums of contiguous slices)
            diff += mu_in[:, j] - mu_out[:, j]
            sd_a += sd_in[:, j]
            sd_b += sd_out[:, j]
        z = diff / np.hypot(sd_a, sd_b)  # the 1/V of the three averages cancels
    z[(cnt_in < min_per_side) | (cnt_out < min_per_side)] = np.nan
    return z


def _sd(m2: np.ndarray, mu: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """sqrt(E[x^2] - E[x]^2), computed in place of m2 (B, V, n); a variance <= tol (V, n) counts as 0."""
    m2 -= mu * mu
    m2[m2 <= tol] = 0.0
    return np.sqrt(m2, out=m2)


# histogram bins: [0, _NAN_BIN) for z in [-Z_MAX, Z_MAX] (+-inf clipped into the end bins), _NAN_BIN for NaN
_NAN_BIN = round(2 * Z_MAX / Z_BIN) + 1


def _z_bins(z: np.ndarray) -> np.ndarray:
    zz = np.clip(z, -Z_MAX, Z_MAX)
    zz += Z_MAX
    zz *= 1.0 / Z_BIN
    nan = np.isnan(zz)
    zz[nan] = _NAN_BIN
    return zz.astype(np.int64)  # truncation of values >= 0 is the floor


@dataclass
class NullResult:
    """Null summaries of one audit (see :class:`SwapNull`)."""

    record_p: np.ndarray  # (N,) pooled swap p-value of each record (NaN: not scored)
    record_q: np.ndarray  # (N,) BH q-value
    patient_p: np.ndarray  # (P,)
    patient_q: np.ndarray  # (P,)
    patient_null_max: np.ndarray  # (B, P) null patient maxima (z); -inf: patient not scored
    record_expected: float  # mean over swaps of #records with null AUC >= threshold
    record_chance: np.ndarray  # (N,) share of swaps in which the record's null AUC >= threshold (sums to record_expected)
    patient_chance: np.ndarray  # (P,) same for the patient maximum (sums to patient_expected)
    patient_expected: float  # same for patients (max over their records)
    # level -> share at or above SURVIVAL_GRID: 'patient' (B, G) per swap, 'record' (1, G) over all swaps
    survival_null: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)


class SwapNull:
    """Streaming null over record blocks: ``add`` each block, then ``finish``.

    models: the pool's model indices (positions as in the score arrays); n_patients: P; threshold: the
    risk (AUC) threshold of the headline counts; signs: (B, K) swaps instead of ``n_swaps`` seeded ones.
    """

    def __init__(
        self,
        models: Sequence[int],
        n_patients: int,
        *,
        n_swaps: int,
        seed: int,
        threshold: float,
        min_per_side: int = 2,
        signs: np.ndarray | None = None,
    ):
        self.first, self.second, self.fixed = pair_layout(models)
        # signs given (e.g. every swap of a small pool, for an exact null) replace the seeded draw
        self.signs = swap_signs(n_swaps, len(self.first), seed) if signs is None else np.asarray(signs, dtype=np.float64)
        n_swaps = self.signs.shape[0]
        self.identity = np.ones((1, len(self.first)))
        self.threshold = threshold
        self.min_per_side = min_per_side
        self.pmax = np.full((n_swaps, n_patients), -np.inf)
        self.z_threshold = float(ndtri(threshold))
        self.hist = np.zeros(_NAN_BIN + 1, dtype=np.int64)
        self.rec_above = 0
        self.observed: list[np.ndarray] = []
        self.rec_chance: list[np.ndarray] = []  # per record: share of swaps with null AUC >= threshold
        self.params = {
            "statistic": "binormal z (per-view means, ddof-0 stds averaged over views)",
            "swaps": "one sign per complementary pair, the same for every patient",
            "n_swaps": int(n_swaps),
            "seed": int(seed),
            "n_pairs": len(self.first),
            "n_unpaired_models": len(self.fixed),
            "p_value": "pooled over units: (1 + #null >= T) / (1 + #null)",
            "record_p_bin": Z_BIN,
            "q_value": "Benjamini-Hochberg",
        }

    def add(self, scores: np.ndarray, in_mask: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """One block: scores (M, n, V), in_mask (M, n), codes (n,) patient codes. Returns the observed z (n,)."""
        both = np.concatenate([self.identity, self.signs])
        z_all = swap_z(scores, in_mask, self.first, self.second, both, self.min_per_side)
        obs, z = z_all[0].copy(), z_all[1:]
        self.observed.append(obs)
        self.hist += np.bincount(_z_bins(z).ravel(), minlength=self.hist.size)
        above = z >= self.z_threshold  # NaN compares False
        self.rec_above += int(above.sum())
        self.rec_chance.append(above.mean(axis=0) if z.shape[0] else np.zeros(z.shape[1]))
        # patient maxima under the same swaps (an unscored record counts as -inf)
        z[np.isnan(z)] = -np.inf
        codes = np.asarray(codes)
        if codes.size > 1 and (np.diff(codes) < 0).any():  # records of a patient not contiguous: sort them
            order = np.argsort(codes, kind="stable")
            codes, z = codes[order], z[:, order]
        if codes.size:
            starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
            uniq = codes[starts]
            self.pmax[:, uniq] = np.maximum(self.pmax[:, uniq], np.maximum.reduceat(z, starts, axis=1))
        return obs

    def finish(self, patient_observed: np.ndarray) -> NullResult:
        """patient_observed (P,): each patient's max observed z (NaN: not scored)."""
        obs = np.concatenate(self.observed) if self.observed else np.empty(0)
        total = int(self.hist[:_NAN_BIN].sum())
        ge = np.cumsum(self.hist[:_NAN_BIN][::-1])[::-1]  # ge[i] = # null in bins >= i (NaN excluded)
        rec_p = np.full(obs.shape, np.nan)
        ok = ~np.isnan(obs)
        rec_p[ok] = (1.0 + ge[_z_bins(obs[ok])]) / (1.0 + total)
        flat = np.sort(self.pmax[self.pmax > -np.inf])
        pat_p = np.full(patient_observed.shape, np.nan)
        okp = ~np.isnan(patient_observed) & (patient_observed > -np.inf)
        pat_p[okp] = (1.0 + flat.size - np.searchsorted(flat, patient_observed[okp], side="left")) / (1.0 + flat.size)
        b = self.pmax.shape[0]
        pat_auc = ndtr(self.pmax)
        scored = (self.pmax > -np.inf).sum(axis=1)
        pat_above = (pat_auc >= self.threshold) & (self.pmax > -np.inf)
        srt = np.sort(np.where(self.pmax > -np.inf, pat_auc, -1.0), axis=1)
        pat_surv = np.stack([srt.shape[1] - np.searchsorted(row, SURVIVAL_GRID, side="left") for row in srt]) if b else np.zeros((0, 0))
        n_null = int(self.hist[:_NAN_BIN].sum())  # finite-or-inf null record statistics
        rec_ge = ge[_z_bins(ndtri(SURVIVAL_GRID))]
        surv = {
            "patient": pat_surv / np.maximum(scored, 1)[:, None],
            # records: the share over all swaps (the histogram does not keep swaps apart), one row
            "record": (rec_ge / max(n_null, 1))[None, :],
        }
        return NullResult(
            record_p=rec_p,
            record_q=bh_qvalues(rec_p),
            patient_p=pat_p,
            patient_q=bh_qvalues(pat_p),
            patient_null_max=self.pmax,
            record_expected=self.rec_above / b if b else 0.0,
            record_chance=np.concatenate(self.rec_chance) if self.rec_chance else np.empty(0),
            patient_chance=pat_above.mean(axis=0) if b else np.zeros(self.pmax.shape[1]),
            patient_expected=float(pat_above.sum() / b) if b else 0.0,
            survival_null=surv,
            params=self.params,
        )


def patient_max_z(record_z: np.ndarray, codes: np.ndarray, n_patients: int) -> np.ndarray:
    """(P,) max of the finite-or-inf record z per patient; NaN for a patient with none."""
    out = np.full(n_patients, -np.inf)
    ok = ~np.isnan(record_z)
    np.maximum.at(out, codes[ok], record_z[ok])
    out[out == -np.inf] = np.nan
    return out


def projected_expected(null_max: np.ndarray, threshold: float, n_models: int, n_target: int) -> float:
    """Expected patients at or above ``threshold`` by chance with ``n_target`` instead of ``n_models`` models.

    Under the null a record's z is a difference of two means over n/2 models each, divided by a spread
    estimate, so its spread shrinks like sqrt(n_models / n_target): the null maxima (B, P) are scaled by that
    factor. An approximation (the null's shape at small n also changes), stated where it is reported.
    """
    if null_max.size == 0:
        return 0.0
    scaled = np.where(null_max > -np.inf, null_max * np.sqrt(n_models / n_target), -np.inf)
    return float((scaled >= ndtri(threshold)).sum() / null_max.shape[0])


@dataclass
class Evidence:
    """Is the pool big enough to tell risk from chance? (see :func:`assess_evidence`)"""

    level: str  # "sufficient" | "insufficient"
    reason: str
    noise_share: float  # expected share of the raw flagged patients that chance alone gives (capped at 1)
    top_interval_width: float | None  # median width of the 95% AUC interval of the top records
    n_models_needed: int | None  # projected pool size meeting both targets (None: beyond PROJECTION_COUNTS)


def assess_evidence(
    n_raw: int,
    n_expected: float,
    top_width: float | None,
    null_max: np.ndarray,
    *,
    threshold: float,
    n_models: int,
    max_noise_share: float,
    max_interval_width: float,
) -> Evidence:
    """Evidence verdict and the projected number of models.

    Noise target: the expected chance count is at most ``max_noise_share`` of the raw count, or below one
    patient (nothing flagged and nothing expected is fine). Precision target: the median 95% interval width
    of the top records is at most ``max_interval_width``. Both scale with the pool: widths like
    1/sqrt(models), the chance count by :func:`projected_expected`; a real patient is assumed to stay flagged.
    """
    share = min(1.0, n_expected / n_raw) if n_raw else (0.0 if n_expected < 1 else 1.0)
    real = max(n_raw - n_expected, 0.0)

    def noise_ok(expected: float, flagged: float) -> bool:
        return expected <= max(max_noise_share * flagged, 1.0)

    def width_ok(width: float | None) -> bool:
        return width is None or width <= max_interval_width

    ok_noise, ok_width = noise_ok(n_expected, n_raw), width_ok(top_width)
    needed: int | None = n_models
    if not (ok_noise and ok_width):
        needed = None
        for c in PROJECTION_COUNTS:
            if c <= n_models:
                continue
            e = projected_expected(null_max, threshold, n_models, c)
            w = None if top_width is None else top_width * np.sqrt(n_models / c)
            if noise_ok(e, real + e) and width_ok(w):
                needed = c
                break
    parts = []
    if not ok_noise:
        parts.append(f"chance alone would flag about {n_expected:.1f} of the {n_raw} patients at risk >= {threshold:g} ({share:.0%})")
    if not ok_width:
        parts.append(f"the 95% interval of the top records' AUC is {top_width:.2f} wide (target <= {max_interval_width:g})")
    if parts:
        more = f"about {needed} models would be enough" if needed else f"more than {PROJECTION_COUNTS[-1]} models would be needed"
        reason = f"not enough evidence at {n_models} models: " + "; ".join(parts) + f" ({more}, projected)"
    else:
        w = "n/a" if top_width is None else f"{top_width:.2f}"
        reason = (
            f"{n_models} models: chance alone would flag about {n_expected:.1f} of {n_raw} patients at risk >= {threshold:g}, "
            f"top-record 95% interval width {w}"
        )
    return Evidence("sufficient" if not parts else "insufficient", reason, share, top_width, needed)


def calibrated_subgroup_counts(labels: dict[str, np.ndarray], at_risk: np.ndarray, chance: np.ndarray, *, pairs: bool) -> pd.DataFrame:
    """Per (attribute, group): FDR-controlled count ``n_at_risk`` and ``expected_above`` (chance count).

    labels: attribute -> (n,) group labels of the scored units (as tasks.risk.subgroup labels them);
    at_risk (n,) bool; chance (n,) per-unit share of swaps at or above the threshold. With ``pairs`` every
    pair of attributes adds rows ``'a×b'`` / ``'ga×gb'`` like :func:`tasks.risk.subgroup.subgroup_table`.
    """
    units = list(labels.items())
    if pairs:
        for a, b in combinations(labels, 2):
            units.append((f"{a}×{b}", np.array([f"{x}×{y}" for x, y in zip(labels[a], labels[b], strict=True)], dtype=object)))
    frames = [
        pd.DataFrame({"group": lab, "n_at_risk": at_risk.astype(np.int64), "expected_above": chance})
        .groupby("group", sort=True)
        .sum()
        .reset_index()
        .assign(attribute=name)
        for name, lab in units
    ]
    cols = ["attribute", "group", "n_at_risk", "expected_above"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
