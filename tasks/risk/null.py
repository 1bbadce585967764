"""The pool's own null: IN/OUT swaps within complementary pairs, pooled p-values, FDR, evidence.

Models 2k and 2k+1 of a pool train on complementary halves of the patients (tasks/masks.py). Swapping the
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

# Record-level z histogram: [-Z_MAX, Z_MAX] in bins of Z_BIN; +-inf land in the end bins.
Z_MAX = 50.0
Z_BIN = 1e-3
# Elements ((B + 1) x records x views) per matrix product.
_BLOCK_ELEMENTS = 4_000_000
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
    step = max(1, _BLOCK_ELEMENTS // max(1, (b + 1) * v * max(1, len(first))))
    fixed = np.setdiff1d(np.arange(m), np.concatenate([first, second]))
    for lo in range(0, n, step):
        out[:, lo : lo + step] = _swap_z_block(s[:, lo : lo + step], mask[:, lo : lo + step], first, second, fixed, sg, min_per_side)
    return out


def _swap_z_block(
    s: np.ndarray, mask: np.ndarray, first: np.ndarray, second: np.ndarray, fixed: np.ndarray, sg: np.ndarray, min_per_side: int
) -> np.ndarray:
    _, n, v = s.shape
    b = sg.shape[0]
    valid = np.isfinite(s).all(axis=2)  # (M, n)
    x = np.where(valid[:, :, None], s, 0.0)
    vf = valid.astype(np.float64)
    a_in = mask[first]  # (K, n): the pair's first model is IN
    xa, xb = x[first], x[second]
    x_in = np.where(a_in[:, :, None], xa, xb)
    x_out = np.where(a_in[:, :, None], xb, xa)
    v_in = np.where(a_in, vf[first], vf[second])
    v_out = np.where(a_in, vf[second], vf[first])
    # constant parts (pair totals / 2 plus the unpaired models on their own side)
    fin = mask[fixed]
    fx, fv = x[fixed], vf[fixed]
    base_s_in = (x_in + x_out).sum(0) / 2 + (fx * fin[:, :, None]).sum(0)
    base_s_out = (x_in + x_out).sum(0) / 2 + (fx * ~fin[:, :, None]).sum(0)
    base_q_in = (x_in**2 + x_out**2).sum(0) / 2 + (fx**2 * fin[:, :, None]).sum(0)
    base_q_out = (x_in**2 + x_out**2).sum(0) / 2 + (fx**2 * ~fin[:, :, None]).sum(0)
    base_c_in = (v_in + v_out).sum(0) / 2 + (fv * fin).sum(0)
    base_c_out = (v_in + v_out).sum(0) / 2 + (fv * ~fin).sum(0)
    k = len(first)
    d_s = (sg @ (x_in - x_out).reshape(k, n * v)).reshape(b, n, v) / 2
    d_q = (sg @ (x_in**2 - x_out**2).reshape(k, n * v)).reshape(b, n, v) / 2
    d_c = (sg @ (v_in - v_out)) / 2  # (B, n)
    c_in = np.rint(base_c_in[None] + d_c)
    c_out = np.rint(base_c_out[None] + d_c * -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_in_v = (base_s_in[None] + d_s) / c_in[:, :, None]
        mu_out_v = (base_s_out[None] - d_s) / c_out[:, :, None]
        m2_in = (base_q_in[None] + d_q) / c_in[:, :, None]
        m2_out = (base_q_out[None] - d_q) / c_out[:, :, None]
        var_in = m2_in - mu_in_v**2
        var_out = m2_out - mu_out_v**2
        # rounding of E[x^2] - E[x]^2: a variance below 1e-12 of the second moment is a constant side
        var_in = np.where(var_in <= 1e-12 * np.abs(m2_in), 0.0, var_in)
        var_out = np.where(var_out <= 1e-12 * np.abs(m2_out), 0.0, var_out)
        mu_in, mu_out = mu_in_v.mean(axis=2), mu_out_v.mean(axis=2)
        sd = np.hypot(np.sqrt(var_in).mean(axis=2), np.sqrt(var_out).mean(axis=2))
        z = (mu_in - mu_out) / sd
    z[(c_in < min_per_side) | (c_out < min_per_side)] = np.nan
    return z


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of (n,) p-values (NaN stays NaN, not counted in the number of tests)."""
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order] * ok.size / np.arange(1, ok.size + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def _z_bins(z: np.ndarray) -> np.ndarray:
    return np.floor((np.clip(z, -Z_MAX, Z_MAX) + Z_MAX) / Z_BIN).astype(np.int64)


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
    survival_null: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (B, G) share >= SURVIVAL_GRID
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
        self.hist = np.zeros(_z_bins(np.array([Z_MAX]))[0] + 1, dtype=np.int64)
        self.rec_surv = np.zeros((n_swaps, len(SURVIVAL_GRID)), dtype=np.int64)
        self.rec_above = 0
        self.n_rec_scored = np.zeros(n_swaps, dtype=np.int64)
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
        obs, z = z_all[0], z_all[1:]
        self.observed.append(obs)
        ok = ~np.isnan(z)
        self.hist += np.bincount(_z_bins(z[ok]), minlength=self.hist.size)
        self.n_rec_scored += ok.sum(axis=1)
        auc = ndtr(np.where(ok, z, -np.inf))
        above = auc >= self.threshold
        self.rec_above += int(above.sum())
        self.rec_chance.append(above.mean(axis=0) if z.shape[0] else np.zeros(z.shape[1]))
        idx = np.searchsorted(SURVIVAL_GRID, auc, side="right")  # units with auc >= grid[g] have idx > g
        g = len(SURVIVAL_GRID)
        counts = np.bincount((np.arange(z.shape[0])[:, None] * (g + 1) + idx).ravel(), minlength=z.shape[0] * (g + 1))
        counts = counts.reshape(z.shape[0], g + 1)
        self.rec_surv += np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:]
        # patient maxima under the same swaps
        zf = np.where(ok, z, -np.inf)
        order = np.argsort(codes, kind="stable")
        uniq, starts = np.unique(codes[order], return_index=True)
        mx = np.maximum.reduceat(zf[:, order], starts, axis=1)
        self.pmax[:, uniq] = np.maximum(self.pmax[:, uniq], mx)
        return obs

    def finish(self, patient_observed: np.ndarray) -> NullResult:
        """patient_observed (P,): each patient's max observed z (NaN: not scored)."""
        obs = np.concatenate(self.observed) if self.observed else np.empty(0)
        total = int(self.hist.sum())
        ge = np.cumsum(self.hist[::-1])[::-1]  # ge[i] = # null in bins >= i
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
        with np.errstate(divide="ignore", invalid="ignore"):
            surv = {
                "patient": pat_surv / np.maximum(scored, 1)[:, None],
                "record": self.rec_surv / np.maximum(self.n_rec_scored, 1)[:, None],
            }
        return NullResult(
            record_p=rec_p,
            record_q=_bh(rec_p),
            patient_p=pat_p,
            patient_q=_bh(pat_p),
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
