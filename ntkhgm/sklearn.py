"""scikit-learn integration (issue 12): NTK / NNGP kernels and a KernelRegressor estimator.

Needs the optional extra ``sklearn`` (``pip install "ntkhgm[sklearn]"``); this is
the only module of ntkhgm that imports scikit-learn.

:class:`NTK` and :class:`NNGP` are ``sklearn.gaussian_process.kernels.Kernel``
subclasses for any catalog or user activation, depth and convention (math.md §1).
In convention ``nt`` the weight and bias standard deviations ``W_std`` and
``b_std`` are hyperparameters (log-scale, with bounds, or ``"fixed"``; a zero
``b_std`` is held fixed, its logarithm being −∞).  Convention ``arora`` has no
free hyperparameters.  ``eval_gradient`` is analytic through the layer
recursion where the activation's dual has closed-form partial derivatives
(ReLU: the arc-cosine kernel); for every other activation it is a central finite
difference in log-hyperparameter space with step :data:`FD_STEP` (relative
error ~1e-8 with closed forms, ~1e-7 with hgm; two kernel evaluations per free
hyperparameter).  ``diag`` evaluates the per-row variances only.  They compose
with scikit-learn kernels (``NTK(...) + WhiteKernel()``, ``ConstantKernel() *
NTK(...)``), pickle and ``clone``; they work in ``GaussianProcessRegressor``,
as the ``kernel`` of ``KernelRidge`` and, evaluated, precomputed in ``SVR``/``SVC``.

:class:`KernelRegressor` is :class:`ntkhgm.regression.KernelRegressor` (centred
targets, leave-one-out ridge, input scaling, GP posterior) with scikit-learn's
estimator API: parameter handling, input validation, ``score``, tags.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils.validation import check_is_fitted, validate_data

from . import regression as _regression
from .duals import as_activation
from .kernels import kernel as _kernel
from .regression import kernel_diag

__all__ = ["NNGP", "NTK", "KernelRegressor"]

FD_STEP = 1e-4
"""Step in log(W_std), log(b_std) of the central finite-difference gradient."""


# ----------------------------------------------------------------------------- analytic gradients


def _relu_layer(qa, qb, c, dqa, dqb, dc):
    """ReLU dual (nt scaling, no cσ) and its tangent: T, Ṫ, dT, dṪ (math.md §1).

    T = √(ab)·J(ρ), J(ρ) = (√(1−ρ²) + (π − arccos ρ)ρ)/(2π), Ṫ = J'(ρ) =
    (π − arccos ρ)/(2π); dT = √(1−ρ²)/(2π)·ds + Ṫ·dc with s = √(ab), and
    dṪ = dρ/(2π√(1−ρ²)) (0 where ρ = ±1, where ρ cannot move: x ∥ x').
    """
    s = np.sqrt(qa * qb)
    pos = s > 0
    safe = np.where(pos, s, 1.0)
    rho = np.where(pos, np.clip(c / safe, -1.0, 1.0), 0.0)
    root = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    theta = np.arccos(rho)
    T = s * (root + (np.pi - theta) * rho) / (2 * np.pi)
    Td = (np.pi - theta) / (2 * np.pi)
    ds = np.where(pos, (qb * dqa + qa * dqb) / (2 * safe), 0.0)
    dT = root / (2 * np.pi) * ds + Td * dc
    drho = np.where(pos, (dc - rho * ds) / safe, 0.0)
    dTd = np.where(root > 0, drho / (2 * np.pi * np.where(root > 0, root, 1.0)), 0.0)
    return T, Td, dT, dTd


_ANALYTIC_LAYERS: dict[str, Callable] = {"relu": _relu_layer}
"""Activations whose dual has closed-form partial derivatives in (a, b, c)."""


def _nt_gradient(layer: Callable, X: np.ndarray, depth: int, kind: str, W_std: float,
                 b_std: float, names: list[str]) -> np.ndarray:
    """∂K/∂log θ for θ in ``names`` (W_std, b_std), forward mode through the nt recursion.

    nngp_0 = W²xx'/d0 + b², ntk_0 = nngp_0; per layer nngp ← W²T + b²,
    ntk ← W²(ntk Ṫ + T) + b²; ∂/∂log W = 2W² ∂/∂W², ∂/∂log b = 2b² ∂/∂b².
    """
    n, d0 = X.shape
    w2, b2 = float(W_std) ** 2, float(b_std) ** 2
    G = X @ X.T
    G = 0.5 * (G + G.T)
    c = w2 * G / d0 + b2
    q = np.diag(c).copy()
    c[np.diag_indices(n)] = q
    dG = {"W_std": G / d0, "b_std": np.ones((n, n))}
    dc = [dG[p].copy() for p in names]
    dq = [np.diag(t).copy() for t in dc]
    ntk, dntk = c.copy(), [t.copy() for t in dc]
    for _ in range(int(depth)):
        qa, qb = q[:, None], q[None, :]
        T, Td = None, None
        new_dc, new_dntk = [], []
        for k, p in enumerate(names):
            T, Td, dT, dTd = layer(qa, qb, c, dq[k][:, None], dq[k][None, :], dc[k])
            one = 1.0 if p == "b_std" else 0.0
            new_dc.append((T if p == "W_std" else 0.0) + w2 * dT + one)
            new_dntk.append(((ntk * Td + T) if p == "W_std" else 0.0)
                            + w2 * (dntk[k] * Td + ntk * dTd + dT) + one)
        if T is None:
            T, Td, _, _ = layer(qa, qb, c, 0.0, 0.0, 0.0)
        ntk = w2 * (ntk * Td + T) + b2
        c = w2 * T + b2
        dc, dntk = new_dc, new_dntk
        q = np.diag(c).copy()
        dq = [np.diag(t).copy() for t in dc]
    tangents = dntk if kind == "ntk" else dc
    factor = {"W_std": 2 * w2, "b_std": 2 * b2}
    return np.stack([factor[p] * t for p, t in zip(names, tangents, strict=True)], axis=-1)


# ----------------------------------------------------------------------------- kernels


class _NeuralKernel(Kernel):
    """NTK or NNGP of a deep fully connected network as a scikit-learn kernel."""

    _kind = "ntk"

    def __init__(self, activation: str = "relu", depth: int = 1, convention: str = "arora",
                 W_std: float = 1.0, b_std: float = 0.0, W_std_bounds=(1e-2, 1e2),
                 b_std_bounds=(1e-4, 1e2), method: str = "auto"):
        self.activation = activation
        self.depth = depth
        self.convention = convention
        self.W_std = W_std
        self.b_std = b_std
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds
        self.method = method

    # W_std and b_std are hyperparameters in convention nt only
    def _bounds(self, name: str):
        if self.convention != "nt" or (name == "b_std" and self.b_std == 0):
            return "fixed"
        return getattr(self, name + "_bounds")

    @property
    def hyperparameter_W_std(self) -> Hyperparameter:
        return Hyperparameter("W_std", "numeric", self._bounds("W_std"))

    @property
    def hyperparameter_b_std(self) -> Hyperparameter:
        return Hyperparameter("b_std", "numeric", self._bounds("b_std"))

    def _kw(self) -> dict:
        return dict(activation=self.activation, depth=self.depth, kind=self._kind,
                    convention=self.convention, W_std=self.W_std, b_std=self.b_std,
                    method=self.method)

    def __call__(self, X, Y=None, eval_gradient: bool = False):
        """K(X, Y) (K(X, X) when Y is None); with eval_gradient also ∂K/∂log θ."""
        X = np.asarray(X, dtype=np.float64)
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        key = self._cache_key(X, Y)
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] == key:
            K = cached[1]  # GaussianProcessRegressor evaluates the same K repeatedly
        else:
            K = _kernel(X, None if Y is None else np.asarray(Y, dtype=np.float64), **self._kw())
            self._cache = (key, K)
        if not eval_gradient:
            return K.copy()
        names = [h.name for h in self.hyperparameters if not h.fixed]
        if not names:
            return K.copy(), np.empty(K.shape + (0,))
        act = as_activation(self.activation)
        layer = _ANALYTIC_LAYERS.get(act.name) if self.method in ("auto", "closed") else None
        if layer is not None:
            grad = _nt_gradient(layer, X, self.depth, self._kind, self.W_std, self.b_std,
                                names)
        else:
            grad = self._fd_gradient(X)
        return K.copy(), grad

    def _fd_gradient(self, X: np.ndarray) -> np.ndarray:
        """Central differences in log θ, step FD_STEP, for the free hyperparameters."""
        theta = self.theta
        cols = []
        for k in range(len(theta)):
            step = np.zeros_like(theta)
            step[k] = FD_STEP
            up = _kernel(X, **self.clone_with_theta(theta + step)._kw())
            down = _kernel(X, **self.clone_with_theta(theta - step)._kw())
            cols.append((up - down) / (2 * FD_STEP))
        return np.stack(cols, axis=-1)

    def _cache_key(self, X, Y):
        def digest(A):
            if A is None:
                return None
            A = np.ascontiguousarray(A, dtype=np.float64)
            return (A.shape, hashlib.blake2b(A.tobytes(), digest_size=20).digest())
        return (tuple(sorted(self._kw().items())), digest(X), digest(Y))

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_cache", None)
        return state

    def diag(self, X) -> np.ndarray:
        """diag K(X, X) from the per-row variances (N dual evaluations per layer)."""
        return kernel_diag(np.asarray(X, dtype=np.float64), **self._kw())

    def is_stationary(self) -> bool:
        return False

    def __repr__(self) -> str:
        args = f"activation={self.activation!r}, depth={self.depth}"
        if self.convention != "arora":
            args += f", convention={self.convention!r}, W_std={self.W_std:.4g}, " \
                    f"b_std={self.b_std:.4g}"
        return f"{type(self).__name__}({args})"


class NTK(_NeuralKernel):
    """Neural tangent kernel Θ_L (ntkhgm.kernel kind 'ntk') as a scikit-learn kernel."""

    _kind = "ntk"


class NNGP(_NeuralKernel):
    """NNGP kernel Σ_L (ntkhgm.kernel kind 'nngp') as a scikit-learn kernel."""

    _kind = "nngp"


# ----------------------------------------------------------------------------- estimator


class KernelRegressor(RegressorMixin, BaseEstimator, _regression.KernelRegressor):
    """:class:`ntkhgm.regression.KernelRegressor` as a scikit-learn estimator.

    Same parameters and defaults (``ridge="auto"``, ``input_scale="auto"``,
    centred targets); works in ``GridSearchCV``, ``cross_val_score``, pipelines.
    ``predict(X, return_std=True)`` / ``return_cov=True``: the GP posterior.
    """

    def fit(self, X, y, **kw) -> KernelRegressor:
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True,
                             dtype=np.float64)
        return super().fit(X, y, **kw)

    def predict(self, X, **kw):
        check_is_fitted(self, "alpha_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return super().predict(X, **kw)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
