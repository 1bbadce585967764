import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.training.masks import model_seed, pool_masks, record_masks


@settings(max_examples=40, deadline=None)
@given(n_patients=st.integers(1, 301), pairs=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_every_patient_is_in_for_exactly_half_of_the_models(n_patients: int, pairs: int, seed: int) -> None:
    masks = pool_masks(n_patients, seed, 2 * pairs)
    assert masks.shape == (2 * pairs, n_patients)
    np.testing.assert_array_equal(masks.sum(axis=0), pairs)
    np.testing.assert_array_equal(masks[0::2], ~masks[1::2])  # complementary pairs
    # each model sees about half of the patients
    assert np.all(np.abs(masks.sum(axis=1) - n_patients / 2) <= 0.5)


def test_growing_a_pool_keeps_the_first_masks() -> None:
    np.testing.assert_array_equal(pool_masks(500, 7, 64)[:32], pool_masks(500, 7, 32))


def test_masks_depend_on_the_seed_and_pairs_differ() -> None:
    a, b = pool_masks(1000, 1, 8), pool_masks(1000, 2, 8)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a[0], a[2])


def test_records_inherit_their_patients_mask() -> None:
    masks = pool_masks(5, 0, 4)
    codes = np.array([0, 0, 1, 4, 4, 4, 2, 3])
    rec = record_masks(masks, codes)
    for r, p in enumerate(codes):
        np.testing.assert_array_equal(rec[:, r], masks[:, p])


def test_odd_model_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        pool_masks(10, 0, 5)


def test_model_seeds_are_deterministic_and_distinct() -> None:
    seeds = [model_seed(3, m) for m in range(200)]
    assert seeds == [model_seed(3, m) for m in range(200)]
    assert len(set(seeds)) == 200
    assert model_seed(4, 0) != model_seed(3, 0)
