"""Conjugate gradients over out-of-core kernels (issue 10 item 4) against a dense solve."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import relu_ntk_reference
from scipy import linalg

from ntkhgm.errors import InputError, NumericalError
from ntkhgm.solvers import conjugate_gradient, open_kernel

rng = np.random.default_rng(21)
X = rng.standard_normal((40, 4))
K = relu_ntk_reference(X, X, 2)
Y = rng.standard_normal((40, 2))


def dense(ridge, y):
    return linalg.solve(K + ridge * np.eye(len(K)), y, assume_a="pos")


@pytest.mark.parametrize("kind", ["array", "npy", "zarr"])
def test_cg_equals_dense_solve(tmp_path, kind):
    if kind == "array":
        Kf = K
    elif kind == "npy":
        np.save(tmp_path / "K.npy", K)
        Kf = open_kernel(tmp_path / "K.npy")
    else:
        import zarr

        z = zarr.create_array(store=str(tmp_path / "K.zarr"), shape=K.shape, chunks=(9, 9),
                              dtype="f8")
        z[:] = K
        Kf = open_kernel(tmp_path / "K.zarr")
    for ridge in (1e-2, 1.0):
        a, it = conjugate_gradient(Kf, Y, ridge, tol=1e-12)
        ref = dense(ridge, Y)
        assert np.max(np.abs(a - ref)) <= 1e-9 * np.max(np.abs(ref))
        assert it <= 10 * len(K)
        a1, _ = conjugate_gradient(Kf, Y[:, 0], ridge, tol=1e-12)
        assert a1.shape == (40,)
        assert np.max(np.abs(a1 - ref[:, 0])) <= 1e-9 * np.max(np.abs(ref[:, 0]))


def test_blocked_products_equal_dense(monkeypatch):
    import ntkhgm.solvers as s

    monkeypatch.setattr(s, "_block_rows", lambda n, m, memory: 7)
    a, _ = conjugate_gradient(K, Y, 0.1, tol=1e-12)
    ref = dense(0.1, Y)
    assert np.max(np.abs(a - ref)) <= 1e-9 * np.max(np.abs(ref))


def test_cg_errors(tmp_path):
    with pytest.raises(NumericalError, match="did not reach"):
        conjugate_gradient(K, Y, 1e-6, maxiter=2)
    with pytest.raises(InputError, match="rows"):
        conjugate_gradient(K, Y[:5], 1.0)
    with pytest.raises(InputError, match="ridge"):
        conjugate_gradient(K, Y, -1.0)
    with pytest.raises(NumericalError, match="positive definite"):
        conjugate_gradient(-K, Y, 0.0)
    np.save(tmp_path / "bad.npy", np.ones((3, 4)))
    with pytest.raises(InputError, match="square"):
        open_kernel(tmp_path / "bad.npy")
    with pytest.raises(InputError, match=".npy or .zarr"):
        open_kernel(tmp_path / "K.csv")


@pytest.mark.parametrize("kind", ["array", "zarr"])
def test_nystrom_preconditioner_same_solution_fewer_iterations(tmp_path, kind):
    from ntkhgm.solvers import nystrom_preconditioner

    Z = np.random.default_rng(4).standard_normal((300, 5)) / np.sqrt(5)
    big = relu_ntk_reference(Z, Z, 3)
    if kind == "zarr":
        import zarr

        z = zarr.create_array(store=str(tmp_path / "K.zarr"), shape=big.shape,
                              chunks=(64, 64), dtype="f8")
        z[:] = big
        Kf = open_kernel(tmp_path / "K.zarr")
    else:
        Kf = big
    y = np.sin(3 * Z[:, 0]) + Z[:, 1]
    ref = linalg.solve(big + 0.1 * np.eye(300), y, assume_a="pos")
    a, it = conjugate_gradient(Kf, y, 0.1, tol=1e-12, preconditioner="nystrom", rank=60)
    _, it_jacobi = conjugate_gradient(Kf, y, 0.1, tol=1e-12)
    assert np.max(np.abs(a - ref)) <= 1e-9 * np.max(np.abs(ref))
    assert it < it_jacobi
    # P = K̂ + λI exactly: with every column, K̂ = K and P⁻¹ is (K + λI)⁻¹
    full = nystrom_preconditioner(Kf, 0.1, 300)
    np.testing.assert_allclose(full(y[:, None])[:, 0], ref, rtol=1e-8, atol=1e-8)
    with pytest.raises(InputError, match="preconditioner"):
        conjugate_gradient(Kf, y, 0.1, preconditioner="ilu")
    a0, _ = conjugate_gradient(K, Y, 0.0, tol=1e-12, preconditioner="nystrom")  # Jacobi
    assert np.max(np.abs(a0 - dense(0.0, Y))) <= 1e-6 * np.max(np.abs(dense(0.0, Y)))
