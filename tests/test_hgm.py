"""The HGM evaluator against independent references (issue 4).

Errors are relative to the Cauchy–Schwarz scale √(E f(u)² E f(v)²) (README,
"Error convention"); references are closed forms (math.md §6) and mpmath.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import mpmath_reference as ref
import numpy as np
import pytest
import sympy as sp

import ntkhgm
from ntkhgm.duals import second_moment
from ntkhgm.numeric.hgm import HGMEvaluator

SPECIAL_RHOS = [1 - 1e-8, -1 + 1e-8, 0.999999, -0.999999, 1 - 1e-14, 1.0, -1.0, 0.0, 0.95]


def _points(n=60, seed=7):
    rng = np.random.default_rng(seed)
    k = n - len(SPECIAL_RHOS)
    a = np.exp(rng.uniform(np.log(1e-2), np.log(50), n))
    b = np.exp(rng.uniform(np.log(1e-2), np.log(50), n))
    rho = np.concatenate([rng.uniform(-1, 1, k), SPECIAL_RHOS])
    return a, b, rho * np.sqrt(a * b)


def _scale(name, derivative, a, b):
    return np.sqrt(second_moment(name, a, derivative=derivative, method="quad")
                   * second_moment(name, b, derivative=derivative, method="quad"))


@pytest.mark.parametrize("name, derivative", [
    ("relu", False), ("relu", True), ("relu2", False), ("relu2", True), ("normcdf", False),
    ("normcdf", True), ("erf", False), ("erf", True), ("sin", False), ("sin", True)])
def test_hgm_matches_closed_forms(name, derivative):
    a, b, c = _points()
    got = ntkhgm.dual(name, a, b, c, derivative=derivative, method="hgm")
    exact = ntkhgm.dual(name, a, b, c, derivative=derivative, method="closed")
    err = np.abs(got - exact) / _scale(name, derivative, a, b)
    assert err.max() <= 1e-10, (err.max(), int(err.argmax()))


RESIN_POINTS = [(2.0, 0.5, 0.3), (0.01, 50.0, -0.4), (3.0, 3.0, 3.0 * (1 - 1e-9)),
                (1.0, 4.0, -2.0 * 0.999999), (25.0, 0.2, 0.0), (5.0, 5.0, -5.0),
                (0.3, 0.4, 0.98 * np.sqrt(0.12)), (10.0, 20.0, 0.93 * np.sqrt(200.0))]


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", ["resin", "gelu"])
def test_hgm_matches_mpmath(name, derivative):
    a, b, c = (np.array(v) for v in zip(*RESIN_POINTS, strict=True))
    got = ntkhgm.dual(name, a, b, c, derivative=derivative, method="hgm")
    exact = np.array([float(ref.dual(name, derivative, *p)) for p in RESIN_POINTS])
    scale = np.sqrt([float(ref.second_moment(name, derivative, x) *
                           ref.second_moment(name, derivative, y)) for x, y in zip(a, b,
                                                                                 strict=True)])
    assert np.max(np.abs(got - exact) / scale) <= 1e-10


def test_batched_and_single_point_agree():
    a, b, c = _points(30, seed=3)
    for name in ("relu", "resin"):
        batch = ntkhgm.dual(name, a, b, c, method="hgm")
        single = np.array([ntkhgm.dual(name, x, y, z, method="hgm")
                           for x, y, z in zip(a, b, c, strict=True)])
        scale = np.sqrt(second_moment(name, a) * second_moment(name, b))
        assert np.max(np.abs(batch - single) / scale) <= 1e-12


# --- the numeric pipeline fed with math.md §4's published ReLU Pfaffian -------------

@dataclass(frozen=True)
class _RF:
    num: dict
    den: dict


@dataclass(frozen=True)
class _System:
    std_monomials: tuple
    matrices: dict


def _mathmd_relu_system():
    x11, x12, x22 = sp.symbols("x11 x12 x22")
    D = x12 ** 2 - x11 * x22
    P11 = sp.Matrix([[-1 / x11, -x12 / (2 * x11)],
                     [2 * x12 / (x11 * D), (2 * x12 ** 2 + 3 * x11 * x22) / (2 * x11 * D)]])
    P12 = sp.Matrix([[0, 1], [-4 / D, -5 * x12 / D]])
    P22 = P11.subs({x11: x22, x22: x11}, simultaneous=True)

    def poly(e):
        p = sp.Poly(sp.expand(e), x11, x12, x22)
        return {m: Fraction(int(c.p), int(c.q)) for m, c in p.terms()}

    def rf(e):
        n, d = sp.fraction(sp.together(e))
        return _RF(poly(n), poly(d))

    return _System(((0, 0, 0), (0, 1, 0)),
                   {k: tuple(tuple(rf(M[i, j]) for j in range(2)) for i in range(2))
                    for k, M in (("x11", P11), ("x12", P12), ("x22", P22))})


def test_ode_with_the_published_relu_pfaffian(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(tmp_path))
    ev = HGMEvaluator(lambda u: np.maximum(u, 0.0), _mathmd_relu_system(), mode="hgm")
    a, b, c = _points(40, seed=11)
    theta = np.arccos(np.clip(c / np.sqrt(a * b), -1, 1))
    keep = (theta > 0) & (theta < np.pi)
    # the Pfaffian paths alone, on every non-degenerate point, up to |ρ| = 1 − 1e-14
    got = ev._paths(np.sqrt(a[keep]), np.sqrt(b[keep]), theta[keep])
    assert np.all(np.isfinite(got))             # no path was left to the fallback
    exact = ntkhgm.dual("relu", a[keep], b[keep], c[keep], method="closed")
    assert np.max(np.abs(got - exact) / (np.sqrt(a[keep] * b[keep]) / 2)) <= 1e-12


# --- kernels ---------------------------------------------------------------------

def _data_with_duplicates(seed=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((25, 4))
    X[3] = X[7]                                # duplicate
    # near-duplicate, 1 − ρ ≈ 1e-9; closer ones make the NTK itself ill-conditioned:
    # σ' = Y gives D_σ' ∝ arccos ρ, which turns rounding ε in Λ into √ε
    X[10] = X[11] + 1e-4 * rng.standard_normal(4)
    X[12] = -X[13]                             # antipodal
    X[14] = 0.0                                # zero row
    return X


@pytest.mark.parametrize("name", ["relu", "erf"])
def test_kernel_hgm_matches_closed(name):
    X = _data_with_duplicates()
    for kind in ("ntk", "nngp"):
        K = ntkhgm.kernel(X, activation=name, depth=3, kind=kind, method="hgm")
        Kc = ntkhgm.kernel(X, activation=name, depth=3, kind=kind, method="closed")
        assert np.max(np.abs(K - Kc) / np.abs(Kc).max()) <= 1e-10
        assert np.array_equal(K, K.T)


def test_sphere_data_uses_one_interpolant_and_stays_exact():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    K = ntkhgm.kernel(X, activation="relu", depth=3, method="hgm")
    Kc = ntkhgm.kernel(X, activation="relu", depth=3, method="closed")
    assert np.max(np.abs(K - Kc) / np.abs(Kc).max()) <= 1e-12


def test_auto_prefers_closed_forms_then_hgm():
    from ntkhgm.duals import resolve_method

    assert resolve_method("resin") == "series+hgm"
    assert resolve_method("relu") == "closed"
    assert resolve_method("gelu", npoints=10) == "closed"
    assert resolve_method("gelu", True) == "closed"


def test_path_failure_goes_to_the_fallback_and_strict_paths_raise(monkeypatch):
    from ntkhgm.errors import IntegrationError
    from ntkhgm.numeric import batched_rk
    from ntkhgm.numeric.pfaffian_ode import PathEvaluator, integrate_paths

    monkeypatch.setattr(batched_rk, "_run", lambda rhs, y0, idx, n: y0 * n)  # never converges
    ev = HGMEvaluator(lambda u: np.maximum(u, 0.0), _mathmd_relu_system(), mode="hgm")
    a, b, c = np.array([2.0, 2.0]), np.array([3.0, 3.0]), np.array([0.3, 0.9999]) * np.sqrt(6.0)
    got = ev(a, b, c)           # every path fails: the reference quadrature answers
    exact = ntkhgm.dual("relu", a, b, c, method="closed")
    assert np.max(np.abs(got - exact)) <= 1e-12 * np.sqrt(6.0) / 2
    with pytest.raises(IntegrationError, match="did not reach"):
        integrate_paths(PathEvaluator(ev.rs, np.sqrt([2.0]), np.sqrt([3.0])),
                        np.ones((1, 2)), np.array([0.01]))


def test_path_through_a_singular_point_is_a_typed_error(tmp_path, monkeypatch):
    """A system whose coefficients have a pole at x12 = 1 inside the cone."""
    from ntkhgm.errors import SingularityError

    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(tmp_path))
    one = {(0, 0, 0): Fraction(1)}
    zero = _RF({}, one)
    pole = _RF(one, {(0, 1, 0): Fraction(1), (0, 0, 0): Fraction(-1)})   # 1/(x12 − 1)
    system = _System(((0, 0, 0),), {"x11": ((zero,),), "x12": ((pole,),), "x22": ((zero,),)})
    ev = HGMEvaluator(lambda u: np.maximum(u, 0.0), system, mode="hgm")
    # a = b = 1: x12 = ρ/(2(1 − ρ²)) crosses 1 at ρ ≈ 0.78; the path from c = 0 meets it
    with pytest.raises(SingularityError, match=r"singular point.*Λ = \[\[1\.0"):
        ev._paths(np.array([1.0]), np.array([1.0]), np.array([np.arccos(0.85)]))


# --- near the diagonal (issue 9, docs/math.md §9) ----------------------------------------

NEAR_RHOS = [0.99, 0.999, 0.9999, 0.99999, 1 - 1e-7, 1 - 1e-9, 1 - 1e-11, -0.9999, -(1 - 1e-8)]
NEAR_VARIANCES = [(0.01, 0.02), (1.0, 1.0), (2.0, 0.5), (20.0, 40.0)]


def _near_points():
    pts = [(a, b, r * np.sqrt(a * b)) for a, b in NEAR_VARIANCES for r in NEAR_RHOS]
    return tuple(np.array(v) for v in zip(*pts, strict=True))


def _mpmath_errors(name, derivative, a, b, c, got):
    exact = np.array([float(ref.dual(name, derivative, *p)) for p in zip(a, b, c, strict=True)])
    scale = np.sqrt([float(ref.second_moment(name, derivative, x)
                           * ref.second_moment(name, derivative, y))
                     for x, y in zip(a, b, strict=True)])
    return np.abs(got - exact) / scale


@pytest.mark.slow
@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", ["resin", "gelu"])
def test_near_diagonal_matches_mpmath(monkeypatch, name, derivative):
    """≤ 1e-12 of the Cauchy–Schwarz scale, or the float64 conditioning limit
    2e-16/√(1−|ρ|) where that is larger (σ' of a kink), from ρ = 0.99 to 1 − 1e-11, by
    the holonomic route (``series+hgm``: what ``auto`` is for ReSin; GELU's ``auto`` is its
    closed form, tested in tests/test_numeric_duals.py).  ReSin's pairs take no Pfaffian
    path and no quadrature (docs/math.md §9b)."""
    if name == "resin":
        def refuse(self, *args):
            raise AssertionError("a ReSin pair near |ρ| = 1 left the rectified route")

        monkeypatch.setattr(HGMEvaluator, "_paths", refuse)
        monkeypatch.setattr(HGMEvaluator, "_fallback", refuse)
    a, b, c = _near_points()
    got = ntkhgm.dual(name, a, b, c, derivative=derivative, method="series+hgm")
    err = _mpmath_errors(name, derivative, a, b, c, got)
    rho = np.abs(c) / np.sqrt(a * b)
    limit = np.maximum(1e-12, 2e-16 / np.sqrt(1 - rho))
    assert np.all(err <= limit), np.column_stack([a, b, c, err])[err > limit]


@pytest.mark.parametrize("derivative", [False, True])
def test_resin_is_holonomic_up_to_the_diagonal(monkeypatch, derivative):
    """ReSin's σ and σ′ near |ρ| = 1: every pair by its Pfaffian system (no series tail, no
    quadrature), to 1e-12 of the scale (or the conditioning limit of σ′), at a cost that
    does not depend on how near |ρ| = 1 the pair is (docs/math.md §9)."""
    from ntkhgm.numeric import pfaffian_ode

    def no_fallback(self, *args):
        raise AssertionError("a pair left the Pfaffian paths")

    monkeypatch.setattr(HGMEvaluator, "_fallback", no_fallback)
    a, b, c = _near_points()
    got = ntkhgm.dual("resin", a, b, c, derivative=derivative, method="hgm")
    rho = np.abs(c) / np.sqrt(a * b)
    err = _mpmath_errors("resin", derivative, a, b, c, got)
    assert np.all(err <= np.maximum(1e-12, 2e-16 / np.sqrt(1 - rho))), err

    work = []
    sylvester = pfaffian_ode.FrobeniusSolutions._sylvester
    matrix = pfaffian_ode.EndPathEvaluator.matrix
    monkeypatch.setattr(pfaffian_ode.FrobeniusSolutions, "_sylvester",
                        lambda self, X, k: work.append(X.shape[0]) or sylvester(self, X, k))
    monkeypatch.setattr(pfaffian_ode.EndPathEvaluator, "matrix",
                        lambda self, t, idx: work.append(idx.size) or matrix(self, t, idx))
    cost = {}
    for gap in (1e-3, 1e-8, 1e-14):
        work.clear()
        ntkhgm.dual("resin", 1.3, 0.7, (1 - gap) * np.sqrt(0.91), derivative=derivative,
                    method="hgm")
        cost[gap] = sum(work)
    assert cost[1e-3] == cost[1e-8] == cost[1e-14] > 0, cost


def test_reduced_residues_are_non_resonant():
    """After the shearing stages the residue at |ρ| = 1 has the exponents {0, ½} for resin,
    resin′ and gelu, at every variance (docs/math.md §9)."""
    from ntkhgm.duals import _pfaffian
    from ntkhgm.numeric.pfaffian_ode import EndPathEvaluator, residue_exponents

    for name, derivative in (("resin", False), ("resin", True), ("gelu", False)):
        act = ntkhgm.get_activation(name)
        ev = HGMEvaluator(act.function(derivative), _pfaffian(act, derivative))
        es, spectrum = ev.end_system(1)
        assert residue_exponents(spectrum) == (0.0, 0.5)
        paths = EndPathEvaluator(es, np.sqrt([0.01, 2.0, 20.0]), np.sqrt([0.02, 0.5, 40.0]))
        assert np.all(paths.spectrum > -1e-6) and np.all(paths.spectrum < 1 - 1e-6)


def test_near_diagonal_paths_that_fail_their_check_go_to_the_fallback(monkeypatch):
    """A local solution whose limit at |ρ| = 1 misses the 1-D integral is not used: here
    every evaluation of the local solutions is spoilt by 1e-9, and the reference
    quadrature answers."""
    from ntkhgm.duals import _pfaffian
    from ntkhgm.numeric import pfaffian_ode

    evaluate = pfaffian_ode.FrobeniusSolutions.evaluate
    monkeypatch.setattr(pfaffian_ode.FrobeniusSolutions, "evaluate",
                        lambda self, c, t1, t: evaluate(self, c, t1, t) + 1e-9)
    a, b = np.array([1.0, 2.0]), np.array([1.0, 0.5])
    c = np.array([0.999, 1 - 1e-9]) * np.sqrt(a * b)
    resin = ntkhgm.get_activation("resin")
    ev = HGMEvaluator(resin.function(False), _pfaffian(resin, False), mode="hgm")
    got = ev(a, b, c)
    assert ev.regions["fallback: reference quadrature"] == 2
    assert ev.regions["Pfaffian local solutions at |ρ| = 1 (Frobenius)"] == 0
    assert np.max(_mpmath_errors("resin", False, a, b, c, got)) <= 1e-12


def test_gelu_uses_its_series_up_to_the_diagonal():
    """GELU's paths near |ρ| = 1 fail the check at the reference point (rounding in its
    reduction grows with its t^−2 solutions), so `auto` does not try them: the series,
    which reaches |ρ| = 1 for an entire function, answers."""
    from ntkhgm.duals import _LAST_EVALUATOR

    a, b, c = _near_points()
    ntkhgm.dual("gelu", a, b, c, method="series+hgm")      # (auto: the closed form)
    ev = _LAST_EVALUATOR["gelu", False, "auto"]
    assert ev._end_paths_hold() is False
    assert not any("Pfaffian" in k and v for k, v in ev.regions.items()), ev.regions


@pytest.mark.cas
def test_user_activation_with_an_irregular_point_near_the_diagonal(monkeypatch):
    """Y(u)·cos u as a user activation: its system has a double pole at |ρ| = 1; pairs
    near the diagonal are evaluated by the reduced Pfaffian paths, not by quadrature."""
    from click.testing import CliRunner

    from ntkhgm.cli import main

    res = CliRunner().invoke(main, ["pfaffian", "--annihilator", "u^2*du^2+u^2",
                                    "--name", "ycos", "--sigma", "step(u)*cos(u)", "--quiet"])
    assert res.exit_code == 0, res.output

    def no_fallback(self, *args):
        raise AssertionError("a pair left the Pfaffian paths")

    monkeypatch.setattr(HGMEvaluator, "_fallback", no_fallback)
    a = np.array([1.0, 2.0, 0.5, 1.5])
    b = np.array([1.0, 0.5, 3.0, 1.5])
    rho = np.array([0.999, 1 - 1e-7, -(1 - 1e-9), 1 - 1e-12])
    c = rho * np.sqrt(a * b)
    got = ntkhgm.dual("ycos", a, b, c, method="hgm")
    err = _mpmath_errors("resin", True, a, b, c, got)   # Y(u) cos u is resin's σ'
    assert np.all(err <= np.maximum(1e-12, 2e-16 / np.sqrt(1 - np.abs(rho)))), err


@pytest.mark.parametrize("end", [1, -1])
def test_shift_to_t_is_exact(end):
    """The re-expansion in t = 1 − end·ρ (EndSystem) against sympy's, exactly."""
    from ntkhgm.numeric.pfaffian_ode import _shift_terms

    rng = np.random.default_rng(3)
    terms = [(int(a), int(b), int(c), Fraction(int(p), int(q)))
             for a, b, c, p, q in zip(rng.integers(0, 3, 40), rng.integers(0, 3, 40),
                                      rng.integers(0, 9, 40), rng.integers(-50, 50, 40),
                                      rng.integers(1, 30, 40), strict=True)]
    sa, sb, rho, t = sp.symbols("sa sb rho t")
    poly = sum(sp.Rational(c.numerator, c.denominator) * sa ** a * sb ** b * rho ** k
               for a, b, k, c in terms)
    expected = sp.Poly(sp.expand(poly.subs(rho, end * (1 - t))), sa, sb, t)
    got = _shift_terms(terms, end)
    assert {k: sp.Rational(v.numerator, v.denominator) for k, v in got.items()} == dict(
        expected.terms())


