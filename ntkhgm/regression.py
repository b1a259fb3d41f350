"""Kernel regression with the NTK / NNGP (seed eq. 2, docs/math.md §1).

    f(x) = K(x, X) (K(X, X) + λI)^{-1} y,   λ ≥ 0 (``ridge``)

solved by a Cholesky factorisation of K(X, X) + λI.  A matrix that is not
numerically positive definite (duplicate training rows with λ = 0, say) raises
:class:`~ntkhgm.errors.SingularKernelError`, which suggests ``--ridge``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import linalg
from scipy.linalg import lapack

from .errors import InputError, SingularKernelError

Progress = Callable[[int, int], None]

RCOND_FACTOR = 10.0
"""K + λI counts as singular when its estimated reciprocal condition number is
below ``RCOND_FACTOR · n · eps`` (n training points, eps = 2.2e-16)."""


def _as_2d(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty 2-D array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise InputError(f"{name} contains NaN or infinite values")
    return X


class KernelRegressor:
    """Kernel (ridge) regression with the NTK or NNGP of an infinitely wide network.

    Parameters mirror :func:`ntkhgm.kernel`; ``ridge`` is λ ≥ 0;
    ``method_options`` go to the dual-activation method (``degree`` for gh,
    ``tol`` for hgm).  After
    :meth:`fit`, ``alpha_`` holds (K + λI)^{-1} y and ``X_train_`` the training inputs.
    """

    def __init__(self, activation: str = "relu", depth: int = 1, ridge: float = 0.0, *,
                 kind: str = "ntk", convention: str = "arora", W_std: float = 1.0,
                 b_std: float = 0.0, method: str = "auto",
                 method_options: dict | None = None):
        self.activation = activation
        self.depth = depth
        self.ridge = ridge
        self.kind = kind
        self.convention = convention
        self.W_std = W_std
        self.b_std = b_std
        self.method = method
        self.method_options = method_options

    def get_params(self) -> dict:
        """The constructor parameters (scikit-learn style)."""
        return {k: getattr(self, k) for k in ("activation", "depth", "ridge", "kind",
                                              "convention", "W_std", "b_std", "method",
                                              "method_options")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"KernelRegressor({args})"

    def _kernel(self, X1, X2=None, progress: Progress | None = None) -> np.ndarray:
        from .kernels import kernel

        kw = dict(self.method_options or {})
        if progress is not None:
            kw["progress"] = progress
        return kernel(X1, X2, activation=self.activation, depth=self.depth, kind=self.kind,
                      convention=self.convention, W_std=self.W_std, b_std=self.b_std,
                      method=self.method, **kw)

    def fit(self, X, y, *, progress: Progress | None = None) -> KernelRegressor:
        """Compute K(X, X) and solve (K + λI) α = y by Cholesky."""
        X = _as_2d(X, "X")
        y = np.asarray(y, dtype=np.float64)
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise InputError(f"y must have {X.shape[0]} rows (one per row of X), "
                             f"got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise InputError("y contains NaN or infinite values")
        ridge = float(self.ridge)
        if not (np.isfinite(ridge) and ridge >= 0):
            raise InputError(f"ridge must be a finite number >= 0, got {self.ridge!r}")
        K = self._kernel(X, progress=progress)
        self.alpha_ = solve_kernel_system(K, y, ridge)
        self.X_train_ = X
        self.y_train_ = y
        return self

    def predict(self, X, *, progress: Progress | None = None) -> np.ndarray:
        """f(X) = K(X, X_train) α."""
        if not hasattr(self, "alpha_"):
            raise InputError("KernelRegressor.predict called before fit")
        X = _as_2d(X, "X")
        if X.shape[1] != self.X_train_.shape[1]:
            raise InputError(f"X has {X.shape[1]} columns, the training data "
                             f"{self.X_train_.shape[1]}")
        return self._kernel(X, self.X_train_, progress=progress) @ self.alpha_

    def score(self, X, y) -> float:
        """R² of the predictions on (X, y)."""
        return r2_score(y, self.predict(X))


def solve_kernel_system(K: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Solve (K + ridge·I) α = y by Cholesky; SingularKernelError if not positive definite."""
    n = K.shape[0]
    A = np.array(K, dtype=np.float64, copy=True)
    A[np.diag_indices(n)] += ridge
    hint = (f"the kernel matrix K + {ridge:g}·I ({n}×{n}) is singular or not positive "
            "definite (duplicate or collinear training rows?); use a ridge, "
            "e.g. --ridge 1e-8 (KernelRegressor(ridge=...))")
    if not np.all(np.isfinite(A)):
        raise SingularKernelError("the kernel matrix contains NaN or infinite values")
    try:
        factor = linalg.cho_factor(A, lower=False, check_finite=False)
    except linalg.LinAlgError:
        raise SingularKernelError(hint) from None
    anorm = np.abs(A).sum(axis=0).max()
    rcond, info = lapack.dpocon(factor[0], anorm, uplo="U")
    if info != 0 or not rcond > RCOND_FACTOR * n * np.finfo(float).eps:
        raise SingularKernelError(hint + f" [reciprocal condition number {rcond:.1e}]")
    return linalg.cho_solve(factor, y, check_finite=False)


# ----------------------------------------------------------------------------- metrics


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise InputError(f"y_true and y_pred have different shapes {t.shape} and {p.shape}")
    return t, p


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def relative_error(y_true, y_pred) -> float:
    """‖y_pred − y_true‖ / ‖y_true‖ (inf when y_true = 0 and the predictions are not)."""
    t, p = _pair(y_true, y_pred)
    num, den = np.linalg.norm(p - t), np.linalg.norm(t)
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return float(num / den)


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot (1 or 0 when y_true is constant)."""
    t, p = _pair(y_true, y_pred)
    ss_res = float(np.sum((t - p) ** 2))
    ss_tot = float(np.sum((t - t.mean(axis=0)) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """``{"rmse", "relative_error", "r2"}`` of the predictions."""
    return {"rmse": rmse(y_true, y_pred), "relative_error": relative_error(y_true, y_pred),
            "r2": r2_score(y_true, y_pred)}
