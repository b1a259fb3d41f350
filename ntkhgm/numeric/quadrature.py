"""Gaussian expectations by composite Gauss–Legendre quadrature, split at kinks.

The reference method for activations without a closed form (docs/math.md §2, §7):
slow, but accurate to ~1e-14 for integrands that are smooth except at u = 0
(every catalog activation, and the user activations ntkhgm accepts).

    E_{(u,v)~N(0,Λ)}[f(u) g(v)],  Λ = [[a, c], [c, b]],
    u = √a z,  v = √b (ρ z + s w),  ρ = c/√(ab),  s = √(1 − ρ²),  z, w ~ N(0, 1).

The outer integral over z is split at z = 0 (the kink of f(u), and the place
where the smoothed g(v | z) turns sharply when s is small) with panels graded
geometrically towards 0; the inner integral over w is split at the kink
w* = −ρ z / s of g.  Degenerate Λ (s = 0, a = 0 or b = 0) is a 1-D integral.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.special import eval_genlaguerre, gamma

from ..errors import IntegrationError
from .covariance import correlation

Z_MAX = 10.0  # φ(10) ≈ 7.7e-23: the tail is below double precision
_SQRT_2PI = np.sqrt(2.0 * np.pi)


@cache
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [-1, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w


@cache
def gauss_laguerre(n: int, alpha: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Gauss–Laguerre nodes and weights, ∫₀^∞ F(s) s^α e^{−s} ds ≈ Σ w F(s).

    Golub–Welsch (the eigenvalues of the Jacobi matrix of L_n^α: diagonal 2k + α + 1,
    off-diagonal √(k(k + α))), one Newton step on L_n^α, weights 1/(L_{n−1}^α L_n^α′)
    normalised to Γ(α + 1): the algorithm of scipy.special.roots_genlaguerre, with numpy's
    symmetric eigensolver (scipy.linalg alone costs 0.1 s to import)."""
    if n < 2:
        raise ValueError("need n ≥ 2 nodes")
    k = np.arange(n, dtype=float)
    J = np.diag(2 * k + alpha + 1) + np.diag(np.sqrt(k[1:] * (k[1:] + alpha)), 1)
    x = np.linalg.eigvalsh(J, UPLO="U")

    def dL(x):
        return (n * eval_genlaguerre(n, alpha, x)
                - (n + alpha) * eval_genlaguerre(n - 1, alpha, x)) / x

    dy = dL(x)
    x = x - eval_genlaguerre(n, alpha, x) / dy
    fm = eval_genlaguerre(n - 1, alpha, x)
    # fm and dy span many decades: scale each by the geometric middle of its range
    for v in (fm, dy):
        logs = np.log(np.abs(v))
        v /= np.exp(0.5 * (logs.max() + logs.min()))
    w = 1.0 / (fm * dy)
    return x, w * (gamma(alpha + 1) / w.sum())


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / _SQRT_2PI


def rule_width(scale) -> np.ndarray:
    """The uniform panel width each √a needs (an oscillating σ(√a z) needs panels
    narrower than its period), rounded down to a power of two.

    Every point is integrated with the rule of its own width, so a value never
    depends on which other points share its batch (tiles of a kernel agree bit
    for bit with the whole kernel).
    """
    width = np.minimum(0.5, 2.0 / np.maximum(1.0, np.asarray(scale, dtype=float)))
    return 2.0 ** np.floor(np.log2(width))


def by_rule(width: np.ndarray, evaluate) -> np.ndarray:
    """out[m] = evaluate(m, w) for each distinct width w (m: the mask of its points)."""
    width = np.asarray(width)
    out = np.empty(width.shape)
    for w in np.unique(width):
        m = width == w
        out[m] = evaluate(m, float(w))
    return out


def panel_edges(width: float) -> np.ndarray:
    """Panel edges on [0, Z_MAX]: geometric down to 1e-14, then uniform of ``width``."""
    uniform = np.arange(1.0, Z_MAX + width / 2, width)
    uniform[-1] = Z_MAX
    geometric = 2.0 ** -np.arange(47.0, 0.0, -1.0)
    return np.concatenate([[0.0], geometric, uniform])


