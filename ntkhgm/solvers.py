"""(K + λI) α = y for kernels beyond memory: preconditioned conjugate gradients (issue 10 item 4).

Kernel regression (seed eq. 2, math.md §1) needs α = (K + λI)⁻¹ y.  When K is
an out-of-core ``.npy`` or ``.zarr`` file written by ``ntkhgm kernel -o``, a
Cholesky factorisation would need K in memory; conjugate gradients need only
products K·V, computed here by reading K in blocks of rows (each block within
the memory budget) or, with a Dask ``client``, by the cluster on a zarr store
the workers can read.  Preconditioners: Jacobi's, 1/(K_ii + λ), or Nyström's
(:func:`nystrom_preconditioner`: one pass over K for a few hundred columns, then
far fewer passes).  Every column of y is its own CG run, all sharing each pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InputError, NumericalError

DEFAULT_TOL = 1e-10


def open_kernel(path: str | Path, depth: int | None = None):
    """A read-only view of a kernel file: ``.npy`` memory-mapped, or a zarr array
    (``depth_<L>`` of a zarr group written with several depths)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        try:
            K = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: not a readable .npy kernel ({exc})") from None
    elif p.suffix.lower() == ".zarr":
        import zarr

        try:
            node = zarr.open(str(p), mode="r")
        except Exception as exc:  # zarr raises several types for a bad store
            raise InputError(f"{p}: not a readable zarr kernel ({exc})") from None
        if isinstance(node, zarr.Group):
            names = sorted(k for k in node.array_keys() if k.startswith("depth_"))
            name = f"depth_{depth}" if depth is not None else (names[0] if len(names) == 1
                                                               else None)
            if name is None or name not in names:
                raise InputError(f"{p}: holds {', '.join(names) or 'no kernels'}; "
                                 "choose one with depth=")
            node = node[name]
        K = node
    else:
        raise InputError(f"{p}: a kernel file is .npy or .zarr")
    if len(K.shape) != 2 or K.shape[0] != K.shape[1] or K.dtype != np.float64:
        raise InputError(f"{p}: expected a square float64 kernel, got {K.dtype} "
                         f"{tuple(K.shape)}")
    return K


