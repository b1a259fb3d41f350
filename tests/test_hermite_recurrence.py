"""Hermite coefficients by the annihilator's recurrence (docs/math.md §10) against quadrature
and mpmath: independent references, never the recurrence's own earlier output."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from ntkhgm.activations import get_activation, list_activations
from ntkhgm.numeric import hermite_series as hs
from ntkhgm.numeric.hermite_recurrence import HermiteRecurrence

CASES = [(act.name, d) for act in list_activations() if act.holonomic for d in (False, True)]
SA = np.sqrt(np.logspace(-2, np.log10(50.0), 13))


def _both(name, derivative, sa, kmax):
    act = get_activation(name)
    f = act.function(derivative)
    rec = hs.checked_recurrence(f, act.annihilator_of(derivative))
    assert rec is not None
    quad, second_q = hs.hermite_coefficients(f, sa, kmax)
    by_rec, second_r = hs.hermite_coefficients(f, sa, kmax, rec)
    return quad, by_rec, second_q, second_r


@pytest.mark.parametrize("name,derivative", CASES)
def test_recurrence_matches_quadrature(name, derivative):
    quad, by_rec, second_q, second_r = _both(name, derivative, SA, 256)
    err = np.max(np.abs(by_rec - quad), axis=0) / np.linalg.norm(quad, axis=0)
    assert np.max(err) <= 1e-14, err
    assert np.allclose(second_r, second_q, rtol=1e-13, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name,derivative", [("resin", False), ("resin", True),
                                             ("gelu", True)])
def test_recurrence_far_terms(name, derivative):
    quad, by_rec, _, _ = _both(name, derivative, np.sqrt([0.01, 1.0, 50.0]), 1024)
    err = np.max(np.abs(by_rec - quad), axis=0) / np.linalg.norm(quad, axis=0)
    assert np.max(err) <= 1e-14, err


def _mp_coefficient(f, a, n):
    """E[f(√a z) He_n(z)]/√(n!) by mpmath, split at the kink z = 0."""
    s = mp.sqrt(a)

    def he(z):
        p, q = mp.mpf(1), z
        for k in range(1, n):
            p, q = q, z * q - k * p
        return p if n == 0 else q

    def g(z):
        return f(s * z) * he(z) * mp.exp(-z * z / 2)

    val = mp.quad(g, [-40, -10, -3, 0, 3, 10, 40]) / mp.sqrt(2 * mp.pi)
    return val / mp.sqrt(mp.factorial(n))


@pytest.mark.parametrize("name,derivative,f,a,ns", [
    ("resin", False, lambda u: mp.sin(u) if u > 0 else mp.mpf(0), 2.0, (7, 30)),
    ("resin", True, lambda u: mp.cos(u) if u > 0 else mp.mpf(0), 40.0, (50, 120)),
    ("gelu", True, lambda u: mp.ncdf(u) + u * mp.npdf(u), 20.0, (25, 101)),
])
def test_recurrence_matches_mpmath(name, derivative, f, a, ns):
    act = get_activation(name)
    rec = hs.checked_recurrence(act.function(derivative), act.annihilator_of(derivative))
    H, _ = hs.hermite_coefficients(act.function(derivative), np.sqrt([a]), max(ns), rec)
    norm = np.linalg.norm(H)
    with mp.workdps(30):
        for n in ns:
            assert abs(H[n, 0] - float(_mp_coefficient(f, mp.mpf(a), n))) <= 1e-14 * norm


def test_relu_recurrence_is_the_documented_one():
    # (u∂ − 1) f = 0  ⇔  c_{n+2} = (1 − n) c_n  (docs/math.md §10)
    rec = HermiteRecurrence.from_annihilator("u*du-1")
    assert (rec.lo, rec.hi) == (0, 2)
    assert rec.coef[:, 1].tolist() == [[-1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]   # times s


def test_annihilator_valid_only_off_the_kink_is_refused():
    # du² kills u·Y(u) away from 0, but relu'' = δ: its recurrence is wrong, quadrature it is
    relu = get_activation("relu")
    assert hs.checked_recurrence(relu.sigma, "du^2") is None
    assert hs.checked_recurrence(relu.sigma, relu.annihilator) is not None


def test_a_column_does_not_depend_on_its_batch():
    act = get_activation("resin")
    rec = hs.checked_recurrence(act.dsigma, act.derivative_annihilator)
    batch, _ = hs.hermite_coefficients(act.dsigma, SA, 256, rec)
    for i in (0, 6, 12):
        alone, _ = hs.hermite_coefficients(act.dsigma, SA[i:i + 1], 256, rec)
        assert np.array_equal(alone[:, 0], batch[:, i])


@pytest.mark.parametrize("annihilator", ["u*du-1", "u*du", "du^2+1", "du^2+2*u*du", "du+u"])
def test_one_shift_runs_as_the_plain_steps(annihilator):
    """A recurrence with one shift j below hi runs as running products (docs/math.md §10):
    bit for bit the plain steps h_{n+hi} = R(n) h_{n+j} taken one n at a time, whatever the
    batch (columns of several n0 together, or alone)."""
    rec = HermiteRecurrence.from_annihilator(annihilator)
    assert rec is not None and rec.active.size == 1
    j, hi, kmax = rec.lo + int(rec.active[0]), rec.hi, 600
    sa = np.sqrt(np.array([0.02, 0.7, 3.0, 40.0, 300.0]))
    n0 = np.maximum(rec.start(sa), [0, 3, 8, 64, 256])      # several starts in one batch
    rng = np.random.default_rng(1)
    H = np.zeros((kmax + 1, sa.size))
    for c in range(sa.size):
        H[: min(int(n0[c]) + hi, kmax + 1), c] = rng.standard_normal(min(int(n0[c]) + hi,
                                                                         kmax + 1))
    with np.errstate(all="ignore"):
        got = rec.run(H.copy(), sa, n0)
        for c in range(sa.size):
            h = H[:, c].copy()
            steps = np.arange(min(int(n0[c]), kmax), kmax - hi + 1)
            R = rec.ratios(steps, sa[c:c + 1])[:, 0, 0]
            for t, n in enumerate(steps):
                h[n + hi] = R[t] * h[n + j] if n + j >= 0 else 0.0
            assert np.array_equal(got[:, c], h, equal_nan=True), (annihilator, c)
            alone = rec.run(H[:, c:c + 1].copy(), sa[c:c + 1], n0[c:c + 1])
            assert np.array_equal(alone[:, 0], got[:, c], equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("name,derivative", [("resin", True), ("gelu", False)])
def test_far_series_extends_its_coefficients(name, derivative):
    """The far series' bins continue the recurrence from the previous bin's last
    coefficients (HGMEvaluator._extend): equal to the quadrature to 1e-14 of the norm."""
    from ntkhgm.numeric.hgm import HGMEvaluator

    act = get_activation(name)
    f = act.function(derivative)
    ev = HGMEvaluator(f, None, mode="series", annihilator=act.annihilator_of(derivative))
    sa = np.sqrt([0.01, 1.0, 50.0])
    first = ev.coefficients(sa, 512)
    H, second = ev._extend((sa, *first), sa[[0, 2]], 1024)
    quad, second_q = hs.hermite_coefficients(f, sa[[0, 2]], 1024)
    err = np.max(np.abs(H - quad), axis=0) / np.linalg.norm(quad, axis=0)
    assert np.max(err) <= 1e-14, err
    assert np.allclose(second, second_q, rtol=1e-13, atol=0)


@pytest.mark.parametrize("derivative", [False, True])
def test_float64_below_the_measured_limit(derivative):
    """GELU's recurrence runs in long double, save for the variances whose float64 run was
    measured not to drift (≤ 1e-15 at the grid of variances, docs/math.md §10): between the
    grid points they agree with a long-double run to 3e-15 of the ℓ² norm over 2048 terms
    (measured: ≤ 1.4e-15; the series' tolerance is 1e-13), and a column does not depend on
    its batch across the limit."""
    act = get_activation("gelu")
    f = act.function(derivative)
    rec = hs.checked_recurrence(f, act.annihilator_of(derivative))
    assert rec.dtype == np.longdouble and rec.float64_limit >= 2.0
    sa = np.sqrt(np.linspace(0.5, 30.0, 40))
    split, _ = hs.hermite_coefficients(f, sa, 2048, rec)
    longd, _ = hs.hermite_coefficients(f, sa, 2048, rec.with_dtype(np.longdouble))
    cheap = sa <= rec.float64_limit
    assert np.any(cheap) and not np.all(cheap)
    assert np.array_equal(split[:, ~cheap], longd[:, ~cheap])
    drift = np.max(np.abs(split - longd), axis=0) / np.linalg.norm(longd, axis=0)
    assert np.all(drift <= 3e-15), drift
    alone = hs.hermite_coefficients(f, sa[[3]], 2048, rec)[0][:, 0]
    assert np.array_equal(alone, split[:, 3])


def _declared_cases():
    acts = list_activations() + [get_activation(f"relu{n}") for n in range(4, 10)]
    for act in acts:
        for d in (False, True):
            if act.annihilator_of(d) is not None:
                yield f"{act.name}-{int(d)}", act.function(d), act.annihilator_of(d), \
                    act.precision_of(d)
            part = act.rectified_of(d)
            if part is not None:
                yield f"{act.name}-{int(d)}-g", part.g, part.annihilator, part.precision


@pytest.mark.parametrize("label,f,annihilator,declared",
                         list(_declared_cases()), ids=lambda x: x if isinstance(x, str) else "")
def test_declared_precision_is_the_measured_one(label, f, annihilator, declared):
    """The catalog declares its recurrences' precision (saving the per-process check): the
    declaration must be what the check measures here (float64 drift against long double,
    docs/math.md §10), and a declared recurrence must reproduce f's quadrature."""
    measured = hs._checked_recurrence(f, annihilator)
    assert declared is not None, f"{label}: no declared precision"
    if measured is None:
        assert hs.checked_recurrence(f, annihilator, declared) is None
        return
    assert (np.dtype(measured.dtype).name, measured.float64_limit) == \
        (np.dtype(declared[0]).name, declared[1]), label
    rec = hs.checked_recurrence(f, annihilator, declared)
    sa = np.sqrt([0.05, 2.0, 30.0])
    quad, _ = hs.hermite_coefficients(f, sa, 256)
    by_rec, _ = hs.hermite_coefficients(f, sa, 256, rec)
    err = np.max(np.abs(by_rec - quad), axis=0) / np.linalg.norm(quad, axis=0)
    assert np.max(err) <= 1e-14, (label, err)
