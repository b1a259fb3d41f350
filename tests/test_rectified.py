"""Rectified entire activations near |ρ| = 1: analytic part and thin wedge (docs/math.md §9b).

References: the arc-cosine closed forms of ReLU and ReLU^n (docs/math.md §6); ReSin
against mpmath on issue 9's grid, with no path and no quadrature, is
tests/test_hgm.py::test_near_diagonal_matches_mpmath.  Errors relative to the
Cauchy–Schwarz scale.
"""

from __future__ import annotations

import numpy as np
import pytest

import ntkhgm
from ntkhgm.activations import get_activation
from ntkhgm.duals import regions, second_moment
from ntkhgm.numeric.closed_forms import closed_form
from ntkhgm.numeric.hgm import HGMEvaluator

REGION = "near |ρ| = 1: analytic part and wedge series (f = Y·g)"


def _near(n: int, seed: int, amax: float = 50.0):
    """Pairs with 1 − |ρ| from 1e-13 to 0.1 (a quarter near ρ = −1), variances 0.01..amax."""
    rng = np.random.default_rng(seed)
    a = np.exp(rng.uniform(np.log(1e-2), np.log(amax), n))
    b = np.minimum(a * np.exp(rng.uniform(-1.5, 1.5, n)), amax)
    t = 10 ** rng.uniform(-13, -1, n)
    rho = np.where(rng.random(n) < 0.25, -1.0, 1.0) * (1 - t)
    return a, b, rho * np.sqrt(a * b), t


def _no_paths(monkeypatch):
    def refuse(self, *args):
        raise AssertionError("a pair near |ρ| = 1 left the rectified route")

    monkeypatch.setattr(HGMEvaluator, "_paths", refuse)
    monkeypatch.setattr(HGMEvaluator, "_fallback", refuse)


@pytest.mark.parametrize("name", ["relu", "relu2", "relu3"])
@pytest.mark.parametrize("derivative", [False, True])
def test_rectified_monomials_match_the_arc_cosine_kernels(monkeypatch, name, derivative):
    """g = uⁿ: every pair near |ρ| = 1 by the analytic part and the wedge, against the
    closed form, to 1e-13 of the scale (or the conditioning limit of σ' = n·u^{n−1}·Y)."""
    _no_paths(monkeypatch)
    a, b, c, t = _near(400, seed=1)
    got = ntkhgm.dual(name, a, b, c, derivative=derivative, method="series+hgm")
    exact = closed_form(name, derivative)(a, b, c)
    scale = np.sqrt(closed_form(name, derivative)(a, a, a) * closed_form(name, derivative)(b, b, b))
    err = np.abs(got - exact) / scale
    # the closed form's own rounding near |ρ| = 1: arccos of ρ computed from c
    limit = np.maximum(1e-13, 4e-16 / np.sqrt(t))
    assert np.all(err <= limit), np.column_stack([a, b, c / np.sqrt(a * b), err])[err > limit]
    counts = regions(name, a, b, c, derivative=derivative, method="series+hgm")
    assert counts.get(REGION, 0) > 0.9 * a.size, counts


def test_values_do_not_depend_on_the_batch():
    """A pair's value is the same alone and among others (kernel tiles rely on it)."""
    a, b, c, _ = _near(200, seed=2, amax=20.0)
    for derivative in (False, True):
        together = ntkhgm.dual("resin", a, b, c, derivative=derivative)
        alone = np.array([ntkhgm.dual("resin", a[i:i + 1], b[i:i + 1], c[i:i + 1],
                                      derivative=derivative)[0] for i in range(0, 200, 17)])
        assert np.array_equal(alone, together[::17])


def test_continuous_up_to_rho_one():
    """From 1 − |ρ| = 1e-15 to the degenerate pair (the 1-D integral): no jump."""
    a, b = 3.0, 5.0
    for derivative in (False, True):
        scale = np.sqrt(second_moment("resin", a, derivative=derivative)
                        * second_moment("resin", b, derivative=derivative))
        for sign in (1.0, -1.0):
            rho = sign * np.array([1 - 1e-15, 1.0])
            d = ntkhgm.dual("resin", np.full(2, a), np.full(2, b), rho * np.sqrt(a * b),
                            derivative=derivative)
            # σ': √(1−ρ) kink term, 2e-16/√1e-15 ≈ 1e-8 of conditioning plus √(2·1e-15)
            assert abs(d[0] - d[1]) <= (1e-7 if derivative else 1e-13) * scale


