"""The per-pair kernels of the series (issue 14) against independent references, and the
project's rule that a pair's value does not depend on the block or batch it lands in."""

from __future__ import annotations

import numpy as np

from ntkhgm.numeric.covariance import _sqrt_product_scaled, sqrt_product
from ntkhgm.numeric.hermite_series import SMALL_SUM, chebyshev_sum, series_sum
from ntkhgm.numeric.hgm import unique_inverse

RNG = np.random.default_rng(14)


def _pairs(V=50, P=20_000, K=40):
    H = RNG.standard_normal((K + 1, V)) / (1 + np.arange(K + 1))[:, None]
    return H, RNG.integers(0, V, P), RNG.integers(0, V, P), RNG.uniform(-0.95, 0.95, P)


def test_series_sum_matches_the_plain_sum():
    H, ia, ib, rho = _pairs()
    K = H.shape[0] - 1
    powers = rho[None, :] ** np.arange(K + 1)[:, None]
    ref = np.sum(powers * H[:, ia] * H[:, ib], axis=0)
    scale = np.sqrt(np.sum(H[:, ia] ** 2, axis=0) * np.sum(H[:, ib] ** 2, axis=0))
    assert np.max(np.abs(series_sum(H, ia, ib, rho, K) - ref) / scale) <= 1e-15


def test_series_sum_does_not_depend_on_the_block():
    H, ia, ib, rho = _pairs()
    whole = series_sum(H, ia, ib, rho, 40)
    for block in (1, 7, 8192, 1 << 20):
        assert np.array_equal(series_sum(H, ia, ib, rho, 40, block=block), whole)
    part = series_sum(H, ia[123:456], ib[123:456], rho[123:456], 40)
    assert np.array_equal(part, whole[123:456])
    # a few pairs take the all-terms-at-once path, many the blocks: the same values
    assert part.size * 41 <= SMALL_SUM < whole.size * 41


def test_chebyshev_sum_is_numpys_clenshaw():
    x = RNG.uniform(-1, 1, 30_000)
    for degree in (1, 2, 3, 24, 97):
        c = RNG.standard_normal(degree)
        assert np.array_equal(chebyshev_sum(c, x, block=1000),
                              np.polynomial.chebyshev.chebval(x, c))


def test_unique_inverse_is_numpys_unique():
    q = RNG.uniform(0.5, 3.0, 300)
    pa, pb = np.triu_indices(300, 1)
    for x in (np.concatenate([q[pa], q[pb]]), RNG.uniform(0, 1, 100_000),
              np.concatenate([q[pa], RNG.uniform(0, 1, 500)])):
        vals, inv = unique_inverse(x)
        ref_vals, ref_inv = np.unique(x, return_inverse=True)
        assert np.array_equal(vals, ref_vals) and np.array_equal(inv, ref_inv)


def test_sqrt_product_fast_path_is_the_scaled_one():
    a = 10.0 ** RNG.uniform(-320, 308, 50_000)
    b = 10.0 ** RNG.uniform(-320, 308, 50_000)
    a[:5] = 0.0
    assert np.array_equal(sqrt_product(a, b), _sqrt_product_scaled(a, b))
    assert sqrt_product(2.0, 2.0) == 2.0
