"""Gauss–Hermite tensor rule for dual activations (docs/math.md §7).

The baseline that neural-tangents' ``ElementwiseNumerical`` uses: exact for
polynomial σ of degree < 2n, spectrally accurate for smooth σ, and only
algebraically convergent for kinked σ (ReLU, ReSin), where the error at the
usual degree 25 is around 1e-3.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.special import roots_hermite

from ..errors import InputError
from .covariance import correlation

DEFAULT_DEGREE = 25


@cache
def hermgauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Physicists' Gauss–Hermite nodes and weights (weight e^{−t²}).

    scipy's Golub–Welsch/asymptotic rule stays finite at high degree, where
    numpy's ``hermgauss`` returns NaN weights (above degree ~370).
    """
    return roots_hermite(n)


def gauss_hermite_dual(f, a, b, c, *, degree: int = DEFAULT_DEGREE,
                       chunk_entries: int = 4_000_000) -> np.ndarray:
    """E[f(u) f(v)] ≈ (1/π) Σ_ij w_i w_j f(u_ij) f(v_ij), (u, v)ᵀ = √2 L (t_i, t_j)ᵀ.

    L = [[√a, 0], [ρ√b, s√b]] is the Cholesky factor of Λ (ρ = c/√(ab),
    s = √(1 − ρ²)), which stays finite for degenerate Λ.  Vectorised over the
    points in chunks of ``chunk_entries`` evaluations of f.
    """
    if int(degree) != degree or degree < 1:
        raise InputError(f"Gauss–Hermite degree must be an integer ≥ 1, got {degree!r}")
    a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (a, b, c)))
    shape = a.shape
    a, b, c = a.ravel(), b.ravel(), c.ravel()
    t, w = hermgauss(degree)
    _, rho, s, _, _ = correlation(a, b, c)
    out = np.empty(a.size)
    step = max(1, chunk_entries // (degree * degree))
    for lo in range(0, a.size, step):
        sl = slice(lo, lo + step)
        fu = f(np.sqrt(2.0 * a[sl])[:, None] * t)                               # (p, i)
        sb = np.sqrt(2.0 * b[sl])[:, None, None]
        fv = f(sb * (rho[sl, None, None] * t[:, None] + s[sl, None, None] * t))  # (p, i, j)
        out[sl] = np.einsum("pi,i,pij,j->p", fu, w, fv, w, optimize=True) / np.pi
    return out.reshape(shape)
