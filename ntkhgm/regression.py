"""Kernel regression with the NTK / NNGP (seed eq. 2, docs/math.md §1).

    f(x) = ȳ + K(x, X) (K(X, X) + λI)^{-1} (y − ȳ),   λ ≥ 0 (``ridge``)

solved by a Cholesky factorisation of K(X, X) + λI (``solver="direct"``, in K's own
memory: peak ≈ one N×N array for an explicit λ, two for ``ridge="auto"``), or by
conjugate gradients over K written tile by tile to a zarr store (``solver="cg"``,
:mod:`ntkhgm.solvers`; ``"auto"`` picks it when the direct solver does not fit the
memory budget; issue 10).  Three defaults make it work out of the box (issue 15):

* **targets centred**: the kernel has no constant term, so the training mean ȳ is
  subtracted before the fit and added back to the predictions (``center``);
* **ridge by leave-one-out** (``ridge="auto"``): λ = 10^k · mean(diag K) for k in
  :data:`RIDGE_GRID_EXPONENTS` (−6, −5.5, …, 2), the value with the smallest
  mean squared leave-one-out residual wins.  The residuals come in closed form
  from one eigendecomposition K = V diag(w) Vᵀ (O(N³) once, O(N²) per grid
  value), see :func:`loo_residuals`;
* **input scale** (``input_scale``, :class:`InputScale`): ``auto`` multiplies
  the features by one factor so that the mean squared row norm of the training
  rows is 1 (the Σ0 = x·x' variances are then ~1, where the dual activations
  are neither linear nor saturated); ``unit-norm`` projects each row to the unit
  sphere (Arora et al.'s setting); ``none`` is the seed's eq. (3) exactly.

``KernelRegressor(ridge=1, input_scale="none")`` (``center="auto"`` does not
centre when ``input_scale="none"``) is the seed's setting, bit for bit.  A matrix
that is not numerically positive definite raises
:class:`~ntkhgm.errors.SingularKernelError`, which suggests ``--ridge``.

``predict(X, return_std=True)`` / ``return_cov=True`` give the Gaussian-process
posterior of the latent function (no noise term at the test points): for
``kind="nngp"`` the NNGP posterior, for ``kind="ntk"`` the NTK-GP of an infinitely
wide network trained to convergence by gradient descent on the squared loss,
as neural-tangents' ``predict.gp_inference`` defines it (mean Θ*ᵀ(Θ + λI)⁻¹y,
covariance from the NNGP K: K** − Θ*ᵀΘ⁻¹K*ᵀ − K*Θ⁻¹Θ* + Θ*ᵀΘ⁻¹KΘ⁻¹Θ*).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.linalg import lapack

from .errors import InputError, SingularKernelError

Progress = Callable[[int, int], None]

RCOND_FACTOR = 10.0
"""K + λI counts as singular when its estimated reciprocal condition number is
below ``RCOND_FACTOR · n · eps`` (n training points, eps = 2.2e-16)."""

RIDGE_GRID_EXPONENTS = np.arange(-6.0, 2.0 + 1e-9, 0.5)
"""``ridge="auto"`` tries λ = 10^k · mean(diag K) for these k (17 values)."""

INPUT_SCALES = ("none", "auto", "unit-norm")
SOLVERS = ("auto", "direct", "cg")
"""``direct``: Cholesky of K + λI in K's own memory (explicit λ), or one eigendecomposition
(λ by leave-one-out); ``cg``: conjugate gradients over a zarr kernel; ``auto``: direct when
it fits the memory budget (:func:`direct_solver_memory`), else cg."""
CG_LOO_ROWS = 2000
"""With the cg solver, ``ridge="auto"`` is chosen by leave-one-out on a random subset of
this many training rows (seeded, the same every run): the grid of :data:`RIDGE_GRID_EXPONENTS`
times the subset's mean(diag K)."""
CG_MAXITER = 1000
"""Iteration budget of the cg solver (at most 10 N): past it, an error suggests a larger ridge."""
DIRECT_OVERHEAD = 64 << 20
"""Memory of the direct solver besides its N×N arrays (inputs, vectors, tile work)."""
CENTER_CHOICES = ("auto", True, False)


