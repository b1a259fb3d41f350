"""Kernel regression (ntkhgm.regression) against an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import relu_ntk_reference

import ntkhgm
from ntkhgm.errors import InputError, SingularKernelError
from ntkhgm.regression import (
    KernelRegressor,
    r2_score,
    regression_metrics,
    relative_error,
    rmse,
    solve_kernel_system,
)


@pytest.fixture
def problem():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((25, 4))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2 - 0.5 * X[:, 2]
    Xt = rng.standard_normal((10, 4))
    yt = np.sin(Xt[:, 0]) + Xt[:, 1] ** 2 - 0.5 * Xt[:, 2]
    return X, y, Xt, yt


@pytest.mark.parametrize("depth, ridge", [(1, 0.0), (3, 0.0), (2, 0.1)])
def test_relu_regression_matches_reference(problem, depth, ridge):
    X, y, Xt, yt = problem
    K = relu_ntk_reference(X, X, depth)
    alpha = np.linalg.solve(K + ridge * np.eye(len(X)), y)
    expected = relu_ntk_reference(Xt, X, depth) @ alpha
    np.testing.assert_allclose(ntkhgm.kernel(X, activation="relu", depth=depth), K,
                               rtol=1e-12, atol=1e-12 * np.abs(K).max())
    model = KernelRegressor(activation="relu", depth=depth, ridge=ridge, method="closed")
    pred = model.fit(X, y).predict(Xt)
    # the solve amplifies rounding by cond(K) ~ 1e3..1e5
    np.testing.assert_allclose(pred, expected, rtol=0, atol=1e-7 * np.abs(expected).max())
    m = regression_metrics(yt, pred)
    ref_rmse = np.sqrt(np.mean((expected - yt) ** 2))
    assert m["rmse"] == pytest.approx(ref_rmse, rel=1e-8)
    assert m["relative_error"] == pytest.approx(
        np.linalg.norm(expected - yt) / np.linalg.norm(yt), rel=1e-8)
    ss_tot = np.sum((yt - yt.mean()) ** 2)
    assert m["r2"] == pytest.approx(1 - np.sum((expected - yt) ** 2) / ss_tot, rel=1e-8)
    assert model.score(Xt, yt) == pytest.approx(m["r2"])


def test_interpolates_training_data(problem):
    X, y, _, _ = problem
    model = KernelRegressor(activation="erf", depth=2, kind="nngp").fit(X, y)
    np.testing.assert_allclose(model.predict(X), y, atol=1e-8)


def test_api_exports_regressor():
    assert ntkhgm.KernelRegressor is KernelRegressor
    assert "ridge=0.5" in repr(KernelRegressor(ridge=0.5))


def test_duplicate_rows_singular_then_ridge(problem):
    X, y, Xt, _ = problem
    Xd = np.vstack([X, X[:3]])
    yd = np.concatenate([y, y[:3]])
    with pytest.raises(SingularKernelError, match="--ridge"):
        KernelRegressor(activation="relu", depth=2).fit(Xd, yd)
    pred = KernelRegressor(activation="relu", depth=2, ridge=1e-6).fit(Xd, yd).predict(Xt)
    assert np.all(np.isfinite(pred))


def test_zero_rows_are_fine_with_ridge():
    X = np.array([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]])
    y = np.array([0.0, 1.0, 2.0])
    pred = KernelRegressor(activation="relu", depth=2, ridge=1e-3).fit(X, y).predict(X)
    assert np.all(np.isfinite(pred))


def test_solver_and_input_checks():
    with pytest.raises(SingularKernelError):
        solve_kernel_system(np.ones((3, 3)), np.ones(3))
    with pytest.raises(SingularKernelError):
        solve_kernel_system(-np.eye(2), np.ones(2))
    np.testing.assert_allclose(solve_kernel_system(np.eye(2), np.array([1.0, 2.0]), 1.0),
                               [0.5, 1.0])
    with pytest.raises(InputError):
        KernelRegressor(ridge=-1).fit(np.eye(2), np.ones(2))
    with pytest.raises(InputError):
        KernelRegressor().fit(np.eye(2), np.ones(3))
    with pytest.raises(InputError):
        KernelRegressor().predict(np.eye(2))
    with pytest.raises(InputError):
        KernelRegressor(ridge=1).fit(np.eye(2), np.ones(2)).predict(np.eye(3))


def test_metrics_edge_cases():
    assert rmse([1, 2], [1, 4]) == pytest.approx(np.sqrt(2))
    assert relative_error([0, 0], [0, 0]) == 0.0
    assert relative_error([0, 0], [1, 0]) == float("inf")
    assert r2_score([1, 1], [1, 1]) == 1.0
    assert r2_score([1, 1], [1, 2]) == 0.0
    with pytest.raises(InputError):
        rmse([1, 2], [1])
