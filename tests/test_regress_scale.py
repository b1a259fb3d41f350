"""Regression at scale (issue 10 item 4): the direct solver in K's own memory, the cg
solver over a zarr kernel, against an independent dense numpy solve."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import DATA, relu_ntk_reference
from test_cli import assert_user_error, run

import ntkhgm
from ntkhgm.errors import InputError
from ntkhgm.io import read_csv
from ntkhgm.regression import (
    KernelRegressor,
    eigen_decomposition,
    factor_kernel_system,
    scale_inputs,
)

CG_TOL = 1e-7
"""cg (residual ≤ 1e-10·‖y‖) against the dense solve: predictions to this relative error
(the solution error is at most cond(K + λI) times the residual; cond ≈ 10³ here)."""


@pytest.fixture(scope="module")
def diabetes():
    Xtr, ytr, _ = read_csv(DATA / "diabetes_train.csv", target="progression")
    Xte, yte, _ = read_csv(DATA / "diabetes_test.csv", target="progression")
    return Xtr, ytr, Xte, yte


def dense_prediction(Xtr, ytr, Xte, depth, ridge):
    """ReLU NTK regression written out with numpy (input scale auto, centred targets)."""
    A, B = scale_inputs(Xtr, Xte, "auto")
    K = relu_ntk_reference(A, A, depth)
    m = ytr.mean()
    alpha = np.linalg.solve(K + ridge * np.eye(len(K)), ytr - m)
    return relu_ntk_reference(B, A, depth) @ alpha + m


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("ridge", [0.5, "auto"])
def test_cg_equals_direct_and_dense_solve(diabetes, ridge):
    Xtr, ytr, Xte, _ = diabetes
    direct = KernelRegressor("relu", 3, ridge=ridge, solver="direct").fit(Xtr, ytr)
    cg = KernelRegressor("relu", 3, ridge=ridge, solver="cg").fit(Xtr, ytr)
    assert direct.solver_ == "direct" and cg.solver_ == "cg" and cg.cg_iterations_ > 0
    # 300 rows < CG_LOO_ROWS: leave-one-out on every row, the same λ
    assert cg.ridge_ == direct.ridge_
    ref = dense_prediction(Xtr, ytr, Xte, 3, direct.ridge_)
    assert rel(direct.predict(Xte), ref) <= 1e-10
    assert rel(cg.predict(Xte), ref) <= CG_TOL
    assert rel(cg.predict(Xte), direct.predict(Xte)) <= CG_TOL
    np.testing.assert_allclose(cg.K_train_diag_, direct.K_train_diag_, rtol=1e-14)


def test_cg_auto_ridge_on_a_subset(monkeypatch):
    import ntkhgm.regression as r

    monkeypatch.setattr(r, "CG_LOO_ROWS", 40)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((90, 3))
    y = X[:, 0] - X[:, 1] ** 2
    m = KernelRegressor("relu", 2, solver="cg").fit(X, y)
    assert m.loo_rows_ == 40 and m.loo_.errors.shape[1] == len(r.RIDGE_GRID_EXPONENTS)
    rows = np.sort(np.random.default_rng(0).choice(90, 40, replace=False))
    A = scale_inputs(X, None, "auto")[0][rows]  # scaled on all rows, then the subset
    sub = KernelRegressor("relu", 2, input_scale="none", center=True).fit(A, y[rows])
    assert m.ridge_ == pytest.approx(sub.ridge_, rel=1e-12)
    # the grid is relative to the subset's mean(diag K)
    K = relu_ntk_reference(A, A, 2)
    assert np.isclose(m.loo_.grid[0, -1] / 100, np.mean(np.diag(K)), rtol=1e-12)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 rows of 1200 (the default, 16 MiB, is 70 rows at N = 30 000): the
    temporaries stay far below one K here too."""
    import ntkhgm.regression as r

    monkeypatch.setattr(r, "BLOCK_BYTES", 8 * 64 * 1200)


