"""A batched fixed-step Runge–Kutta integrator with per-path error control.

Many independent linear ODEs dy/dτ = M(τ) y, one per path, all on τ ∈ [0, 1],
advance together in numpy (no Python loop per path).  Each run uses n equal
steps of Dormand–Prince 8 (the 12-stage, 8th-order part of DOP853); the error
of every path is estimated by comparing n and n/2 steps, and only the paths
that miss the tolerance (max norm, per path) are rerun with twice the steps.
Unlike one ``solve_ivp`` call on the stacked system, whose RMS error norm lets
one hard path hide among many easy ones, every path meets the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import IntegrationError

# Dormand–Prince 8(5,3): the coefficients of scipy's DOP853 (imported on first use:
# scipy.integrate costs ~0.2 s that series-only evaluation never needs)
_TABLEAU: tuple = ()


def _tableau() -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    global _TABLEAU
    if not _TABLEAU:
        from scipy.integrate._ivp import dop853_coefficients as dop

        n = dop.N_STAGES
        _TABLEAU = (n, dop.A[:n, :n], dop.B, dop.C[:n])
    return _TABLEAU

# rhs(tau, y, idx) -> dy/dτ for the paths idx (y has shape (len(idx), r))
RHS = Callable[[float, np.ndarray, np.ndarray], np.ndarray]


def _combine(weights: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Σ_j weights[j]·k[j] elementwise, in a fixed order (not BLAS, whose vectorised
    tails round some positions differently: a path must not depend on its batch)."""
    out = weights[0] * k[0]
    for j in range(1, weights.size):
        if weights[j] != 0.0:
            out = out + weights[j] * k[j]
    return out


BLOCK = 256   # paths integrated together: their coefficients stay in cache across stages


def _run(rhs: RHS, y0: np.ndarray, idx: np.ndarray, nsteps: int) -> np.ndarray:
    """_run_block over blocks of BLOCK paths (a path's arithmetic is its own: the result
    does not depend on the blocking)."""
    if idx.size <= BLOCK:
        return _run_block(rhs, y0, idx, nsteps)
    return np.concatenate([_run_block(rhs, y0[lo:lo + BLOCK], idx[lo:lo + BLOCK], nsteps)
                           for lo in range(0, idx.size, BLOCK)])


def _run_block(rhs: RHS, y0: np.ndarray, idx: np.ndarray, nsteps: int) -> np.ndarray:
    y = y0.copy()
    carry = np.zeros_like(y)     # compensated (Kahan) sum of the steps: rounding ε|y|, not ε|y|√n
    h = 1.0 / nsteps
    stages, A, B, C = _tableau()
    k = np.empty((stages,) + y.shape)
    for step in range(nsteps):
        t = step * h
        for s in range(stages):
            ys = y + h * _combine(A[s, :s], k) if s else y
            k[s] = rhs(t + C[s] * h, ys, idx)
        inc = h * _combine(B, k) - carry
        new = y + inc
        carry = (new - y) - inc
        y = new
    return y


def integrate(rhs: RHS, y0: np.ndarray, *, tol: float, scale: np.ndarray | None = None,
              weights: np.ndarray | None = None, start_steps: int = 16,
              max_steps: int = 4096, strict: bool = True) -> np.ndarray:
    """y(1) for every path; ``y0`` has shape (paths, r).

    The error estimate max_i w_i |y_n − y_{n/2}|_i of each path (``weights`` w,
    shape like y0, default 1), divided by ``scale`` (per path; default max|y|),
    must fall below ``tol``; otherwise the path is rerun with doubled n, up to
    ``max_steps``, or until the estimate stops falling (a rounding floor).  A
    path that misses the tolerance raises IntegrationError, or with
    ``strict=False`` is returned as NaN for the caller to evaluate otherwise.
    """
    paths = y0.shape[0]
    out = np.empty_like(y0)
    todo = np.arange(paths)
    coarse = _run(rhs, y0, todo, start_steps // 2)
    n = start_steps
    last = np.full(paths, np.inf)
    while todo.size:
        fine = _run(rhs, y0[todo], todo, n)
        w = 1.0 if weights is None else weights[todo]
        ref = np.max(np.abs(fine) * w, axis=1) if scale is None else scale[todo]
        diff = np.abs(fine - coarse) * w
        err = np.max(diff, axis=1) / np.maximum(ref, 1e-300)
        ok = err <= tol
        out[todo[ok]] = fine[ok]
        if np.all(ok):
            break
        stalled = (n >= 512) & (err > 0.5 * last[todo])
        last[todo] = err
        if not strict and np.any(stalled & ~ok):
            out[todo[stalled & ~ok]] = np.nan
            ok |= stalled
        if np.all(ok):
            break
        if 2 * n > max_steps:
            if not strict:
                out[todo[~ok]] = np.nan
                break
            i = int(todo[~ok][0])
            exc = IntegrationError(
                f"path integration did not reach tol={tol:g} in {n} steps "
                f"(estimate {err[~ok][0]:.2e})")
            exc.path = i
            raise exc
        todo, coarse, n = todo[~ok], fine[~ok], 2 * n
    return out