@dataclass
class _ScalarSystem:
    """t·den(t)·Y' = num(t)·Y with polynomial num (deg+1, paths, r, r), den (ddeg+1, paths):
    the interface :func:`taylor_steps` uses."""

    num: np.ndarray
    den: np.ndarray

    def subset(self, mask):
        return _ScalarSystem(self.num[:, mask], self.den[:, mask])


def test_taylor_steps_match_a_closed_form():
    """t·(1 + t)·Y' = (λ + κt)·Y has Y = Y(t₀)·(t/t₀)^λ·((1 + t)/(1 + t₀))^{κ−λ}
    (partial fractions): the steps reproduce it to 1e-14, decaying, growing or oscillating
    little, with steps shortened where κ is large."""
    from ntkhgm.numeric.pfaffian_ode import taylor_steps

    lam = np.array([0.0, 0.5, -1.0, 2.0])
    kappa = np.array([3.0, -20.0, 45.0, 0.0])
    num = np.stack([lam, kappa])[:, :, None, None]
    den = np.ones((2, 4))
    t0 = np.full(4, 0.1)
    t1 = np.array([0.0125, 0.05, 0.003, 0.1 / 64])
    got = taylor_steps(_ScalarSystem(num, den), np.ones((4, 1)), t0, t1, tol=1e-13)[:, 0]
    exact = (t1 / t0) ** lam * ((1 + t1) / (1 + t0)) ** (kappa - lam)
    assert np.all(np.abs(got - exact) <= 1e-14 * np.abs(exact)), got / exact - 1