def test_direct_solver_works_in_the_kernel_memory(small_blocks):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((700, 6))
    K = relu_ntk_reference(X, X, 2)
    y = rng.standard_normal(700)
    ref = np.linalg.solve(K + 0.3 * np.eye(700), y)
    work = K.copy()
    tracemalloc.start()
    factor = factor_kernel_system(work, 0.3, overwrite=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 0.25 * K.nbytes  # row blocks of temporaries, no N×N copy
    assert np.shares_memory(factor[0], work)
    from scipy import linalg

    assert rel(linalg.cho_solve(factor, y), ref) <= 1e-10
    work = K.copy()
    tracemalloc.start()
    w, V = eigen_decomposition(work, overwrite=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 1.2 * K.nbytes  # V only
    assert rel(V @ ((V.T @ y) / (w + 0.3)), ref) <= 1e-10


def test_fit_holds_about_one_kernel(small_blocks):
    """The whole fit (explicit λ, small tiles) peaks near one K: no copy for the factor."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((1200, 5))
    y = rng.standard_normal(1200)
    model = KernelRegressor("relu", 2, ridge=0.1, tile=100)
    tracemalloc.start()
    model.fit(X, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    nbytes = 8 * 1200 ** 2
    assert peak <= 1.35 * nbytes, peak / nbytes
    A = scale_inputs(X, None, "auto")[0]
    K = relu_ntk_reference(A, A, 2)
    alpha = np.linalg.solve(K + 0.1 * np.eye(1200), y - y.mean())
    assert rel(model.alpha_, alpha) <= 1e-9


def test_api_errors():
    X = np.random.default_rng(7).standard_normal((20, 3))
    y = X[:, 0]
    with pytest.raises(InputError, match="list of depths"):
        KernelRegressor("relu", [1, 2], solver="cg").fit(X, y)
    with pytest.raises(InputError, match="solver must be"):
        KernelRegressor("relu", 1, solver="lu").fit(X, y)
    with pytest.raises(InputError, match="zarr"):
        KernelRegressor("relu", 1, solver="cg", kernel_store="K.npy").fit(X, y)
    m = KernelRegressor("relu", 1, ridge=0.1, solver="cg").fit(X, y)
    with pytest.raises(InputError, match="direct solver"):
        m.predict(X, return_std=True)
    with pytest.raises(InputError, match="direct solver needs"):
        KernelRegressor("relu", 1, solver="direct", memory="1MiB").fit(X, y)


def test_cli_cg_with_a_zarr_kernel_end_to_end(tmp_path):
    train, test = DATA / "diabetes_train.csv", DATA / "diabetes_test.csv"
    store, pred, pred_direct = tmp_path / "K.zarr", tmp_path / "cg.csv", tmp_path / "direct.csv"
    r = run("regress", train, test, "--target", "progression", "-L", "2", "--ridge", "0.5",
            "--solver", "cg", "--kernel-store", store, "--tile", "64", "--memory", "512MB",
            "-o", pred)
    assert r.exit_code == 0, r.stderr
    assert "solver cg:" in r.stderr and "iterations" in r.stderr
    Xtr, ytr, _ = read_csv(train, target="progression")
    Xte, yte, _ = read_csv(test, target="progression")
    A, _ = scale_inputs(Xtr, None, "auto")
    from ntkhgm.solvers import open_kernel

    K = np.asarray(open_kernel(store)[:])
    assert rel(K, relu_ntk_reference(A, A, 2)) <= 1e-12
    assert not (tmp_path / "K.zarr.partial").exists()
    assert not (tmp_path / "K.zarr.progress").exists()
    got = read_csv(pred)[0][:, 0]
    assert rel(got, dense_prediction(Xtr, ytr, Xte, 2, 0.5)) <= CG_TOL
    r = run("regress", train, test, "--target", "progression", "-L", "2", "--ridge", "0.5",
            "--solver", "direct", "-o", pred_direct)
    assert r.exit_code == 0, r.stderr
    assert rel(got, read_csv(pred_direct)[0][:, 0]) <= CG_TOL


@pytest.mark.parametrize("args, words", [
    (["--solver", "direct", "--kernel-store", "K.zarr"], ["--kernel-store", "'direct'"]),
    (["--cg-tol", "1e-6"], ["--cg-tol", "'auto'"]),
    (["--solver", "cg", "--kernel-store", "K.npy"], [".zarr"]),
    (["--solver", "cg", "--cg-tol", "2"], ["cg_tol"]),
    (["--solver", "direct", "--memory", "2MiB"], ["direct solver needs", "--solver cg"]),
    (["--solver", "cg", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"], ["exclude"]),
    (["--solver", "qr"], ["--solver"]),
    (["--memory", "lots"], ["memory", "lots"]),
])
def test_cli_bad_combinations_are_one_line(tmp_path, args, words):
    train, test = DATA / "diabetes_train.csv", DATA / "diabetes_test.csv"
    out = tmp_path / "pred.csv"
    args = [str(tmp_path / a) if a.startswith("K.") else a for a in args]
    r = run("regress", train, test, "--target", "progression", *args, "-o", out)
    assert_user_error(r, *words)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_kernel_diag_attribute_matches_kernel(diabetes):
    Xtr, ytr, _, _ = diabetes
    m = KernelRegressor("erf", 2, ridge=1.0).fit(Xtr, ytr)
    K = ntkhgm.kernel(m.X_train_, activation="erf", depth=2)
    np.testing.assert_array_equal(m.K_train_diag_, np.diag(K))


def test_predict_in_batches_of_test_rows(diabetes, monkeypatch):
    Xtr, ytr, Xte, _ = diabetes
    monkeypatch.setattr(KernelRegressor, "_predict_rows", lambda self, n: 7)
    m = KernelRegressor("relu", 2, ridge=0.5).fit(Xtr, ytr)
    assert rel(m.predict(Xte), dense_prediction(Xtr, ytr, Xte, 2, 0.5)) <= 1e-10


def test_auto_solver_falls_back_to_cg_beyond_the_budget(tmp_path, monkeypatch):
    import tempfile

    import ntkhgm.regression as r

    monkeypatch.setattr(r, "_fits_memory", lambda need, memory: (False, 1 << 20))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    train, test, out = DATA / "diabetes_train.csv", DATA / "diabetes_test.csv", tmp_path / "p.csv"
    res = run("regress", train, test, "--target", "progression", "-L", "2", "--ridge", "0.5",
              "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "solver cg:" in res.stderr and "auto: the direct solver would need" in res.stderr
    Xtr, ytr, _ = read_csv(train, target="progression")
    Xte, _, _ = read_csv(test, target="progression")
    assert rel(read_csv(out)[0][:, 0], dense_prediction(Xtr, ytr, Xte, 2, 0.5)) <= CG_TOL
    assert list(scratch.iterdir()) == []  # the temporary kernel store is gone


def test_nystrom_rank_within_the_budget(monkeypatch):
    import ntkhgm.regression as r

    monkeypatch.setattr(r, "_fits_memory", lambda need, memory: (True, 4 * 32 * 1000 * 50))
    assert r.nystrom_rank(1000, None) == 50       # four 1000×50 arrays: a quarter
    assert r.nystrom_rank(30, None) == 30         # at most n
    assert r.nystrom_rank(10 ** 5, None) == 0     # under 20 columns: Jacobi
