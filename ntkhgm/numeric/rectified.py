"""Rectified entire activations near |ρ| = 1: an analytic part and a thin wedge (docs/math.md §9b).

For f(u) = Y(u)·g(u) with g entire (ReSin: g = sin, its σ' = Y·cos; ReLU^n: g = uⁿ) and
(u, v) = (√a z₁, √b z₂), corr(z₁, z₂) = ρ = cos θ.  In polar coordinates of the whitened
pair, z₁ = r cos φ, z₂ = r cos(φ − θ), the Gaussian measure is e^{−r²/2} r dr dφ / 2π and
the quadrant {z₁ > 0, z₂ < 0} is a wedge of angle θ: with ψ ∈ (0, θ), z₁ = r sin ψ,
z₂ = −r sin(θ − ψ).  Hence, near ρ = 1,

    D_f = A − W(θ, −1),   A = E[Y(z₁) g(√a z₁) g(√b z₂)] = Σ_n ρⁿ h_n^f(a) h_n^g(b),

    W(ω, s) = (1/2π) ∫₀^ω E_r[g(√a r sin ψ) g(s √b r sin(ω − ψ))] dψ,   r ~ Rayleigh,

and near ρ = −1 (z₂ → −z₂, angle ω = π − θ) D_f = W(π − θ, +1).  A is a Mehler series
(§8) of f against g: g is entire, its Hermite coefficients h_n^g decay faster than any
power, so A converges at every |ρ| ≤ 1, including ρ = 1; it is the part of D analytic at
ρ = 1.  W carries the kink: expanding g in its Taylor series,

    E_r[g(pr) g(qr)] = Σ_{m,n} g_m g_n p^m q^n μ_{m+n},   μ_k = E r^k = 2^{k/2} Γ(k/2 + 1),

and since |p|, |q| ≤ γ sin ω (γ = max(√a, √b)), W is a series in odd powers of sin ω ~
√(2(1 − |ρ|)) with coefficients from 1-D moments — the local expansion at |ρ| = 1.  It is
evaluated by a product rule exact for its part of total degree ≤ K: Gauss–Legendre in ψ
(K/2 + 2 nodes; the integrand is a polynomial of degree ≤ K in sin ψ, sin(ω − ψ) on an
interval of length ≤ 0.46) and in r the Gauss rules of the Rayleigh measure (with
s = r²/2: Gauss–Laguerre for the even part of the integrand, generalised Gauss–Laguerre
of index ½ for the odd part; g odd or even makes the integrand even), applied to g itself
rather than its Taylor polynomial.  The cost does not depend on how near |ρ| = 1 the
pair is, and no Pfaffian path is needed.

Error control, per pair, relative to the Cauchy–Schwarz scale √(E f(√a z)² E f(√b z)²):
A's truncation |ρ|^{N+1} √(T_N^f(a) T_N^g(b)) (Cauchy–Schwarz, T_N = Σ_{n>N} h_n²); W's
truncation: the rule's error is that on the Taylor terms of degree > K, at most twice
their bound Σ_{k>K} x^k μ_k (|g|*|g|)_k, x = γ sin ω (positive weights; a Gauss rule
underestimates the moments of r^k it is not exact for), tabulated on a grid of x (the
grid point above is used); W's rounding 4ε·Σ|terms| (measured against mpmath:
tests/test_rectified.py).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.special import gammaln

from . import hermite_series as hs
from .quadrature import gauss_laguerre, gauss_legendre

EPS = np.finfo(float).eps
# the Taylor degree m + n of W a call's groups are exact for (cost ~ K² per pair)
K_BINS = (8, 16, 24, 32, 48, 64)
K_MAX = K_BINS[-1]
# the grid of x = γ sin ω of W's truncation table; beyond it the wedge is not served
X_GRID = np.geomspace(1e-8, 4.0, 600)
# terms of the bound sequence (|g|*|g|)_k x^k μ_k summed for the tail (k ≤ K_TAIL)
K_TAIL = 4 * K_MAX
# g's Hermite coefficients must hold E g² to this relative rounding (docs/math.md §9b)
CAPTURED = 1e-12


def _log_rayleigh_moments(kmax: int) -> np.ndarray:
    """log μ_k, μ_k = E r^k = 2^{k/2} Γ(k/2 + 1) for r ~ Rayleigh (e^{−r²/2} r dr)."""
    k = np.arange(kmax + 1)
    return 0.5 * k * np.log(2.0) + gammaln(0.5 * k + 1.0)


class RectifiedNearDiagonal:
    """D_f near |ρ| = 1 for f = Y·g (module docstring).

    ``g``: vectorised g; ``annihilator``: an operator killing g (its Hermite coefficients
    by the recurrence, docs/math.md §10, run in ``precision`` where declared); ``taylor``:
    g_0 … g_{K_TAIL}."""

    def __init__(self, g, annihilator: str | None, taylor: np.ndarray,
                 precision: tuple[str, float] | None = None):
        taylor = np.asarray(taylor, dtype=float)
        if taylor.ndim != 1 or taylor.size < K_TAIL + 1 or not np.all(np.isfinite(taylor)):
            raise ValueError(f"need the finite Taylor coefficients g_0 … g_{K_TAIL}")
        self.g = g
        self.taylor = taylor[: K_TAIL + 1]
        # 0 (g even), 1 (g odd) or None, from the Taylor coefficients
        odd, even = np.any(self.taylor[1::2] != 0), np.any(self.taylor[0::2] != 0)
        self.parity = None if odd and even else int(odd)
        self.recurrence = hs.checked_recurrence(g, annihilator, precision)
        log_mu = _log_rayleigh_moments(K_TAIL)
        # W's truncation tails on X_GRID: row K holds Σ_{k>K} x^k μ_k (|g|*|g|)_k
        gg = np.convolve(np.abs(self.taylor), np.abs(self.taylor))[: K_TAIL + 1]
        k = np.flatnonzero(gg)          # (g odd or even: every other (|g|*|g|)_k is 0)
        terms = np.zeros((K_TAIL + 1, X_GRID.size))
        terms[k] = np.exp(np.log(gg[k])[:, None] + k[:, None] * np.log(X_GRID)[None, :]
                          + log_mu[k][:, None])
        self.tail = np.cumsum(terms[::-1], axis=0)[::-1][1: K_MAX + 2]
        self._memo: dict = {}

    def _g_coefficients(self, vals: np.ndarray, kmax: int):
        """h_n^g (n ≤ kmax) of ``vals``, their tails Σ_{n'>n} h_n'^2 summed from the top (not
        E g² − Σ: that difference is known only to ε·E g²), and whether the kmax + 1
        coefficients hold all but CAPTURED of E g².  Where they do not, the coefficients'
        hump (at n ≈ b for sin, cos) lies beyond kmax and the tails summed from the top say
        nothing; where they do, the rest decays faster than geometrically (g entire of
        exponential type) and is below rounding.  The last set is remembered."""
        key = (kmax, vals.tobytes())
        if key not in self._memo:
            H, second = hs.hermite_coefficients(self.g, vals, kmax, self.recurrence)
            tails = np.zeros_like(H)
            tails[:-1] = np.cumsum((H * H)[::-1], axis=0)[::-1][1:]
            held = tails[0] + H[0] ** 2
            complete = np.abs(second - held) <= CAPTURED * second
            self._memo = {key: (H, tails, complete)}
        return self._memo[key]

    def evaluate(self, sa, sb, theta, vals, ia, ib, Hf, second_f, tol: float) -> np.ndarray:
        """D_f at (sa², sb², sa·sb·cos θ) for pairs near |ρ| = 1 (|cos θ| ≥ 0.9), to ``tol``
        of the Cauchy–Schwarz scale; NaN where the bounds above do not promise it.
        ``vals``/``ia``/``ib``: the distinct √a and each pair's index; ``Hf``, ``second_f``:
        f's Hermite coefficients (n ≤ hs.K_BINS[-1]) and E f² of ``vals``."""
        rho = np.cos(theta)
        scale = np.sqrt(second_f[ia] * second_f[ib])
        limit = 0.25 * tol * scale
        up = rho > 0
        omega = np.where(up, theta, np.pi - theta)
        out = self._wedge(sa, sb, omega, np.where(up, -1.0, 1.0), limit)
        pos = np.flatnonzero(up & np.isfinite(out))
        if pos.size:
            analytic = self._analytic(rho[pos], vals, ia[pos], ib[pos], Hf, second_f,
                                      limit[pos])
            out[pos] = analytic - out[pos]
        return out

    def _analytic(self, rho, vals, ia, ib, Hf, second_f, limit) -> np.ndarray:
        """A = Σ_{n≤N} ρⁿ h_n^f(a) h_n^g(b), N per pair from K_BINS of the Mehler series."""
        kmax = Hf.shape[0] - 1
        # g's coefficients only for the variances these pairs use (a column depends on its
        # variance alone, so the values do not depend on the set)
        used, ib = np.unique(ib, return_inverse=True)
        Hg, Tg, complete = self._g_coefficients(vals[used], kmax)
        Tf = hs.tail_norms(Hf, second_f)
        out = np.full(rho.size, np.nan)
        todo = complete[ib]
        with np.errstate(divide="ignore"):
            log_rho = np.log(np.abs(rho))
        for n in hs.K_BINS:
            bound = np.exp((n + 1) * log_rho) * np.sqrt(Tf[n, ia] * Tg[n, ib])
            sel = np.flatnonzero(todo & (bound <= limit))
            if sel.size:
                out[sel] = hs.series_sum(Hf, ia[sel], ib[sel], rho[sel], n, H2=Hg)
                todo[sel] = False
        return out

    def _wedge(self, sa, sb, omega, sign, limit) -> np.ndarray:
        """W(ω, s) (module docstring), NaN where its truncation or rounding bound exceeds
        ``limit``."""
        out = np.full(sa.size, np.nan)
        x = np.maximum(sa, sb) * np.sin(omega)
        k = np.searchsorted(X_GRID, x)
        inside = k < X_GRID.size
        # the rule is exact for the Taylor part of degree ≤ K; on the rest its error is at
        # most the rest's own bound (positive weights, moments of r^k underestimated)
        good = 2 * self.tail[:, np.minimum(k, X_GRID.size - 1)] <= limit[None, :]
        need = np.where(inside & good.any(axis=0), np.argmax(good, axis=0), -1)
        for lo, hi in zip((-1,) + K_BINS[:-1], K_BINS, strict=True):
            sel = np.flatnonzero((need > lo) & (need <= hi))
            if sel.size:
                value, size = self._wedge_sum(sa[sel], sb[sel], omega[sel], sign[sel], hi)
                out[sel] = np.where(4 * EPS * size <= limit[sel], value, np.nan)
        return out

    def _wedge_sum(self, sa, sb, omega, sign, K: int) -> tuple[np.ndarray, np.ndarray]:
        """W by a product rule, exact for its Taylor part of total degree ≤ K: Gauss–Legendre
        in ψ (K/2 + 2 nodes) and in r the Gauss rules of the Rayleigh measure (module
        docstring); g itself is evaluated, not its Taylor polynomial.  Also Σ|terms|."""
        xq, wq = gauss_legendre(K // 2 + 2)
        xq, wq = 0.5 * (xq + 1.0), 0.5 * wq                      # on [0, 1]
        psi = omega[:, None] * xq[None, :]                       # (pairs, nodes)
        p = (sa[:, None] * np.sin(psi))[:, :, None]
        q = (sign[:, None] * sb[:, None] * np.sin(omega[:, None] - psi))[:, :, None]
        r_even, v_even, r_odd, v_odd = rayleigh_rules(K // 4 + 2)
        g = self.g
        value = np.zeros(psi.shape)
        size = np.zeros(psi.shape)
        if self.parity is not None:
            # g odd or even: G(r) = g(pr) g(qr) is even in r, its odd part vanishes
            G = g(p * r_even) * g(q * r_even)
            value += np.einsum("pqr,r->pq", G, v_even)
            size += np.einsum("pqr,r->pq", np.abs(G), v_even)
        else:
            for r, v, odd in ((r_even, v_even, False), (r_odd, v_odd, True)):
                plus, minus = g(p * r) * g(q * r), g(-p * r) * g(-q * r)
                part = 0.5 * (plus - minus) if odd else 0.5 * (plus + minus)
                # einsum, not BLAS: every pair's sums in one fixed order, whatever the batch
                value += np.einsum("pqr,r->pq", part, v)
                size += np.einsum("pqr,r->pq", 0.5 * (np.abs(plus) + np.abs(minus)), v)
        w = omega / (2 * np.pi)
        return w * np.einsum("pq,q->p", value, wq), w * np.einsum("pq,q->p", size, wq)


@cache
def rayleigh_rules(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """E_r[G(r)] = ∫₀^∞ G(r) r e^{−r²/2} dr with s = r²/2: the even part of G is a function
    of s under e^{−s} ds (Gauss–Laguerre), the odd part r·H(s) one under √(2s) e^{−s} ds
    (generalised Gauss–Laguerre, α = ½); n nodes each are exact for G of degree ≤ 4n − 2.
    Returns (r_even, weights, r_odd, weights·√2/r_odd): E_r[G] = Σ v_e G_e(r_e) + Σ v_o G_o(r_o)."""
    s, v = gauss_laguerre(n)
    s2, v2 = gauss_laguerre(n, 0.5)
    r2 = np.sqrt(2 * s2)
    return np.sqrt(2 * s), v, r2, v2 * np.sqrt(2.0) / r2