def test_activations_declare_their_rectified_part():
    """g's Taylor coefficients and g agree (the data the route relies on)."""
    u = np.linspace(0.1, 2.0, 7)
    for name in ("relu", "relu2", "relu3", "resin"):
        act = get_activation(name)
        for derivative in (False, True):
            part = act.rectified_of(derivative)
            coef = part.taylor(40)
            series = np.polynomial.polynomial.polyval(u, coef)
            assert np.allclose(series, part.g(u), rtol=1e-14, atol=0)
            assert np.allclose(series, act.function(derivative)(u), rtol=1e-14, atol=0)
    assert get_activation("gelu").rectified is None


def test_clustered_kernel_agrees_with_the_pfaffian_paths():
    """A depth-3 ReSin NTK of clustered rows with near-duplicates (1 − ρ down to 1e-6 and
    an exact duplicate): auto (this route near |ρ| = 1) against method hgm (Pfaffian paths
    from c = 0 and local solutions at |ρ| = 1, itself checked against mpmath in
    tests/test_hgm.py to 1e-12 of each dual's scale), to 5e-12 of max|K| (three layers
    of that contract; measured 1.6e-12, at a pair where hgm's σ dual errs by 1.7e-13 and
    this route's by 1e-16 against mpmath); the duplicate rows stay equal."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((3, 6))
    X = centres[rng.integers(0, 3, 14)] + 0.05 * rng.standard_normal((14, 6))
    X = np.vstack([X, X[0] + 1e-3 * rng.standard_normal(6), X[1]])
    K = ntkhgm.kernel(X, activation="resin", depth=3)
    K_paths = ntkhgm.kernel(X, activation="resin", depth=3, method="hgm")
    assert np.max(np.abs(K - K_paths)) <= 5e-12 * np.abs(K).max()
    assert np.array_equal(K[1], K[-1]) and K[1, -1] == K[1, 1]
    # the same rows on the unit sphere (one variance per layer: the Chebyshev route, its
    # near pairs by the series, then this route)
    S = X / np.linalg.norm(X, axis=1, keepdims=True)
    K = ntkhgm.kernel(S, activation="resin", depth=3)
    K_paths = ntkhgm.kernel(S, activation="resin", depth=3, method="hgm")
    assert np.max(np.abs(K - K_paths)) <= 5e-12 * np.abs(K).max()


def test_large_variances_are_refused_not_wrong():
    """At a = 400 the Hermite coefficients of g = sin(√a z) peak near n = a, beyond the 256
    the analytic part uses: the route refuses the pair (NaN, on to the Pfaffian paths)
    instead of summing a truncated series; at a = 100 it serves it, against mpmath."""
    import mpmath_reference as ref

    act = get_activation("resin")
    ev = HGMEvaluator(act.function(False), None, annihilator=act.annihilator_of(False),
                      rectified=act.rectified_of(False))
    sa = np.sqrt(np.array([100.0, 400.0]))
    theta = np.arccos(1 - np.array([1e-4, 1e-6]))
    got = ev._rectified_near(sa, sa, theta, sa, np.arange(2), np.arange(2))
    assert np.isnan(got[1])
    exact = float(ref.dual("resin", False, 100.0, 100.0, 100.0 * (1 - 1e-4)))
    scale = float(ref.second_moment("resin", False, 100.0))
    assert abs(got[0] - exact) <= 1e-12 * scale


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_gauss_laguerre_integrates_moments_exactly(alpha):
    """The rule of n nodes integrates s^k s^α e^{−s} (= Γ(k + α + 1)) for k ≤ 2n − 1 (up to
    k = 60, beyond which s^k overflows at the largest nodes); the sum's rounding grows
    with k, hence 1e-13."""
    from scipy.special import gamma

    from ntkhgm.numeric.quadrature import gauss_laguerre

    for n in (2, 6, 18, 66):
        s, w = gauss_laguerre(n, alpha)
        assert np.all(s > 0) and np.all(w > 0) and np.all(np.diff(s) > 0)
        for k in range(min(2 * n, 61)):
            exact = gamma(k + alpha + 1)
            assert abs(np.sum(w * s**k) - exact) <= 1e-13 * exact, (n, k)
