"""Score transforms (design D12): exactness, fallbacks, robustness to non-finite logits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, log_expit, softmax

from tasks.attacks.scores import (
    get_transform,
    list_transforms,
    probability_transform_for,
    register_transform,
)


def _naive_mass_logit(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = softmax(z.astype(np.float64), axis=-1)
    pt = (p * y[:, None, :]).sum(-1)
    return np.log(pt) - np.log1p(-pt)


def test_registry():
    names = list_transforms()
    for n in ("softmax_mass", "softmax_mass_cxr", "binary_logit", "rmia_probability"):
        assert n in names
    with pytest.raises(KeyError):
        get_transform("nope")
    with pytest.raises(ValueError):
        register_transform("softmax_mass")(lambda z, y: (z, y))
    assert probability_transform_for("softmax_mass_cxr") == "rmia_probability_cxr"
    assert probability_transform_for("binary_logit") == "rmia_probability"


def test_softmax_mass_multiclass_and_multilabel():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 3, 5)) * 3
    y = np.zeros((50, 5))
    y[np.arange(50), rng.integers(0, 5, 50)] = 1
    y[:10, 0] = 1  # a few multi-label rows
    y[:10, 1] = 1
    s, flags = get_transform("softmax_mass")(z, y)
    assert s.shape == (50, 3) and s.dtype == np.float64
    assert (flags == "").all()
    np.testing.assert_allclose(s, _naive_mass_logit(z, y), rtol=1e-10)


def test_softmax_mass_extreme_logits_exact():
    # p_wrong = e^-200 underflows nothing in log space: score = 200 + log(1) - log(2)... exactly
    z = np.array([[[200.0, 0.0, 0.0]]])
    y = np.array([[1.0, 0.0, 0.0]])
    s, _ = get_transform("softmax_mass")(z, y)
    assert s[0, 0] == pytest.approx(200 - np.log(2), rel=1e-15)
    s, _ = get_transform("softmax_mass")(-z, y)
    assert s[0, 0] == pytest.approx(-200 - np.log(2), rel=1e-15)


def test_no_positive_and_all_positive_fallbacks():
    z = np.array([[[1.0, -2.0, 0.5]], [[1.0, -2.0, 0.5]], [[0.3, 0.1, 0.2]]])
    y = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    s, flags = get_transform("softmax_mass")(z, y)
    assert flags.tolist() == ["no_positive_label", "all_labels_positive", ""]
    assert s[0, 0] == pytest.approx(log_expit(-z[0, 0]).sum())
    assert s[1, 0] == pytest.approx(log_expit(z[1, 0]).sum())
    p, pflags = get_transform("rmia_probability")(z, y)
    assert pflags.tolist() == flags.tolist()
    assert p[0, 0] == pytest.approx(np.exp(log_expit(-z[0, 0]).sum()))
    assert p[2, 0] == pytest.approx(softmax(z[2, 0])[1])


def test_cxr_no_finding_rule():
    z = np.array([[[2.0, 0.0, -1.0]], [[2.0, 0.0, -1.0]]])
    y = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s, flags = get_transform("softmax_mass_cxr")(z, y)
    assert flags.tolist() == ["no_finding_rule", ""]
    y_fixed = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(s, _naive_mass_logit(z, y_fixed))
    p, pflags = get_transform("rmia_probability_cxr")(z, y)
    assert pflags.tolist() == ["no_finding_rule", ""]
    assert p[0, 0] == pytest.approx(softmax(z[0, 0])[0])


def test_float16_input_computed_in_float64():
    z16 = np.array([[[3.0, -3.0]]], dtype=np.float16)
    y = np.array([[1.0, 0.0]])
    s, _ = get_transform("softmax_mass")(z16, y)
    assert s.dtype == np.float64
    assert s[0, 0] == pytest.approx(6.0, rel=1e-15)


def test_binary_logit_exact_and_unsaturated():
    z = np.array([-40.0, -3.0, 0.0, 2.5, 40.0])[:, None, None]
    for label in (0.0, 1.0):
        y = np.full((5, 1), label)
        s, flags = get_transform("binary_logit")(z, y)
        sign = 1 if label == 1 else -1
        expected = log_expit(sign * z[:, 0, 0]) - log_expit(-sign * z[:, 0, 0])
        np.testing.assert_allclose(s[:, 0], expected, rtol=1e-13, atol=1e-13)
        assert np.all(np.isfinite(s))
        assert (flags == "").all()
    s, _ = get_transform("binary_logit")(z, np.ones(5))  # (N,) labels accepted
    assert s[-1, 0] == 40.0 and s[0, 0] == -40.0  # the paper's transform saturated near 103
    with pytest.raises(ValueError):
        get_transform("binary_logit")(np.zeros((2, 1, 3)), np.zeros((2, 3)))


def test_rmia_probability_binary_uses_label():
    z = np.array([[[2.0]], [[2.0]], [[-50.0]]])
    y = np.array([[1.0], [0.0], [0.0]])
    p, _ = get_transform("rmia_probability")(z, y)
    np.testing.assert_allclose(p[:, 0], [expit(2.0), expit(-2.0), expit(50.0)])
    assert np.all((p >= 0) & (p <= 1))


@pytest.mark.parametrize("name", ["softmax_mass", "softmax_mass_cxr", "rmia_probability", "rmia_probability_cxr"])
def test_nonfinite_logits_flagged_not_crashing(name):
    z = np.zeros((5, 2, 3))
    z[0, 1, 2] = np.nan
    z[1, 0, 0] = np.inf
    z[2, 1, 1] = -np.inf
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=float)
    y[3, 1] = np.nan
    with np.errstate(all="raise"):
        s, flags = get_transform(name)(z, y)
    assert flags[:3].tolist() == ["nonfinite_logits"] * 3
    assert flags[3] == "nonfinite_labels"
    assert np.isnan(s[:4]).all()
    assert np.isfinite(s[4]).all()


def test_binary_nonfinite():
    z = np.array([[[np.nan]], [[np.inf]], [[1.0]]])
    s, flags = get_transform("binary_logit")(z, np.ones((3, 1)))
    assert flags.tolist() == ["nonfinite_logits", "nonfinite_logits", ""]
    assert np.isnan(s[:2]).all() and s[2, 0] == 1.0


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.1, 500),
    c=st.integers(2, 6),
)
def test_softmax_mass_is_finite_and_consistent_with_probability(seed, scale, c):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(20, 2, c)) * scale
    y = (rng.random((20, c)) < 0.4).astype(float)
    s, flags = get_transform("softmax_mass")(z, y)
    p, _ = get_transform("rmia_probability")(z, y)
    assert np.isfinite(s).all()
    assert ((p >= 0) & (p <= 1)).all()
    normal = flags == ""
    # the score is the logit of the probability (checked where log1p(-p) is still accurate)
    ok = normal[:, None] & (p > 1e-6) & (p < 1 - 1e-6)
    np.testing.assert_allclose(s[ok], np.log(p[ok]) - np.log1p(-p[ok]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dataset", ["chexpert", "mimic-cxr"])
def test_chest_xray_rmia_applies_the_no_finding_rule(dataset: str, tmp_path) -> None:
    # one rule pairs LiRA scores and RMIA probabilities: the flow's shard transform and the model audit use it
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.attacks.scores import score_and_probability
    from tasks.datasets import get_dataset
    from tasks.training.pool_runner import transform_shard

    task = get_dataset(dataset).task
    transform, n_lab = task.score_transform, task.n_outputs
    assert transform == "softmax_mass_cxr"
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 1, n_lab))
    y = np.zeros((3, n_lab))
    y[1, 3] = 1.0  # row 0 and 2: no positive finding -> the 'No Finding' rule
    _scores, probs, flags = score_and_probability(transform, z, y)
    expected, _ = get_transform("rmia_probability_cxr")(z, y)
    np.testing.assert_array_equal(probs, expected)
    plain, _ = get_transform("rmia_probability")(z, y)
    assert not np.allclose(probs[0], plain[0])  # the rule changes the probability of a no-finding record
    assert flags.tolist() == ["no_finding_rule", "", "no_finding_rule"]
    shard = tmp_path / "model_0.parquet"
    pq.write_table(pa.table({"logits": pa.array(list(z.reshape(3, -1).astype(np.float32)), type=pa.list_(pa.float32()))}), shard)
    _s2, p2, f2 = transform_shard({"shard": str(shard), "n_views": 1, "n_outputs": n_lab}, y, transform)
    np.testing.assert_allclose(p2, get_transform("rmia_probability_cxr")(z.astype(np.float32), y)[0])
    assert f2.tolist() == flags.tolist()
