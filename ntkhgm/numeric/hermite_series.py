"""The dual activation as a series in ρ with per-variance factors (docs/math.md §8).

Price's theorem gives D_f(a, b, c) = Σ_k (c^k/k!) m_k(a) m_k(b), m_k(a) = E[f^{(k)}]; with
ρ = c/√(ab) and Gaussian integration by parts this is Mehler's expansion

    D_f(a, b, c) = Σ_n ρⁿ h_n(a) h_n(b),   h_n(a) = E_{z~N(0,1)}[f(√a z) He_n(z)] / √(n!),

whose coefficients are 1-D integrals, computed once per distinct variance.
Since Σ_n h_n(a)² = E f(√a z)², the truncation error after K terms is at most
|ρ|^{K+1} √(T_K(a) T_K(b)), T_K = Σ_{n>K} h_n² (Cauchy–Schwarz), which picks K
per pair.  Convergence is geometric in |ρ| but slow near |ρ| = 1, where the
Pfaffian ODE takes over.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .quadrature import composite_rule, expect_1d

Z_SERIES = 15.0   # ψ_n(z)·√φ(z) with √φ(15) ≈ 5e-25: beyond any K used here
K_BINS = (8, 16, 32, 64, 128, 256)
K_BINS_FAR = (512, 1024, 2048)


@cache
def _hermite_table(kmax: int, width: float, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and the table w(z)·φ(z)·He_k(z)/√(k!) (k = 0..kmax) of a composite rule.

    Gauss–Legendre panels of ``width`` on [−Z, Z], split at 0; the normalised
    Hermite polynomials come from their stable recurrence He_{k+1} = z He_k − k He_{k−1}.
    """
    m = int(np.ceil(Z_SERIES / width))
    z, w = composite_rule(np.linspace(0.0, Z_SERIES, m + 1), n)
    z, w = np.concatenate([-z[::-1], z]), np.concatenate([w[::-1], w])
    q = np.empty((kmax + 1, z.size))
    q[0] = w * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    if kmax >= 1:
        q[1] = z * q[0]
    for k in range(1, kmax):
        q[k + 1] = (z * q[k] - np.sqrt(k) * q[k - 1]) / np.sqrt(k + 1)
    return z, q


def hermite_coefficients(f, sa: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """h_n(sa²) for n = 0..kmax (shape (kmax+1, len(sa))) and the second moments E f(sa z)².

    f must be smooth except at 0.
    """
    sa = np.asarray(sa, dtype=float)
    # a rule per variance (widths rounded to powers of two: a few tables, each built once),
    # so that a coefficient does not depend on the other variances of the batch
    width = np.minimum(min(1.0, 2 * np.pi / np.sqrt(2 * kmax + 1)),
                       2 * np.pi / np.maximum(sa, 1e-300))
    width = 2.0 ** np.floor(np.log2(width))
    H = np.empty((kmax + 1, sa.size))
    for w in np.unique(width):
        m = width == w
        z, q = _hermite_table(kmax, float(w))
        H[:, m] = q @ f(sa[m][None, :] * z[:, None])
    second = expect_1d(lambda u: f(u) ** 2, sa)
    return H, np.atleast_1d(second)


def times_z(H: np.ndarray) -> np.ndarray:
    """The coefficients of z·g(z) from those of g (rows n = 0..K; returns rows 0..K−1):
    E[z g He_n]/√n! = √(n+1) h_{n+1} + √n h_{n−1}, from z He_n = He_{n+1} + n He_{n−1}."""
    n = np.arange(H.shape[0] - 1, dtype=float)[:, None]
    out = np.sqrt(n + 1.0) * H[1:]
    out[1:] += np.sqrt(n[1:]) * H[:-2]
    return out


TAIL_FLOOR = 1e-15


def tail_norms(H: np.ndarray, second: np.ndarray) -> np.ndarray:
    """T_K = E f² − Σ_{n≤K} h_n² for K = 0..kmax (shape like H).

    The difference is known only to the rounding of E f², so it is floored at
    TAIL_FLOOR·E f², not at 0: a tail computed as 0 on one side must not make
    the bound √(T_K(a) T_K(b)) vanish while the other side's tail is large.
    """
    return np.maximum(second[None, :] - np.cumsum(H * H, axis=0),
                      TAIL_FLOOR * second[None, :])


def terms_needed(rho: np.ndarray, tail_a: np.ndarray, tail_b: np.ndarray, scale: np.ndarray,
                 tol: float, bins=K_BINS) -> np.ndarray:
    """The smallest K in ``bins`` whose truncation bound is ≤ tol·scale; −1 if none.

    ``tail_a``/``tail_b`` are T_K at the bins for each pair, shape (len(bins), pairs).
    """
    absr = np.abs(rho)
    need = np.full(rho.shape, -1, dtype=int)
    for i in range(len(bins) - 1, -1, -1):
        k = bins[i]
        with np.errstate(under="ignore"):
            bound = absr ** (k + 1) * np.sqrt(tail_a[i] * tail_b[i])
        need[bound <= tol * scale] = k
    return need


def series_sum(H: np.ndarray, ia: np.ndarray, ib: np.ndarray, rho: np.ndarray, k: int,
               chunk: int = 1 << 16, H2: np.ndarray | None = None) -> np.ndarray:
    """Σ_{n≤k} ρⁿ h_n(a) g_n(b) by Horner, vectorised over pairs (ia, ib index the columns
    of H and of H2, the coefficients of the second function; default H2 = H)."""
    H2 = H if H2 is None else H2
    out = np.empty(rho.size)
    for lo in range(0, rho.size, chunk):
        sl = slice(lo, lo + chunk)
        r, i, j = rho[sl], ia[sl], ib[sl]
        Hi, Hj = H[: k + 1, i], H2[: k + 1, j]
        acc = Hi[k] * Hj[k]
        for n in range(k - 1, -1, -1):
            acc *= r
            acc += Hi[n] * Hj[n]
        out[sl] = acc
    return out
