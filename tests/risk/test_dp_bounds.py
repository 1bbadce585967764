"""AUC bounds implied by differential privacy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from tasks.risk.dp_bounds import auc_bound_from_epsilon_delta, auc_bound_gdp, gdp_mu


def _numeric_auc(eps: float, delta: float) -> float:
    alpha = np.linspace(0, 1, 200_001)
    beta = np.maximum.reduce([np.zeros_like(alpha), 1 - delta - np.exp(eps) * alpha, np.exp(-eps) * (1 - delta - alpha)])
    return float(np.trapezoid(1 - beta, alpha))


@pytest.mark.parametrize(("eps", "delta"), [(0.0, 0.0), (0.5, 1e-5), (1.0, 0.01), (3.0, 1e-3), (8.0, 0.1)])
def test_eps_delta_bound_matches_numerical_integral(eps, delta):
    assert auc_bound_from_epsilon_delta(eps, delta) == pytest.approx(_numeric_auc(eps, delta), abs=1e-8)


def test_eps_delta_edge_cases():
    assert auc_bound_from_epsilon_delta(0.0, 0.0) == 0.5
    assert auc_bound_from_epsilon_delta(math.inf, 0.0) == 1.0
    assert auc_bound_from_epsilon_delta(1000.0, 0.0) == 1.0
    assert auc_bound_from_epsilon_delta(0.0, 1.0) == 1.0
    with pytest.raises(ValueError):
        auc_bound_from_epsilon_delta(-1.0, 0.0)


def test_gdp_bound_formulas():
    sigma, q, t = 1.1, 256 / 60000, 3500
    mu_p = q * math.sqrt(t * (math.exp(sigma**-2) - 1))
    assert gdp_mu(sigma, q, t) == pytest.approx(mu_p)
    mu_u = math.sqrt(2) * q * math.sqrt(t) * math.sqrt(math.exp(sigma**-2) * norm.cdf(1.5 / sigma) + 3 * norm.cdf(-0.5 / sigma) - 2)
    assert gdp_mu(sigma, q, t, sampling="uniform") == pytest.approx(mu_u)
    assert auc_bound_gdp(sigma, q, t) == pytest.approx(norm.cdf(mu_p / math.sqrt(2)))
    # mu-GDP trade-off curve integrates to Phi(mu / sqrt 2)
    alpha = np.linspace(0, 1, 200_001)
    beta = norm.cdf(norm.ppf(1 - alpha) - mu_p)
    assert auc_bound_gdp(sigma, q, t) == pytest.approx(np.trapezoid(1 - beta, alpha), abs=1e-6)
    assert auc_bound_gdp(None, q, t) == 1.0
    assert auc_bound_gdp(0.0, q, t) == 1.0
    assert auc_bound_gdp(0.01, q, t) == 1.0  # overflow -> no privacy
    assert auc_bound_gdp(sigma, 0.0, t) == 0.5
    assert auc_bound_gdp(20.0, q, t) < auc_bound_gdp(1.0, q, t) < auc_bound_gdp(0.5, q, t)