@pytest.mark.parametrize("tol, refused", [(1e-13, True), (1e-10, False)])
def test_taylor_steps_refuse_what_rounding_would_spoil(tol, refused):
    """Y = ((1 + t)/1.1)^{−60} grows ~150× from t = 0.1 to 0.0125: its rounding, carried
    with that growth, is more than 1e-13 of the start, so the path is NaN (the caller
    evaluates it otherwise); at tol 1e-10 it is accepted, and right to that tolerance."""
    from ntkhgm.numeric.pfaffian_ode import taylor_steps

    num = np.array([[0.0], [-60.0]])[:, :, None, None]
    den = np.ones((2, 1))
    got = taylor_steps(_ScalarSystem(num, den), np.ones((1, 1)), np.array([0.1]),
                       np.array([0.0125]), tol=tol)[0, 0]
    exact = (1.0125 / 1.1) ** -60.0
    assert np.isnan(got) if refused else abs(got - exact) <= tol * exact


@pytest.mark.parametrize("derivative", [False, True])
def test_large_variances_step_by_taylor_series(monkeypatch, derivative):
    """Large variances, where the local solutions at |ρ| = 1 reach only t₁ < 0.1: the way
    from t = 0.1 to t₁ goes by Taylor steps (no Runge–Kutta), to 1e-12 of the scale."""
    from ntkhgm.numeric import pfaffian_ode

    def no_rk(*args, **kwargs):
        raise AssertionError("a path went by Runge–Kutta")

    monkeypatch.setattr(pfaffian_ode, "integrate_reduced", no_rk)
    steps = []
    taylor = pfaffian_ode.taylor_steps
    monkeypatch.setattr(pfaffian_ode, "taylor_steps",
                        lambda *a, **k: steps.append(a[1].shape[0]) or taylor(*a, **k))
    a = np.array([20.0, 30.0, 12.0, 25.0])
    b = np.array([40.0, 28.0, 15.0, 22.0])
    rho = np.array([1 - 3e-2, 1 - 1e-2, 1 - 1e-4, 1 - 1e-7])
    c = rho * np.sqrt(a * b)
    got = ntkhgm.dual("resin", a, b, c, derivative=derivative, method="hgm")
    assert sum(steps) > 0
    err = _mpmath_errors("resin", derivative, a, b, c, got)
    assert np.all(err <= np.maximum(1e-12, 2e-16 / np.sqrt(1 - rho))), err
