"""Kernels against neural-tangents 0.6.5 (float64) reference values (issue 2)."""

from __future__ import annotations

import numpy as np
import pytest

import ntkhgm

X = np.array([[1.0, 0.5, -0.3], [0.2, -1.1, 0.7], [-0.6, 0.4, 1.3], [0.9, 0.9, 0.1]])
NT_ROW0 = {
    ("relu", 1, 1.0, 0.0): [0.4466666666666667, 0.004341581067669478,
                            -0.010581565487676775, 0.4099288784993532],
    ("relu", 3, 1.5, 0.1): [5.8512109375, 1.3828710653671497, 1.4667057107345784,
                            4.772911122518799],
    ("erf", 3, 1.5, 0.1): [6.086493979753783, -1.1248749808812435, -1.4696632053071554,
                           4.518856422564241],
    ("sin", 1, 1.0, 0.0): [0.6100966604403629, -0.22604096876593233, -0.2982316809059926,
                           0.5715452641776833],
}


@pytest.mark.parametrize("case", list(NT_ROW0))
def test_nt_convention_matches_neural_tangents(case):
    act, depth, w, b = case
    K = ntkhgm.kernel(X, activation=act, depth=depth, convention="nt", W_std=w, b_std=b)
    np.testing.assert_allclose(K[0], NT_ROW0[case], rtol=1e-10)
    assert np.array_equal(K, K.T)
    K12 = ntkhgm.kernel(X[:2], X, activation=act, depth=depth, convention="nt", W_std=w,
                        b_std=b)
    np.testing.assert_allclose(K12, K[:2], rtol=1e-13)


def test_arora_relu_against_arc_cosine_recursion():
    """Arora et al.'s ReLU NTK written out with the arc-cosine formulas (cσ = 2)."""
    Xn = X
    S = Xn @ Xn.T
    theta = S.copy()
    for _ in range(2):
        d = np.sqrt(np.diag(S))
        r = np.clip(S / np.outer(d, d), -1, 1)
        t = np.arccos(r)
        np.fill_diagonal(t, 0.0)    # exact: x = x' (arccos of a rounded 1 would give 1.5e-8)
        S_new = np.outer(d, d) * (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi
        Sd = (np.pi - t) / np.pi
        theta = S_new + theta * Sd
        S = S_new
    K = ntkhgm.kernel(Xn, activation="relu", depth=2)
    np.testing.assert_allclose(K, theta, rtol=1e-12)
    np.testing.assert_allclose(ntkhgm.kernel(Xn, activation="relu", depth=2, kind="nngp"), S,
                               rtol=1e-12)


def test_bad_kernel_arguments():
    from ntkhgm.errors import InputError

    with pytest.raises(InputError, match="convention"):
        ntkhgm.kernel(X, activation="relu", depth=1, convention="foo")
    with pytest.raises(InputError, match="W_std"):
        ntkhgm.kernel(X, activation="relu", depth=1, W_std=2.0)
    with pytest.raises(InputError, match="NaN"):
        ntkhgm.kernel(np.array([[np.nan, 1.0]]), activation="relu", depth=1)