def composite_rule(edges: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of an n-point Gauss–Legendre rule on each panel."""
    x, w = gauss_legendre(n)
    lo, hi = edges[:-1, None], edges[1:, None]
    half = 0.5 * (hi - lo)
    return (lo + half * (x + 1.0)).ravel(), (half * w).ravel()


@cache
def _half_line_rule(width: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rule on the whole line for E_z[·], symmetric, split at z = 0, φ folded in."""
    z, w = composite_rule(panel_edges(width), n)
    z = np.concatenate([-z[::-1], z])
    w = np.concatenate([w[::-1], w]) * _phi(z)
    return z, w


def expect_1d(f, scale, *, n: int = 16) -> np.ndarray:
    """E_{z~N(0,1)}[f(scale·z)] for an array of scales ≥ 0 (docs/math.md §5 moments).

    f is a vectorised function smooth except at 0.
    """
    scale = np.asarray(scale, dtype=float)

    def evaluate(m, width):
        z, w = _half_line_rule(width, n)
        return np.einsum("pq,q->p", f(scale[m][:, None] * z), w)

    return by_rule(rule_width(scale), evaluate)


def expect_1d_powers(f, scale, powers, *, n: int = 16) -> np.ndarray:
    """E_z[(scale·z)^k f(scale·z)] for each k in ``powers``, shape (len(powers), len(scale)),
    with f evaluated once per node (the moments of docs/math.md §5)."""
    scale = np.asarray(scale, dtype=float)
    out = np.empty((len(powers), scale.size))
    width = rule_width(scale)
    for w in np.unique(width):
        m = width == w
        z, wts = _half_line_rule(float(w), n)
        u = scale[m][:, None] * z
        F = f(u) * wts
        done, term = 0, F
        for i, k in sorted(enumerate(powers), key=lambda item: item[1]):
            for _ in range(k - done):      # u^k by repeated products (not pow)
                term = term * u
            done = k
            out[i, m] = np.sum(term, axis=1)
    return out


def expect_pair_1d(f, g, sa, sb, *, n: int = 16) -> np.ndarray:
    """E_{z~N(0,1)}[f(sa z) g(sb z)] for arrays sa ≥ 0, sb (degenerate Λ, docs/math.md §2)."""
    sa, sb = np.asarray(sa, dtype=float), np.asarray(sb, dtype=float)
    if sa.size == 0:
        return np.empty(sa.shape)

    same = f is g and np.array_equal(sa, sb)      # a kernel's diagonal: f evaluated once

    def evaluate(m, width):
        z, w = _half_line_rule(width, n)
        F = f(sa[m][:, None] * z)
        return np.einsum("pq,pq,q->p", F, F if same else g(sb[m][:, None] * z), w)

    return by_rule(rule_width(np.maximum(np.abs(sa), np.abs(sb))), evaluate)


def expect_pair_1d_shared(f, vals: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                          sign: float = 1.0, *, n: int = 16) -> np.ndarray:
    """E_z[f(vals[ia] z) f(sign·vals[ib] z)] per pair, as :func:`expect_pair_1d`, with f
    evaluated once per distinct scale and node (pairs share the scales of a kernel's rows)."""
    vals = np.asarray(vals, dtype=float)

    def evaluate(m, width):
        z, w = _half_line_rule(width, n)
        used, inv = np.unique(np.concatenate([ia[m], ib[m]]), return_inverse=True)
        F = f(vals[used][:, None] * z)
        G = F if sign > 0 else F[:, ::-1]       # the rule is symmetric: f(−s z_q) = F[·, −q]
        k = ia[m].size
        return np.einsum("pq,pq,q->p", F[inv[:k]], G[inv[k:]], w)

    return by_rule(rule_width(np.maximum(vals[ia], vals[ib])), evaluate)


def degenerate_first(f, g, a, b, c):
    """Flatten (a, b, c) and fill the degenerate pairs with the 1-D integral.

    Returns (out, shape, (a, b, c) flattened, correlation coordinates); ``out``
    holds E[f(u) g(v)] where Λ is degenerate (u = √a z, v = ±√b z: one
    Gaussian variable) and is to be filled elsewhere by the caller.
    """
    a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (a, b, c)))
    shape = a.shape
    a, b, c = a.ravel(), b.ravel(), c.ravel()
    cor = correlation(a, b, c)
    out = np.empty(a.shape)
    d = cor.degenerate
    if np.any(d):
        sign = np.where(c[d] < 0, -1.0, 1.0)
        out[d] = expect_pair_1d(f, g, np.sqrt(a[d]), np.sqrt(b[d]) * sign)
    return out, shape, (a, b, c), cor