def _block_rows(n: int, columns: int, memory: str | int | float | None) -> int:
    from .tiling import available_memory, memory_budget

    budget = memory_budget(memory)
    work = budget if budget is not None else min(0.25 * available_memory(), 1 << 30)
    return int(max(1, min(n, work // (8 * (n + columns)))))


def _blocked_matvec(K, block: int) -> Callable[[np.ndarray], np.ndarray]:
    n = K.shape[0]

    def matvec(V: np.ndarray) -> np.ndarray:
        out = np.empty((n, V.shape[1]))
        for r0 in range(0, n, block):
            out[r0:r0 + block] = np.asarray(K[r0:r0 + block], dtype=float) @ V
        return out

    return matvec


def _dask_matvec(K, client) -> Callable[[np.ndarray], np.ndarray]:
    import dask.array as da

    dK = da.from_zarr(K) if not isinstance(K, np.ndarray) else da.from_array(K)

    def matvec(V: np.ndarray) -> np.ndarray:
        return np.asarray(client.compute(dK @ V).result())

    return matvec


def _diagonal(K, block: int) -> np.ndarray:
    n = K.shape[0]
    d = np.empty(n)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        rows = np.asarray(K[r0:r1, r0:r1], dtype=float)
        d[r0:r1] = np.diagonal(rows)
    return d


def nystrom_preconditioner(K, ridge: float, rank: int, seed: int = 0
                           ) -> Callable[[np.ndarray], np.ndarray]:
    """V ↦ P⁻¹V for P = K̂ + λI, K̂ = C W⁺ Cᵀ the Nyström approximation of K on ``rank``
    random columns S (C = K[:, S], W = K[S, S]; seeded).

    One pass over K reads C; then O(n·rank²).  With K̂ = U diag(s²) Uᵀ (U n×r
    orthonormal), P⁻¹V = U diag(1/(s² + λ)) UᵀV + (V − UUᵀV)/λ, so that
    P^{-1/2}(K + λI)P^{-1/2} has condition ≤ 1 + ‖K − K̂‖/λ (Frangella, Tropp and
    Udell 2023, "Randomized Nyström preconditioning").  Needs λ > 0.
    """
    n = K.shape[0]
    cols = np.sort(np.random.default_rng(seed).choice(n, min(n, rank), replace=False))
    if isinstance(K, np.ndarray):
        C = np.array(K[:, cols], dtype=float)
    elif hasattr(K, "get_orthogonal_selection"):
        C = np.asarray(K.get_orthogonal_selection((slice(None), cols)), dtype=float)
    else:
        C = np.asarray(K[:, cols], dtype=float)
    W = C[cols]
    d, Q = np.linalg.eigh(0.5 * (W + W.T))
    keep = d > max(d[-1], 0.0) * len(d) * np.finfo(float).eps * 10
    B = C @ (Q[:, keep] / np.sqrt(d[keep]))            # K̂ = B Bᵀ
    del C
    s2, V = np.linalg.eigh(B.T @ B)                     # BᵀB = V diag(s²) Vᵀ
    keep = s2 > max(s2[-1], 0.0) * len(s2) * np.finfo(float).eps * 10
    U = B @ (V[:, keep] / np.sqrt(s2[keep]))
    inv = 1.0 / (s2[keep] + ridge)

    def apply(R: np.ndarray) -> np.ndarray:
        T = U.T @ R
        return U @ (inv[:, None] * T) + (R - U @ T) / ridge

    return apply


PRECONDITIONERS = ("jacobi", "nystrom")
NYSTROM_RANK = 500
"""Default rank (columns of K) of the Nyström preconditioner."""


def conjugate_gradient(K, y, ridge: float = 0.0, *, tol: float = DEFAULT_TOL,
                       maxiter: int | None = None, memory: str | int | float | None = None,
                       client=None, progress: Callable[[int, int], None] | None = None,
                       preconditioner: str = "jacobi", rank: int = NYSTROM_RANK
                       ) -> tuple[np.ndarray, int]:
    """α with ‖(K + λI)α − y‖ ≤ tol·‖y‖ per column, by preconditioned CG.

    ``K``: an array, a memory-mapped ``.npy`` or a zarr array (see
    :func:`open_kernel`), symmetric positive (semi)definite; ``y``: (n,) or
    (n, m).  Products K·V read K in blocks of rows within the memory budget,
    or run on a Dask ``client`` (K a zarr array the workers can read).
    ``preconditioner``: ``jacobi`` (1/(K_ii + λ)) or ``nystrom``
    (:func:`nystrom_preconditioner` of ``rank``, λ > 0; far fewer iterations when
    K's spectrum decays, as NTK and NNGP spectra do).  Returns (α, iterations);
    raises NumericalError when ``maxiter`` (default 10 n) iterations do not reach ``tol``.
    """
    n = K.shape[0]
    y = np.asarray(y, dtype=float)
    single = y.ndim == 1
    Y = y[:, None] if single else y
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InputError(f"y must have {n} rows, got shape {y.shape}")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise InputError(f"ridge must be a finite number ≥ 0, got {ridge!r}")
    if not np.all(np.isfinite(Y)):
        raise InputError("y contains NaN or infinite values")
    block = _block_rows(n, Y.shape[1], memory)
    chunk = getattr(K, "chunks", None)
    if chunk and block < n:  # whole zarr chunks per block: each chunk read once per pass
        block = max(chunk[0], block // chunk[0] * chunk[0])
    kv = _dask_matvec(K, client) if client is not None else _blocked_matvec(K, block)

    def A(V):
        return kv(V) + ridge * V

    diag = _diagonal(K, block) + ridge
    if not np.all(diag > 0):
        raise NumericalError("K + λI has a diagonal entry ≤ 0: not positive definite; "
                             "add a ridge")
    if preconditioner not in PRECONDITIONERS:
        raise InputError(f"preconditioner must be one of {', '.join(PRECONDITIONERS)}, "
                         f"got {preconditioner!r}")
    if preconditioner == "nystrom" and ridge > 0:
        precondition = nystrom_preconditioner(K, ridge, int(rank))
    else:  # Jacobi (also Nyström's fallback for λ = 0, where P = K̂ is singular)
        Minv = 1.0 / diag[:, None]

        def precondition(R: np.ndarray) -> np.ndarray:
            return Minv * R
    maxiter = 10 * n if maxiter is None else int(maxiter)  # rounding: more than n steps
    X = np.zeros_like(Y)
    R = Y.copy()
    Z = precondition(R)
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    goal = tol * np.linalg.norm(Y, axis=0)
    active = np.linalg.norm(R, axis=0) > goal
    it = 0
    while np.any(active):
        if it >= maxiter:
            worst = float(np.max(np.linalg.norm(R, axis=0) / np.maximum(goal / tol, 1e-300)))
            raise NumericalError(f"conjugate gradients did not reach tol={tol:g} in {maxiter} "
                                 f"iterations (relative residual {worst:.1e}); K + λI may be "
                                 "ill-conditioned: increase the ridge")
        AP = A(P)
        pap = np.einsum("ij,ij->j", P, AP)
        if np.any(active & ~(pap > 0)):
            raise NumericalError("K + λI is not positive definite (pᵀAp ≤ 0 in conjugate "
                                 "gradients); add a ridge")
        alpha = np.where(active, rz / np.where(pap > 0, pap, 1.0), 0.0)
        X += alpha * P
        R -= alpha * AP
        Z = precondition(R)
        rz_new = np.einsum("ij,ij->j", R, Z)
        beta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        P = Z + beta * P
        rz = rz_new
        it += 1
        active = np.linalg.norm(R, axis=0) > goal
        if progress is not None:
            progress(it, maxiter)
    return (X[:, 0] if single else X), it
