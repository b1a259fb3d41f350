"""ntkhgm.sklearn: scikit-learn kernels and estimator (issue 12), against independent references."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import DATA

# scikit-learn is the optional extra 'sklearn', which `make install` installs
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.svm import SVC, SVR
from sklearn.utils.estimator_checks import check_estimator

import ntkhgm
from ntkhgm.io import read_csv
from ntkhgm.sklearn import NNGP, NTK, KernelRegressor

# check_estimator checks that may be skipped, and why: both depend on the
# environment, not on the estimator (every other applicable check must pass)
ALLOWED_SKIPS = {
    # runs only with SCIPY_ARRAY_API=1 and an array-API namespace; ntkhgm computes in numpy
    "check_array_api_input",
    # runs only when pandas is installed (it is not a dependency of ntkhgm)
    "check_regressor_data_not_an_array",
}


@pytest.fixture
def rows():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((12, 3)) / 2
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    return X, y, rng.standard_normal((5, 3)) / 2


def _diabetes(n_train=None, n_test=None):
    Xtr, ytr, _ = read_csv(DATA / "diabetes_train.csv", target="progression")
    Xte, yte, _ = read_csv(DATA / "diabetes_test.csv", target="progression")
    return Xtr[:n_train], ytr[:n_train], Xte[:n_test], yte[:n_test]


def test_check_estimator_passes():
    results = check_estimator(KernelRegressor(), on_fail=None)
    assert len(results) > 40
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert not failed, failed
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= ALLOWED_SKIPS, skipped - ALLOWED_SKIPS


@pytest.mark.parametrize("cls, kind", [(NTK, "ntk"), (NNGP, "nngp")])
def test_kernel_equals_ntkhgm_kernel(rows, cls, kind):
    X, _, Z = rows
    k = cls(activation="relu", depth=2, convention="nt", W_std=1.3, b_std=0.2)
    kw = dict(activation="relu", depth=2, kind=kind, convention="nt", W_std=1.3, b_std=0.2)
    ref = ntkhgm.kernel(X, **kw)
    np.testing.assert_allclose(k(X), ref, rtol=1e-15, atol=0)
    np.testing.assert_allclose(k(Z, X), ntkhgm.kernel(Z, X, **kw), rtol=1e-15, atol=0)
    np.testing.assert_allclose(k.diag(X), np.diag(ref), rtol=1e-14)
    default = cls(activation="relu", depth=2, convention="nt")
    np.testing.assert_allclose(default(X), ntkhgm.kernel(X, activation="relu", depth=2,
                                                         kind=kind, convention="nt"),
                               rtol=1e-15, atol=0)


def _central_fd(k, X, h=1e-6):
    theta = k.theta
    cols = []
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = h
        cols.append((k.clone_with_theta(theta + e)(X) - k.clone_with_theta(theta - e)(X))
                    / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("cls", [NTK, NNGP])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_analytic_relu_gradient_matches_central_differences(rows, cls, depth):
    X, _, _ = rows
    X = np.vstack([X, X[:1], 2 * X[1:2], np.zeros((1, 3))])  # duplicate, parallel, zero row
    k = cls(activation="relu", depth=depth, convention="nt", W_std=1.3, b_std=0.2)
    assert [h.name for h in k.hyperparameters if not h.fixed] == ["W_std", "b_std"]
    K, grad = k(X, eval_gradient=True)
    np.testing.assert_allclose(K, k(X), rtol=1e-15)
    fd = _central_fd(k, X)
    assert grad.shape == X.shape[:1] * 2 + (2,)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


def test_finite_difference_gradient_path(rows):
    """Activations without analytic partials: FD_STEP central differences (checked on relu)."""
    X, _, _ = rows
    k = NTK(activation="relu", depth=2, convention="nt", W_std=0.9, b_std=0.3)
    _, analytic = k(X, eval_gradient=True)
    np.testing.assert_allclose(k._fd_gradient(X), analytic, rtol=0,
                               atol=1e-6 * np.abs(analytic).max())
    e = NNGP(activation="erf", depth=2, convention="nt", W_std=1.1, b_std=0.4)
    _, grad = e(X, eval_gradient=True)
    fd = _central_fd(e, X, h=1e-5)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


def test_hyperparameters_fixed_where_they_do_not_apply(rows):
    X, _, _ = rows
    K, grad = NTK(activation="relu", depth=2)(X, eval_gradient=True)  # arora: none
    assert grad.shape == (12, 12, 0)
    k = NTK(activation="relu", depth=2, convention="nt", b_std=0.0)  # log 0 = −∞: fixed
    assert [h.name for h in k.hyperparameters if not h.fixed] == ["W_std"]
    k = NTK(activation="relu", depth=2, convention="nt", W_std_bounds="fixed", b_std=0.1)
    assert [h.name for h in k.hyperparameters if not h.fixed] == ["b_std"]
    with pytest.raises(ValueError, match="Gradient"):
        k(X, X, eval_gradient=True)


def test_composable_picklable_cloneable(rows):
    X, _, Z = rows
    base = NTK(activation="erf", depth=2, convention="nt", W_std=1.2, b_std=0.1)
    K = base(X)
    s = base + WhiteKernel(noise_level=0.3)
    np.testing.assert_allclose(s(X), K + 0.3 * np.eye(len(X)), rtol=1e-15)
    np.testing.assert_allclose(s(Z, X), base(Z, X), rtol=1e-15)
    p = ConstantKernel(2.0) * base
    np.testing.assert_allclose(p(X), 2 * K, rtol=1e-15)
    np.testing.assert_allclose(p.diag(X), 2 * np.diag(K), rtol=1e-14)
    assert len(p.theta) == 3  # constant, W_std, b_std
    for k in (base, s, p):
        k2 = pickle.loads(pickle.dumps(k))
        assert k2 == k and repr(k2) == repr(k)
        np.testing.assert_array_equal(k2(X), k(X))
        c = clone(k)
        assert c == k and c is not k
        np.testing.assert_array_equal(c(X), k(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gp_regressor_mean_equals_kernel_regressor():
    """GPR(NTK('resin', depth=3) + WhiteKernel()) on the shipped data = KernelRegressor."""
    Xtr, ytr, Xte, _ = _diabetes(60, 30)  # ReSin kernels: a 60-row part of the split
    for normalize in (False, True):
        gpr = GaussianProcessRegressor(kernel=NTK(activation="resin", depth=3) + WhiteKernel(),
                                       normalize_y=normalize).fit(Xtr, ytr)
        noise = gpr.kernel_.k2.noise_level
        model = KernelRegressor(activation="resin", depth=3, ridge=noise, input_scale="none",
                                center=normalize).fit(Xtr, ytr)
        expected = gpr.predict(Xte)
        np.testing.assert_allclose(model.predict(Xte), expected, rtol=0,
                                   atol=1e-10 * np.abs(expected).max())


def test_nngp_posterior_std_equals_gp_regressor(rows):
    X, y, Z = rows
    lam = 0.05
    k = NNGP(activation="erf", depth=2)
    gpr = GaussianProcessRegressor(kernel=k, alpha=lam, optimizer=None).fit(X, y)
    model = KernelRegressor(activation="erf", depth=2, kind="nngp", ridge=lam,
                            input_scale="none", center=False).fit(X, y)
    m_ref, s_ref = gpr.predict(Z, return_std=True)
    m, s = model.predict(Z, return_std=True)
    np.testing.assert_allclose(m, m_ref, rtol=1e-10)
    np.testing.assert_allclose(s, s_ref, rtol=1e-7, atol=1e-10)
    _, c_ref = gpr.predict(Z, return_cov=True)
    _, c = model.predict(Z, return_cov=True)
    np.testing.assert_allclose(c, c_ref, rtol=0, atol=1e-10 * np.abs(c_ref).max())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gp_optimizer_fits_W_and_b(rows):
    X, y, _ = rows
    k0 = NTK(activation="relu", depth=2, convention="nt", W_std=1.0, b_std=0.5)
    gpr = GaussianProcessRegressor(kernel=k0 + WhiteKernel(0.1), random_state=0).fit(X, y)
    start = gpr.log_marginal_likelihood(gpr.kernel.theta)
    assert gpr.log_marginal_likelihood_value_ > start
    fitted = gpr.kernel_.k1
    assert (fitted.W_std, fitted.b_std) != (1.0, 0.5)
    # the optimum is a stationary point (or on a bound) of the analytic-gradient LML
    _, g = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    lo, hi = gpr.kernel_.bounds.T
    interior = (gpr.kernel_.theta > lo + 1e-3) & (gpr.kernel_.theta < hi - 1e-3)
    assert np.all(np.abs(g[interior]) < 1e-3)


def test_kernel_ridge_and_svr(rows):
    X, y, Z = rows
    k = NTK(activation="relu", depth=2)
    kr = KernelRidge(alpha=0.1, kernel=k).fit(X, y)
    model = KernelRegressor(activation="relu", depth=2, ridge=0.1, input_scale="none",
                            center=False).fit(X, y)
    # KernelRidge asks for k(X, X) as a cross kernel (Y given), whose diagonal goes
    # through arccos(1 − ε) (√ε ~ 1e-8 off) instead of the exact x = x' path
    np.testing.assert_allclose(kr.predict(Z), model.predict(Z), rtol=1e-7)
    svr = SVR(kernel="precomputed", C=10.0).fit(k(X), y)
    svr_callable = SVR(kernel=k, C=10.0).fit(X, y)
    np.testing.assert_allclose(svr.predict(k(Z, X)), svr_callable.predict(Z), rtol=1e-7)
    labels = (y > np.median(y)).astype(int)
    svc = SVC(kernel="precomputed", C=10.0).fit(k(X), labels)
    svc_callable = SVC(kernel=k, C=10.0).fit(X, labels)
    np.testing.assert_allclose(svc.decision_function(k(Z, X)),
                               svc_callable.decision_function(Z), rtol=1e-7, atol=1e-9)


def test_grid_search_and_cross_val_score(rows):
    X, y, _ = rows
    X = np.vstack([X, X + 0.1])
    y = np.concatenate([y, y + 0.05])
    cv = KFold(3, shuffle=True, random_state=0)
    grid = GridSearchCV(KernelRegressor(activation="relu"),
                        {"depth": [1, 2, 3], "ridge": ["auto", 1e-2]}, cv=cv).fit(X, y)
    assert grid.best_params_["depth"] in (1, 2, 3)
    # the best cross-validated score is what cross_val_score gives for those parameters
    best = cross_val_score(KernelRegressor(activation="relu", **grid.best_params_), X, y,
                           cv=cv)
    assert grid.best_score_ == pytest.approx(best.mean(), rel=1e-12)
    m, s = grid.best_estimator_.predict(X[:3], return_std=True)
    assert m.shape == (3,) and np.all(s >= 0)


def test_grid_search_shares_one_kernel_cache(rows, monkeypatch):
    """KernelCache: candidates differing in ridge (and depth) reuse each fold's kernels."""
    import ntkhgm.kernels
    from ntkhgm.regression import KernelCache, one_pass_available

    X, y, _ = rows
    X = np.vstack([X, X + 0.1])
    y = np.concatenate([y, y + 0.05])
    one_pass_available()  # the one-off probe is not counted
    real = ntkhgm.kernels.kernel
    calls = []

    def counting(*args, **kw):
        calls.append(kw.get("depth"))
        return real(*args, **kw)

    monkeypatch.setattr(ntkhgm.kernels, "kernel", counting)
    cv = KFold(3, shuffle=True, random_state=0)
    params = {"depth": [3, 2, 1], "ridge": ["auto", 1e-2, 1.0]}
    results = {}
    for cache in (None, KernelCache()):
        calls.clear()
        grid = GridSearchCV(KernelRegressor(activation="erf", kernel_cache=cache), params,
                            cv=cv).fit(X, y)
        results[cache is None] = (len(calls), grid.cv_results_["mean_test_score"])
        if cache is not None:
            assert grid.best_estimator_.kernel_cache is cache and cache.hits > 0
    (n_plain, plain), (n_cached, cached) = results[True], results[False]
    np.testing.assert_array_equal(cached, plain)
    # without the cache every candidate computes its fold's train and validation kernels
    assert n_plain >= 3 * 9 * 2
    # with it each (fold, depth) once: a third of the calls (+1: the final refit on all
    # rows, new data), or one pass per fold
    assert n_cached <= n_plain / 3 + 1
    if one_pass_available():
        assert n_cached <= 3 * 2 + 2  # (train, validation) per fold, + the final refit