def _inner_rule(n: int, pieces: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite rule on [0, 1]: ``pieces`` equal panels, graded geometrically towards 0.

    The grading resolves a steep σ (erf of a large variance) next to w*.
    """
    edges = np.union1d(np.linspace(0.0, 1.0, pieces + 1), 2.0 ** -np.arange(4.0, 15.0))
    return composite_rule(edges, n)


def _expect_2d_once(f, g, sa, sb, rho, s, *, n_outer, n_inner, inner_pieces):
    """One evaluation of the non-degenerate case; arrays of shape (P,)."""
    return by_rule(rule_width(np.maximum(sa, sb)), lambda m, width: _expect_2d_rule(
        f, g, sa[m], sb[m], rho[m], s[m], width=width, n_outer=n_outer, n_inner=n_inner,
        inner_pieces=inner_pieces))


def _expect_2d_rule(f, g, sa, sb, rho, s, *, width, n_outer, n_inner, inner_pieces):
    z, wz = _half_line_rule(width, n_outer)                  # (Q,)
    t, wt = _inner_rule(n_inner, inner_pieces)               # on [0, 1]
    out = np.empty(rho.shape)
    # chunk over points so the (P, Q, 2T) work array stays ~ 2e7 entries
    chunk = max(1, int(2e7 // (z.size * 2 * t.size)))
    for start in range(0, rho.size, chunk):
        sl = slice(start, start + chunk)
        r, ss, a_, b_ = rho[sl, None], s[sl, None], sa[sl, None], sb[sl, None]
        # inner kink w* = -ρ z / s, clipped to [-Z, Z]
        wstar = np.clip(-r * z / ss, -Z_MAX, Z_MAX)          # (p, Q)
        left_len = wstar + Z_MAX
        right_len = Z_MAX - wstar
        wl = -Z_MAX + left_len[..., None] * t                # (p, Q, T)
        wr = wstar[..., None] + right_len[..., None] * t
        w = np.concatenate([wl, wr], axis=-1)
        ww = np.concatenate([left_len[..., None] * wt, right_len[..., None] * wt], axis=-1)
        ww = ww * _phi(w)
        gv = g(b_[..., None] * (r[..., None] * z[:, None] + ss[..., None] * w))
        inner = np.einsum("pqt,pqt->pq", gv, ww)
        out[sl] = np.einsum("pq,pq,q->p", f(a_ * z), inner, wz)
    return out


def expect_2d(f, g, a, b, c, *, rtol: float = 1e-11, check: bool = True) -> np.ndarray:
    """E_{(u,v)~N(0,Λ)}[f(u) g(v)], Λ = [[a, c], [c, b]], broadcast over a, b, c.

    Implements docs/math.md §2 by nested quadrature (module docstring).  With
    ``check`` the result is recomputed on a coarser rule and an
    :class:`IntegrationError` is raised where the two differ by more than
    ``rtol`` times the Cauchy–Schwarz scale √(E f(u)² E g(v)²).  That
    difference is the coarse rule's error; the fine rule's is typically
    orders of magnitude smaller (~1e-15 on the test suite's references).
    """
    out, shape, (a, b, c), cor = degenerate_first(f, g, a, b, c)
    sa, sb, rho, s = np.sqrt(a), np.sqrt(b), cor.rho, cor.s
    nd = ~cor.degenerate
    if np.any(nd):
        fine = _expect_2d_once(f, g, sa[nd], sb[nd], rho[nd], s[nd],
                               n_outer=16, n_inner=16, inner_pieces=32)
        out[nd] = fine
        if check:
            coarse = _expect_2d_once(f, g, sa[nd], sb[nd], rho[nd], s[nd],
                                     n_outer=14, n_inner=14, inner_pieces=28)
            norm = np.sqrt(np.abs(expect_1d(lambda u: f(u) ** 2, sa[nd])
                                  * expect_1d(lambda v: g(v) ** 2, sb[nd])))
            bad = np.abs(fine - coarse) > rtol * np.maximum(norm, 1e-300)
            if np.any(bad):
                i = int(np.flatnonzero(bad)[0])
                raise IntegrationError(
                    f"quadrature did not converge to rtol={rtol:g} "
                    f"(estimate {abs(fine[i] - coarse[i]) / max(norm[i], 1e-300):.2e})",
                    float(a[nd][i]), float(b[nd][i]), float(c[nd][i]))
    return out.reshape(shape)