def _as_2d(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty 2-D array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise InputError(f"{name} contains NaN or infinite values")
    return X


# ----------------------------------------------------------------------------- input scale


class InputScale:
    """Feature scaling fitted on the training rows (issue 15).

    ``none``: x unchanged (seed eq. 3).  ``auto``: x · s with one factor
    s = 1/√(mean ‖x_i‖²) over the training rows (s = 1 when they are all zero).
    ``unit-norm``: x/‖x‖ per row (a zero row stays zero).
    """

    def __init__(self, mode: str = "auto"):
        if mode not in INPUT_SCALES:
            raise InputError(f"input_scale must be one of {', '.join(INPUT_SCALES)}, "
                             f"got {mode!r}")
        self.mode = mode

    def fit(self, X) -> InputScale:
        """Fit the factor of ``auto`` on the training rows X."""
        X = np.asarray(X, dtype=np.float64)
        msq = float(np.mean(np.einsum("ij,ij->i", X, X))) if self.mode == "auto" else 1.0
        self.factor_ = 1.0 / np.sqrt(msq) if msq > 0 and np.isfinite(msq) else 1.0
        return self

    def transform(self, X) -> np.ndarray:
        """Apply the scaling to any rows (training or test)."""
        X = np.asarray(X, dtype=np.float64)
        if self.mode == "none":
            return X
        if self.mode == "auto":
            if not hasattr(self, "factor_"):
                raise InputError("InputScale.transform called before fit")
            return X * self.factor_
        norm = np.sqrt(np.einsum("ij,ij->i", X, X))
        return X / np.where(norm > 0, norm, 1.0)[:, None]


def scale_inputs(X_train, X_other=None, mode: str = "auto"
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(scaled X_train, scaled X_other or None), the scale fitted on X_train."""
    sc = InputScale(mode).fit(X_train)
    return sc.transform(X_train), None if X_other is None else sc.transform(X_other)


# ----------------------------------------------------------------------------- leave-one-out


@dataclass
class LooChoice:
    """The outcome of choosing λ (and the depth) by leave-one-out."""

    ridge: float
    depth: int
    error: float
    """Mean squared leave-one-out residual at the chosen (depth, λ)."""
    grid: np.ndarray
    """The λ values tried (absolute), one row per depth."""
    errors: np.ndarray
    """Mean squared LOO residual per (depth, λ); inf where K + λI is too ill-conditioned."""
    depths: tuple[int, ...]


def loo_residuals(w: np.ndarray, V: np.ndarray, y: np.ndarray, ridge: float,
                  center: bool) -> np.ndarray:
    """Leave-one-out residuals y_i − f_{−i}(x_i) of kernel ridge regression, closed form.

    With G = K + λI = V diag(w + λ) Vᵀ: kernel ridge without intercept fitted on
    every row but i predicts z_i − (G⁻¹z)_i/(G⁻¹)_ii at x_i for any target vector
    z.  With centred targets the fold's mean m_i = (Σy − y_i)/(n − 1) is the
    intercept, z = y − m_i·1, so the residual is ((G⁻¹y)_i − m_i (G⁻¹1)_i)/(G⁻¹)_ii:
    exactly the refit with the fold's own mean.  O(N²) given (w, V).
    """
    inv = 1.0 / (w + ridge)
    y2 = y.reshape(len(y), -1)
    Gy = V @ (inv[:, None] * (V.T @ y2))
    dinv = _squares_times(V, inv)
    if center:
        n = len(y)
        G1 = V @ (inv * V.sum(axis=0))
        m = (y2.sum(axis=0)[None, :] - y2) / (n - 1)
        Gy = Gy - m * G1[:, None]
    res = Gy / dinv[:, None]
    return res.reshape(y.shape)


BLOCK_BYTES = 16 << 20
"""Row blocks of the O(N²) passes over K or its eigenvectors (finiteness, norms, V²·v)
hold at most this many bytes of temporaries."""


def _row_blocks(n: int, width: int) -> range:
    return range(0, n, max(1, BLOCK_BYTES // (8 * max(1, width))))


def _squares_times(V: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(V ∘ V) v in row blocks (no N×N temporary)."""
    step = _row_blocks(len(V), V.shape[1]).step
    return np.concatenate([(V[r0:r0 + step] ** 2) @ v for r0 in range(0, len(V), step)])


def _all_finite(K: np.ndarray) -> bool:
    step = _row_blocks(len(K), K.shape[1]).step
    return all(np.all(np.isfinite(K[r0:r0 + step])) for r0 in range(0, len(K), step))


def _fortran_view(K: np.ndarray) -> np.ndarray:
    """K itself as a Fortran-ordered array (Kᵀ of a C-ordered symmetric K), so that
    LAPACK works on its memory instead of a copy."""
    return K.T if K.flags.c_contiguous and not K.flags.f_contiguous else K


def eigen_decomposition(K: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(w, V) with K = V diag(w) Vᵀ for a symmetric K (LAPACK dsyevr, O(N) workspace).

    ``overwrite=True`` lets LAPACK work in K's memory (K is destroyed): peak memory
    K plus V.  Only one triangle of K is read (the kernels' tiles are mirrored exactly).
    """
    if not (overwrite and K.dtype == np.float64):
        K = np.array(K, dtype=np.float64, order="F", copy=True)
    return linalg.eigh(_fortran_view(K), lower=True, overwrite_a=True, check_finite=False,
                       driver="evr")


def _loo_search(kernels: dict[int, np.ndarray], y: np.ndarray, *, center: bool,
                ridges: Sequence[float] | None, overwrite: bool
                ) -> tuple[LooChoice, np.ndarray, np.ndarray]:
    """:func:`choose_ridge`, also returning the eigendecomposition (w, V) of the chosen
    depth's K; ``overwrite``: the kernels' memory may be used (they are destroyed)."""
    n = len(y)
    if n < 2 or (center and n < 3):
        raise InputError(f"choosing the ridge by leave-one-out needs at least "
                         f"{3 if center else 2} training samples, got {n} sample(s); "
                         "give a number, e.g. ridge=1")
    depths = tuple(kernels)
    grid, errors = [], []
    best: tuple[float, int, int] | None = None  # (error, depth index, −λ index): min wins
    kept = None
    for i, d in enumerate(depths):
        K = kernels.pop(d) if overwrite else kernels[d]  # overwritten: freed after eigh
        if not _all_finite(K):
            raise SingularKernelError("the kernel matrix contains NaN or infinite values")
        scale = float(np.mean(np.diag(K)))
        w, V = eigen_decomposition(K, overwrite=overwrite)
        del K
        lams = (np.asarray(ridges, dtype=float) if ridges is not None
                else 10.0 ** RIDGE_GRID_EXPONENTS * (scale if scale > 0 else 1.0))
        row = []
        for lam in lams:
            lo, hi = w[0] + lam, w[-1] + lam
            # the closed form needs G well conditioned, as the Cholesky fit does
            if not (lo > 0 and lo > RCOND_FACTOR * n * np.finfo(float).eps * hi):
                row.append(np.inf)
                continue
            r = loo_residuals(w, V, y, float(lam), center)
            row.append(float(np.mean(r * r)))
        grid.append(lams)
        errors.append(row)
        for j, e in enumerate(row):
            if np.isfinite(e) and (best is None or (e, i, -j) < best):
                best = (e, i, -j)
        if best is not None and best[1] == i:
            kept = (w, V)  # the winner so far; an earlier depth's V is released
        del V
    G, E = np.array(grid), np.array(errors)
    if best is None:
        raise SingularKernelError("K + λI is singular for every λ of the leave-one-out "
                                  "grid; give a larger ridge explicitly")
    error, i, j = best
    choice = LooChoice(ridge=float(G[i, -j]), depth=depths[i], error=float(error), grid=G,
                       errors=E, depths=depths)
    return choice, kept[0], kept[1]


def choose_ridge(kernels: dict[int, np.ndarray], y: np.ndarray, *, center: bool,
                 ridges: Sequence[float] | None = None) -> LooChoice:
    """Choose (depth, λ) with the smallest mean squared leave-one-out residual.

    ``kernels`` maps depth → K(X, X); ``ridges`` (absolute λ values) default to
    10^k · mean(diag K) for k in :data:`RIDGE_GRID_EXPONENTS`.  Ties go to the
    smaller depth and then to the larger λ.
    """
    return _loo_search(kernels, y, center=center, ridges=ridges, overwrite=False)[0]


# ----------------------------------------------------------------------------- kernels


_ONE_PASS: bool | None = None


def one_pass_available() -> bool:
    """Whether ``ntkhgm.kernel`` accepts a list of depths (one recursion for all of them).

    FALLBACK probe (until the ``scale`` branch's ``ntkhgm.kernel(..., depth=[...])``
    is merged): one 1×1 ReLU kernel, asked for depths [1, 2], once per process.
    """
    global _ONE_PASS
    if _ONE_PASS is None:
        from .kernels import kernel

        try:
            out = kernel(np.ones((1, 1)), activation="relu", depth=[1, 2])
        except (TypeError, InputError):
            out = None  # FALLBACK: this kernel() takes one depth only
        _ONE_PASS = isinstance(out, dict)
    return _ONE_PASS


def kernels_by_depth(X1, X2, depths: Sequence[int], **kw) -> dict[int, np.ndarray]:
    """{depth: K(X1, X2)} for several depths.

    One call of ``ntkhgm.kernel(..., depth=[...])`` where it accepts a list (the
    deepest layer computes the shallower ones on the way); otherwise (FALLBACK,
    until the ``scale`` branch is merged) one call per depth.
    """
    from .kernels import kernel

    depths = [int(d) for d in depths]
    if len(depths) > 1 and one_pass_available():
        out = kernel(X1, X2, depth=list(depths), **kw)
        return {d: out[d] for d in depths}
    return {d: kernel(X1, X2, depth=d, **kw) for d in depths}


def _digest(A) -> tuple | None:
    if A is None:
        return None
    A = np.ascontiguousarray(A, dtype=np.float64)
    return A.shape, hashlib.blake2b(A.tobytes(), digest_size=20).digest()


class KernelCache:
    """Kernel matrices shared by estimators: ``KernelRegressor(kernel_cache=KernelCache())``.

    Keyed by the bytes of the (scaled) inputs and every kernel parameter but the
    depth, so candidates of a ``GridSearchCV`` that differ only in ``ridge`` (or
    ``center``) compute each fold's kernels once, and a grid over ``depth`` gets
    all depths of a fold from one pass of ``ntkhgm.kernel(..., depth=[...])``
    when it is available: a request for depth d computes depths 1…d together,
    so list the depths deepest first (``{"depth": [3, 2, 1]}``).  ``clone`` (and
    deepcopy) keep the same cache, on purpose.  Budget: at most ``max_bytes`` of
    matrices, least recently used dropped first.  ``hits``/``misses`` count
    requests answered from the cache / computed.
    """

    def __init__(self, max_bytes: int = 2 ** 30):
        self.max_bytes = int(max_bytes)
        self._store: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __deepcopy__(self, memo) -> KernelCache:
        return self  # shared by the clones of one search

    def kernels(self, X1, X2, depths: Sequence[int], **kw) -> dict[int, np.ndarray]:
        """{depth: K(X1, X2)}, from the cache where present."""
        from .duals import as_activation

        params = dict(kw)
        params.pop("progress", None)
        params["activation"] = as_activation(params["activation"]).name
        key = (_digest(X1), _digest(X2), repr(sorted(params.items())))
        have = self._store.setdefault(key, {})
        self._store.move_to_end(key)
        missing = [int(d) for d in depths if int(d) not in have]
        if missing:
            self.misses += 1
            todo = missing
            if one_pass_available():  # the shallower depths come free with the deepest
                todo = sorted(set(range(1, max(missing) + 1)) | set(missing))
            have.update(kernels_by_depth(X1, X2, todo, **kw))
            self._evict()
        else:
            self.hits += 1
        return {int(d): have[int(d)] for d in depths}

    def _evict(self) -> None:
        def size() -> int:
            return sum(K.nbytes for entry in self._store.values() for K in entry.values())

        while len(self._store) > 1 and size() > self.max_bytes:
            self._store.popitem(last=False)


def kernel_diag(X, *, activation, depth: int, kind: str = "ntk", convention: str = "arora",
                W_std: float = 1.0, b_std: float = 0.0, method: str = "auto",
                **options) -> np.ndarray:
    """diag K(X, X) from the per-row variances only (math.md §1, the x = x' case).

    Σ_h(x, x) = cσ D_σ(q, q, q), Θ_h = Σ_h + Θ_{h−1} cσ D_σ'(q, q, q) (arora;
    nt: W²·D + b² and W²(Θ D_σ' + D_σ) + b²): N dual evaluations per layer
    instead of N².
    """
    from .duals import as_activation, c_sigma, dual, resolve_method

    X = _as_2d(X, "X")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise InputError(f"depth must be a non-negative integer, got {depth!r}")
    if kind not in ("ntk", "nngp") or convention not in ("arora", "nt"):
        raise InputError(f"unknown kind {kind!r} or convention {convention!r}")
    if convention == "arora" and (W_std != 1.0 or b_std != 0.0):
        raise InputError("W_std and b_std apply to convention 'nt' only")
    act = as_activation(activation)
    w2, b2 = float(W_std) ** 2, float(b_std) ** 2
    sq = np.einsum("ij,ij->i", X, X)
    if convention == "arora":
        cs, q = c_sigma(act), sq
    else:
        cs, q = 1.0, w2 * sq / X.shape[1] + b2
    ntk = q.copy()

    def D(derivative: bool, v: np.ndarray) -> np.ndarray:
        name = resolve_method(act, derivative, method, npoints=v.size)
        return dual(act, v, v, v, derivative=derivative, method=name, **options)

    for _ in range(int(depth)):
        T = D(False, q)
        Td = D(True, q) if kind == "ntk" else None
        if convention == "arora":
            q = cs * T
            if Td is not None:
                ntk = q + ntk * (cs * Td)
        else:
            if Td is not None:
                ntk = w2 * (ntk * Td + T) + b2
            q = w2 * T + b2
    return ntk if kind == "ntk" else q


# ----------------------------------------------------------------------------- estimator


class KernelRegressor:
    """Kernel (ridge) regression with the NTK or NNGP of an infinitely wide network.

    Kernel parameters mirror :func:`ntkhgm.kernel`; ``depth`` may also be a list
    of depths, chosen by leave-one-out together with λ.  ``ridge``: λ ≥ 0, or
    ``"auto"`` (leave-one-out over :data:`RIDGE_GRID_EXPONENTS` · mean(diag K)).
    ``input_scale``: ``"auto"``, ``"unit-norm"`` or ``"none"`` (:class:`InputScale`).
    ``center``: subtract the training mean of y (``"auto"``: yes unless
    ``input_scale="none"``, the seed's setting).  ``method_options`` go to the
    dual-activation method (``degree`` for gh, ``tol`` for hgm).  ``kernel_cache``:
    a :class:`KernelCache` shared by estimators (e.g. the candidates of a grid search).

    Scale (issue 10): ``solver`` (:data:`SOLVERS`): ``"direct"`` factorises in K's
    own memory (Cholesky; with leave-one-out, the eigendecomposition it needs
    anyway), ``"cg"`` runs conjugate gradients over K written to a zarr store
    (``kernel_store``, default a temporary folder; ``cg_tol``; ``ridge="auto"``
    by leave-one-out on :data:`CG_LOO_ROWS` random rows; no GP posterior),
    ``"auto"`` the direct solver when :func:`direct_solver_memory` fits the budget.
    ``memory`` (a budget such as ``"16GB"``) and ``tile`` size the kernel's tiles.

    After :meth:`fit`: ``ridge_`` and ``depth_`` (the values used), ``loo_error_``
    (mean squared LOO residual, NaN for an explicit ridge), ``loo_`` (the whole
    :class:`LooChoice`), ``y_offset_``, ``alpha_`` = (K + λI)⁻¹(y − y_offset_),
    ``X_train_`` (scaled training inputs), ``input_scale_`` (the fitted scaling),
    ``centered_`` (whether the targets were centred), ``K_train_diag_`` (diag K),
    ``solver_`` (``"direct"`` or ``"cg"``), ``cg_iterations_``, ``loo_rows_``.
    """

    def __init__(self, activation: str = "relu", depth: int | Sequence[int] = 1,
                 ridge: float | str = "auto", *, kind: str = "ntk",
                 convention: str = "arora", W_std: float = 1.0, b_std: float = 0.0,
                 method: str = "auto", input_scale: str = "auto",
                 center: bool | str = "auto", method_options: dict | None = None,
                 kernel_cache: KernelCache | None = None, solver: str = "auto",
                 memory: str | int | float | None = None, tile: int | None = None,
                 kernel_store: str | None = None, cg_tol: float | None = None):
        self.activation = activation
        self.depth = depth
        self.ridge = ridge
        self.kind = kind
        self.convention = convention
        self.W_std = W_std
        self.b_std = b_std
        self.method = method
        self.input_scale = input_scale
        self.center = center
        self.method_options = method_options
        self.kernel_cache = kernel_cache
        self.solver = solver
        self.memory = memory
        self.tile = tile
        self.kernel_store = kernel_store
        self.cg_tol = cg_tol

    _PARAMS = ("activation", "depth", "ridge", "kind", "convention", "W_std", "b_std",
               "method", "input_scale", "center", "method_options", "kernel_cache",
               "solver", "memory", "tile", "kernel_store", "cg_tol")

    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters (scikit-learn style)."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> KernelRegressor:
        """Set constructor parameters (scikit-learn style)."""
        for k, v in params.items():
            if k not in self._PARAMS:
                raise InputError(f"invalid parameter {k!r} for KernelRegressor")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"KernelRegressor({args})"

    # -- helpers

    def _kernel_kw(self, kind: str | None = None) -> dict:
        return dict(activation=self.activation, kind=kind or self.kind,
                    convention=self.convention, W_std=self.W_std, b_std=self.b_std,
                    method=self.method, **dict(self.method_options or {}))

    def _kernels(self, X1, X2, depths: Sequence[int], progress: Progress | None = None, *,
                 kind: str | None = None, client=None) -> dict[int, np.ndarray]:
        kw = self._kernel_kw(kind)
        for key, value in (("progress", progress), ("client", client), ("tile", self.tile),
                           ("memory", self.memory)):
            if value is not None:
                kw[key] = value
        if self.kernel_cache is not None:
            return self.kernel_cache.kernels(X1, X2, depths, **kw)
        return kernels_by_depth(X1, X2, depths, **kw)

    def _kernel(self, X1, X2=None, progress: Progress | None = None, *,
                kind: str | None = None, client=None) -> np.ndarray:
        return self._kernels(X1, X2, [self.depth_], progress, kind=kind,
                             client=client)[self.depth_]

    def _depths(self) -> tuple[int, ...]:
        d = self.depth
        depths = (tuple(d) if isinstance(d, (list, tuple, np.ndarray)) else (d,))
        if not depths:
            raise InputError("depth must be an integer >= 0 or a non-empty list of them")
        for v in depths:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InputError(f"depth must be an integer >= 0 or a list of them, got {d!r}")
        if len(set(depths)) != len(depths):
            raise InputError(f"depth lists a value twice: {d!r}")
        return tuple(int(v) for v in depths)

    def _centers(self) -> bool:
        if self.center == "auto":
            return self.input_scale != "none"
        if self.center is True or self.center is False:
            return self.center
        raise InputError(f"center must be 'auto', True or False, got {self.center!r}")

    # -- fit / predict

    def _check_solver(self, depths: tuple[int, ...]) -> None:
        if self.solver not in SOLVERS:
            raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.solver != "cg" and (self.kernel_store is not None or self.cg_tol is not None):
            raise InputError("kernel_store (--kernel-store) and cg_tol (--cg-tol) apply to "
                             f"solver 'cg' only, not to solver {self.solver!r}")
        if self.kernel_store is not None and not str(self.kernel_store).lower().endswith(".zarr"):
            raise InputError(f"kernel_store {str(self.kernel_store)!r}: the kernel of the cg "
                             "solver is a zarr store, give a path ending in .zarr")
        if self.cg_tol is not None and not (isinstance(self.cg_tol, (int, float))
                                            and 0 < self.cg_tol < 1):
            raise InputError(f"cg_tol must be a number in (0, 1), got {self.cg_tol!r}")
        if self.memory is not None:
            from .tiling import parse_memory

            parse_memory(self.memory, "memory")
        if self.solver == "cg" and len(depths) > 1:
            raise InputError("a list of depths is chosen by leave-one-out, which needs the "
                             "direct solver; give one depth with solver 'cg'")

    def _choose_solver(self, n: int, depths: tuple[int, ...], loo: bool) -> str:
        """``direct`` where K (and, for leave-one-out, its eigenvectors) fit the memory
        budget, else ``cg`` (solver ``auto``); an error for ``direct`` when they do not."""
        if self.solver == "cg":
            return "cg"
        need = direct_solver_memory(n, len(depths), loo)
        fits, have = _fits_memory(need, self.memory)
        if fits:
            return "direct"
        if self.solver == "direct":
            from .tiling import format_bytes

            raise InputError(f"the direct solver needs {format_bytes(need)} for the "
                             f"{n}×{n} kernel{' and its eigenvectors (ridge auto)' if loo else ''}"
                             f", {format_bytes(have)} available; use solver 'cg' (--solver cg)")
        return "cg"

    def fit(self, X, y, *, progress: Progress | None = None, client=None) -> KernelRegressor:
        """Scale X, compute K(X, X), choose λ (and depth) if asked, solve (K + λI)α = y − ȳ.

        ``client``: a ``dask.distributed.Client`` for the kernel's tiles (and the
        conjugate-gradient products).
        """
        X = _as_2d(X, "X")
        y = np.asarray(y, dtype=np.float64)
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise InputError(f"y must have {X.shape[0]} rows (one per row of X), "
                             f"got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise InputError("y contains NaN or infinite values")
        depths = self._depths()
        auto = isinstance(self.ridge, str)
        if auto and self.ridge != "auto":
            raise InputError(f"ridge must be 'auto' or a finite number >= 0, got {self.ridge!r}")
        ridge = float("nan")
        if not auto:
            ridge = float(self.ridge)
            if not (np.isfinite(ridge) and ridge >= 0):
                raise InputError(f"ridge must be 'auto' or a finite number >= 0, "
                                 f"got {self.ridge!r}")
        self._check_solver(depths)
        center = self._centers()
        scaler = InputScale(self.input_scale).fit(X)
        Xs = scaler.transform(X)
        offset = y.mean(axis=0) if center else np.zeros(y.shape[1:])
        yc = y - offset if center else y
        loo = auto or len(depths) > 1
        solver = self._choose_solver(len(X), depths, loo)
        self.__dict__.pop("nngp_train_", None)  # the NTK-GP's NNGP of an earlier fit
        self.cg_iterations_ = None
        if solver == "cg":
            depth = depths[0]
            self.depth_ = depth
            ridge, self.alpha_, self.K_train_diag_ = self._fit_cg(Xs, y, yc, ridge, center,
                                                                 progress, client)
            self.system_ = None
        else:
            Ks = self._kernels(Xs, None, depths, progress, client=client)
            own = self.kernel_cache is None  # a cached K is shared: not to be overwritten
            diags = {d: np.diag(K).copy() for d, K in Ks.items()}
            if loo:
                self.loo_, w, V = _loo_search(Ks, y, center=center,
                                              ridges=None if auto else [ridge], overwrite=own)
                ridge, depth, self.loo_error_ = self.loo_.ridge, self.loo_.depth, self.loo_.error
                self.K_train_diag_ = diags[depth]
                del Ks
                self.system_ = EigenSystem(w, V, ridge)
            else:
                self.loo_, depth, self.loo_error_ = None, depths[0], float("nan")
                K = Ks.pop(depth)
                del Ks
                self.K_train_diag_ = np.diag(K).copy()
                self.system_ = CholeskySystem(factor_kernel_system(K, ridge, overwrite=own))
                del K
            self.alpha_ = self.system_.solve(yc)
        if solver == "direct":
            self.loo_rows_ = len(X) if loo else None
        self.solver_ = solver
        self.ridge_, self.depth_ = ridge, depth
        self.y_offset_ = offset
        self.centered_ = center
        self.input_scale_ = scaler
        self.X_train_ = Xs
        self.y_train_ = y
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_cg(self, Xs, y, yc, ridge: float, center: bool, progress, client):
        """Conjugate gradients over K(X, X) written tile by tile to a zarr store:
        (λ, α, diag K); ``ridge`` NaN: λ by leave-one-out on CG_LOO_ROWS rows."""
        import shutil
        import tempfile
        from pathlib import Path

        from .kernels import plan_kernel, run_tiles
        from .solvers import DEFAULT_TOL, conjugate_gradient, open_kernel
        from .store import TiledOutput, check_output, check_size

        n = len(Xs)
        tmp = None
        if self.kernel_store is not None:
            path = str(self.kernel_store)
            check_output(path, (self.depth_,))
        else:
            tmp = tempfile.mkdtemp(prefix="ntkhgm-cg-")
            path = str(Path(tmp) / "K.zarr")
        try:
            check_size(path, (n, n), 1)
            kw = self._kernel_kw()
            workers = 1
            if client is not None:
                from .parallel import n_workers

                workers = n_workers(client)
            plan, _ = plan_kernel(Xs, None, depth=self.depth_, tile=self.tile,
                                  memory=self.memory, parallel=workers, **kw)
            store = TiledOutput(path, plan, resume=False, compressed=False)
            try:
                run_tiles(plan, store.write, client=client, progress=progress)
            except BaseException:
                store.discard()
                raise
            store.finish()
            K = open_kernel(path)
            from .solvers import _block_rows, _diagonal

            diag = _diagonal(K, _block_rows(n, 1, self.memory))
            if np.isnan(ridge):
                rows = np.sort(np.random.default_rng(0).choice(n, min(n, CG_LOO_ROWS),
                                                               replace=False))
                sub = np.asarray(K.get_orthogonal_selection((rows, rows)), dtype=np.float64)
                self.loo_ = choose_ridge({self.depth_: sub}, y[rows], center=center)
                self.loo_error_, ridge = self.loo_.error, self.loo_.ridge
                del sub
            else:
                self.loo_, self.loo_error_ = None, float("nan")
            self.loo_rows_ = None if self.loo_ is None else min(n, CG_LOO_ROWS)
            tol = DEFAULT_TOL if self.cg_tol is None else float(self.cg_tol)
            rank = nystrom_rank(n, self.memory)
            alpha, self.cg_iterations_ = conjugate_gradient(
                K, yc, ridge, tol=tol, maxiter=min(10 * n, CG_MAXITER), memory=self.memory,
                client=client, preconditioner="nystrom" if rank else "jacobi", rank=rank)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return ridge, alpha, diag

    def predict(self, X, *, return_std: bool = False, return_cov: bool = False,
                progress: Progress | None = None, client=None):
        """f(X) = ȳ + K(X, X_train) α; with return_std / return_cov the GP posterior too.

        Returns the mean, or ``(mean, std)`` / ``(mean, cov)`` (see the module
        docstring: NNGP posterior for kind nngp, NTK-GP for kind ntk; direct
        solver only).  ``client``: a Dask client for the kernel's tiles.
        """
        if not hasattr(self, "alpha_"):
            raise InputError("KernelRegressor.predict called before fit")
        if return_std and return_cov:
            raise InputError("at most one of return_std and return_cov can be requested")
        if (return_std or return_cov) and self.system_ is None:
            raise InputError("the GP posterior (return_std, return_cov) needs the direct "
                             "solver; this model was fitted by conjugate gradients "
                             "(solver 'cg')")
        X = _as_2d(X, "X")
        if X.shape[1] != self.X_train_.shape[1]:
            raise InputError(f"X has {X.shape[1]} columns, the training data "
                             f"{self.X_train_.shape[1]}")
        X = self.input_scale_.transform(X)
        if not (return_std or return_cov):
            # the mean only: K(X, X_train) in batches of test rows within the budget
            step = self._predict_rows(len(X))
            mean = np.concatenate([
                self._kernel(X[r0:r0 + step], self.X_train_, progress=progress,
                             client=client) @ self.alpha_ for r0 in range(0, len(X), step)])
            return mean + self.y_offset_ if self.centered_ else mean
        Kx = self._kernel(X, self.X_train_, progress=progress, client=client)
        mean = Kx @ self.alpha_
        if self.centered_:
            mean = mean + self.y_offset_
        A = self.system_.solve(Kx.T)  # (K + λI)⁻¹ K(X_train, X)
        if self.kind == "nngp":
            if return_cov:
                cov = self._kernel(X, kind="nngp") - Kx @ A
            else:
                var = self._diag(X, "nngp") - np.einsum("ij,ji->i", Kx, A)
        else:
            # NTK-GP: the prior covariance is the NNGP, the fit is the NTK's
            Nx = self._kernel(X, self.X_train_, kind="nngp")
            if not hasattr(self, "nngp_train_"):
                self.nngp_train_ = self._kernel(self.X_train_, kind="nngp")
            NA = self.nngp_train_ @ A
            if return_cov:
                cross = Nx @ A
                cov = self._kernel(X, kind="nngp") - cross - cross.T + A.T @ NA
            else:
                var = (self._diag(X, "nngp") - 2.0 * np.einsum("ij,ji->i", Nx, A)
                       + np.einsum("ji,ji->i", A, NA))
        if return_cov:
            return mean, 0.5 * (cov + cov.T)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def _predict_rows(self, n: int) -> int:
        """Test rows per batch of K(X, X_train): all of them when that fits a quarter of
        the budget (``memory``, ``NTKHGM_MEMORY``, else the available memory)."""
        from .tiling import available_memory, current_rss, memory_budget

        budget = memory_budget(self.memory)
        have = budget - current_rss() if budget is not None else available_memory()
        return int(max(1, min(n, 0.25 * have // (8 * len(self.X_train_)))))

    def _diag(self, X, kind: str) -> np.ndarray:
        kw = self._kernel_kw(kind)
        return kernel_diag(X, depth=self.depth_, **kw)

    def score(self, X, y) -> float:
        """R² of the predictions on (X, y)."""
        return r2_score(y, self.predict(X))


def factor_kernel_system(K: np.ndarray, ridge: float = 0.0, *, overwrite: bool = False):
    """Cholesky factor of K + ridge·I (scipy cho_factor form); SingularKernelError if not PD.

    ``overwrite=True``: the factor is computed in K's own memory (K, symmetric
    float64, is destroyed): no N×N copy.
    """
    n = K.shape[0]
    if overwrite and K.dtype == np.float64 and (K.flags.c_contiguous or K.flags.f_contiguous):
        A = _fortran_view(K)
    else:
        A = np.array(K, dtype=np.float64, order="F", copy=True)
    hint = (f"the kernel matrix K + {ridge:g}·I ({n}×{n}) is singular or not positive "
            "definite (duplicate or collinear training rows?); use a ridge, "
            "e.g. --ridge 1e-8 (KernelRegressor(ridge=...))")
    if not _all_finite(A):
        raise SingularKernelError("the kernel matrix contains NaN or infinite values")
    A[np.diag_indices(n)] += ridge
    # ‖A‖₁ (column sums; A is symmetric, so row sums) in row blocks
    anorm = max(float(np.abs(A[r0:r0 + step]).sum(axis=1).max())
                for step in [_row_blocks(n, n).step] for r0 in range(0, n, step))
    try:
        factor = linalg.cho_factor(A, lower=False, overwrite_a=True, check_finite=False)
    except linalg.LinAlgError:
        raise SingularKernelError(hint) from None
    rcond, info = lapack.dpocon(factor[0], anorm, uplo="U")
    if info != 0 or not rcond > RCOND_FACTOR * n * np.finfo(float).eps:
        raise SingularKernelError(hint + f" [reciprocal condition number {rcond:.1e}]")
    return factor


def direct_solver_memory(n: int, n_depths: int = 1, loo: bool = False) -> int:
    """Bytes the direct solver needs at its peak: one N×N kernel per depth, plus the
    eigenvectors for leave-one-out (the factorisations work in the kernel's memory)."""
    return 8 * n * n * (n_depths + (1 if loo else 0)) + DIRECT_OVERHEAD


def nystrom_rank(n: int, memory) -> int:
    """Rank of the cg solver's Nyström preconditioner: NYSTROM_RANK columns, fewer where
    its four n×rank arrays would take more than a quarter of the budget (0: Jacobi)."""
    from .solvers import NYSTROM_RANK

    have = _fits_memory(0, memory)[1]
    rank = int(min(NYSTROM_RANK, n, 0.25 * have // (32 * n)))
    return rank if rank >= 20 else 0


def _fits_memory(need: int, memory) -> tuple[bool, int]:
    """(need ≤ what the budget leaves, what it leaves): the budget (``memory`` or
    ``NTKHGM_MEMORY``) less this process's memory, else the available memory."""
    from .tiling import available_memory, current_rss, memory_budget

    budget = memory_budget(memory)
    have = budget - current_rss() if budget is not None else available_memory()
    return need <= have, max(0, int(have))


class CholeskySystem:
    """(K + λI)⁻¹ B by the Cholesky factor of :func:`factor_kernel_system`."""

    def __init__(self, factor):
        self.factor = factor

    def solve(self, B: np.ndarray) -> np.ndarray:
        return linalg.cho_solve(self.factor, B, check_finite=False)


class EigenSystem:
    """(K + λI)⁻¹ B = V diag(1/(w + λ)) Vᵀ B from the eigendecomposition of leave-one-out."""

    def __init__(self, w: np.ndarray, V: np.ndarray, ridge: float):
        self.w, self.V, self.ridge = w, V, float(ridge)

    def solve(self, B: np.ndarray) -> np.ndarray:
        inv = 1.0 / (self.w + self.ridge)
        C = self.V.T @ B
        return self.V @ (inv[:, None] * C if C.ndim == 2 else inv * C)


def solve_kernel_system(K: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Solve (K + ridge·I) α = y by Cholesky; SingularKernelError if not positive definite."""
    return linalg.cho_solve(factor_kernel_system(K, ridge), y, check_finite=False)


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
