"""The holonomic gradient method for dual activations, all points at once.

For arrays (a, b, c) the evaluator splits the points by what serves them best
and shares all per-variance work (variances repeat across the pairs of a
kernel matrix):

1. degenerate Λ (a = 0, b = 0 or |ρ| = 1: kernel diagonals, duplicate rows):
   the 1-D integral E_z[f(√a z) f(±√b z)];
2. |ρ| small enough that the Mehler series (docs/math.md §8, :mod:`.hermite_series`)
   reaches the tolerance within 256 terms: Horner sums of per-variance
   Hermite coefficients;
3. the rest (|ρ| → 1): the Pfaffian ODE (docs/math.md §4) in the (a, b, θ)
   coordinates of :mod:`.pfaffian_ode`, from the factorised initial values on
   c = 0 (docs/math.md §5), every path in one batched integration — where the
   system's singular point at |ρ| = 1 is regular.  Where it is irregular
   (ReSin), the series is continued to 2048 terms and the last few pairs
   (|ρ| ≳ 0.985) use the reference quadrature.

When every point has the same variances (data on a sphere), D depends on θ
alone and is analytic in θ = arccos ρ for |ρ| ≤ 0.9: one Chebyshev interpolant
there, built from the steps above at a few nodes and checked between them,
serves all those points; the rest are evaluated directly.
"""

from __future__ import annotations

import numpy as np

from ..errors import IntegrationError, SingularityError
from . import hermite_series as hs
from .pfaffian_ode import PathEvaluator, RhoSystem, integrate_paths, pole_order_at_diagonal
from .quadrature import degenerate_first, expect_1d, expect_2d

DEFAULT_TOL = 1e-13
CHEB_RHO = 0.9
RHO_START = 0.9
# variances equal to this relative tolerance count as one (rows normalised in floating point)
UNIFORM_RTOL = 1e-14


def rho_system(system) -> RhoSystem:
    """The Pfaffian in (sa, sb, ρ) coordinates, derived once per process and cached on disk."""
    from .pfaffian_ode import rho_system_key

    key = rho_system_key(system)
    cached = _load_rho_cache(key)
    if cached is not None:
        return cached
    rs = RhoSystem.from_pfaffian(system)
    _store_rho_cache(key, rs)
    return rs


def _rho_cache_path(key: str):
    import os
    from pathlib import Path

    root = os.environ.get("NTKHGM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ntkhgm")
    return Path(root) / "derived" / f"rho-{key}.json"


_RHO_MEMO: dict[str, RhoSystem] = {}


def _load_rho_cache(key: str) -> RhoSystem | None:
    if key in _RHO_MEMO:
        return _RHO_MEMO[key]
    path = _rho_cache_path(key)
    try:
        rs = RhoSystem.from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    _RHO_MEMO[key] = rs
    return rs


def _store_rho_cache(key: str, rs: RhoSystem) -> None:
    from ..atomic import atomic_write_text

    _RHO_MEMO[key] = rs
    path = _rho_cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, rs.to_json())
    except OSError:
        pass  # a read-only cache only costs the derivation next time


def _moments(f, sa: np.ndarray, pmax: int) -> np.ndarray:
    """μ_p(sa) = E_z[z^p f(sa z)], p = 0..pmax, shape (pmax+1, len(sa)) (docs/math.md §5)."""
    return np.stack([expect_1d(lambda u, p=p: (u ** p) * f(u), sa)
                     / np.where(sa > 0, sa, 1.0) ** p for p in range(pmax + 1)])


class HGMEvaluator:
    """Dual activation D_f(a, b, c) of one function f (σ or σ') with its Pfaffian system."""

    def __init__(self, f, system, *, tol: float = DEFAULT_TOL):
        self.f = f
        self.system = system
        self.tol = tol
        # paths may approach |ρ| = 1 only where the pole there is simple (Fuchsian)
        self.fuchsian = pole_order_at_diagonal(system) <= 1
        self._rs = None

    @property
    def rs(self) -> RhoSystem:
        """The exact (√a, √b, ρ) system, derived on first use (ODE paths only)."""
        if self._rs is None:
            self._rs = rho_system(self.system)
        return self._rs

    def _ode(self, sa, sb, theta):
        """D at θ for each path (step 3).

        Paths start at |ρ| = RHO_START, where the Mehler series gives every
        component G̃_s to absolute accuracy (it is a series for the moment
        E[u^p f(u) v^q f(v)] too), or, where that series is not accurate enough,
        at c = 0 from the factorised 1-D moments (docs/math.md §5).  Starting late
        matters for σ of large variance (sin, erf): their moments at c = 0 are
        exponentially small, known only to absolute accuracy, and the ODE
        multiplies their relative error by the growth e^{√(ab)}.
        """
        rs = self.rs
        j = np.array([m[1] for m in self.system.std_monomials])
        vals, inv = np.unique(np.concatenate([sa, sb]), return_inverse=True)
        ia, ib = inv[: sa.size], inv[sa.size:]
        second = _second(self.f, vals)
        scale = np.sqrt(second[ia] * second[ib])
        rho_start = np.where(np.cos(theta) < 0, -RHO_START, RHO_START)
        g, ok = self._moment_series(vals, ia, ib, rho_start, scale)
        theta_start = np.arccos(rho_start)
        if not np.all(ok):
            mu = _moments(self.f, vals, max(max(rs.p), max(rs.q)))
            g0 = (2.0 ** j)[None, :] * mu[list(rs.p)][:, ia].T * mu[list(rs.q)][:, ib].T
            g[~ok] = g0[~ok]
            theta_start[~ok] = 0.5 * np.pi
        scale = np.maximum(scale, np.max(np.abs(g), axis=1))
        try:
            G = integrate_paths(PathEvaluator(rs, sa, sb), g, theta, tol=self.tol, scale=scale,
                                theta_start=theta_start)
        except (IntegrationError, SingularityError) as exc:
            i = getattr(exc, "path", 0)
            c = sa[i] * sb[i] * np.cos(theta[i])
            raise type(exc)(str(exc), float(sa[i] ** 2), float(sb[i] ** 2), float(c)) from None
        return G[:, 0]

    def _moment_series(self, vals, ia, ib, rho, scale, kmax: int = 512):
        """G̃_s = 2^j Σ_n ρⁿ h_n^(p)(a) h_n^(q)(b) with h^(p) the Hermite coefficients of
        z^p f(√a z); and a mask of the paths whose truncation bound meets the tolerance."""
        rs = self.rs
        coef, tails = {}, {}
        for p in sorted(set(rs.p) | set(rs.q)):
            H, sec = hs.hermite_coefficients(lambda u, p=p: u ** p * self.f(u), vals, kmax)
            norm = np.where(vals > 0, vals, 1.0) ** p
            coef[p] = H / norm
            tails[p] = hs.tail_norms(coef[p], sec / norm ** 2)[-1]
        j = [m[1] for m in self.system.std_monomials]
        g = np.empty((ia.size, rs.rank))
        ok = np.ones(ia.size, dtype=bool)
        absr = np.abs(rho)
        for k, (p, q) in enumerate(zip(rs.p, rs.q, strict=True)):
            g[:, k] = 2.0 ** j[k] * hs.series_sum(coef[p], ia, ib, rho, kmax, H2=coef[q])
            with np.errstate(under="ignore"):
                bound = absr ** (kmax + 1) * np.sqrt(tails[p][ia] * tails[q][ib])
            ok &= bound <= 0.1 * self.tol * scale
        return g, ok

    def __call__(self, a, b, c) -> np.ndarray:
        out, shape, (a, b, c), cor = degenerate_first(self.f, self.f, a, b, c)
        sa, sb, theta = np.sqrt(a), np.sqrt(b), cor.theta
        rest = np.flatnonzero(~cor.degenerate)
        if rest.size == 0:
            return out.reshape(shape)
        both = np.concatenate([sa[rest], sb[rest]])
        lo, hi = float(both.min()), float(both.max())
        if hi - lo <= UNIFORM_RTOL * hi:
            # one variance up to rounding (normalised data): D depends on θ alone
            out[rest] = self._chebyshev(0.5 * (lo + hi), theta[rest])
        else:
            vals, inv = np.unique(both, return_inverse=True)
            out[rest] = self._general(sa[rest], sb[rest], theta[rest], vals, inv)
        return out.reshape(shape)

    def _series(self, sa, sb, theta, vals, inv, bins):
        """Mehler series where it converges within max(bins) terms; NaN elsewhere."""
        ia, ib = inv[: sa.size], inv[sa.size:]
        rho = np.cos(theta)
        H, second = hs.hermite_coefficients(self.f, vals, bins[-1])
        T = hs.tail_norms(H, second)[list(bins)]
        scale = np.sqrt(second[ia] * second[ib])
        need = hs.terms_needed(rho, T[:, ia], T[:, ib], scale, 0.1 * self.tol, bins)
        out = np.full(sa.size, np.nan)
        for k in bins:
            m = need == k
            if np.any(m):
                out[m] = hs.series_sum(H, ia[m], ib[m], rho[m], k)
        return out

    def _general(self, sa, sb, theta, vals, inv):
        out = self._series(sa, sb, theta, vals, inv, hs.K_BINS)
        far = np.isnan(out)
        if np.any(far):
            out[far] = (self._ode if self.fuchsian else self._near_irregular)(
                sa[far], sb[far], theta[far])
        return out

    def _near_irregular(self, sa, sb, theta):
        """|ρ| near 1 for a system with an irregular singular point there (ReSin).

        Path integration towards ρ = ±1 is unstable (see :mod:`.pfaffian_ode`), so
        the series is continued to 2048 terms (|ρ| ≲ 0.985), and the remaining
        few pairs use the reference quadrature.
        """
        vals, inv = np.unique(np.concatenate([sa, sb]), return_inverse=True)
        out = self._series(sa, sb, theta, vals, inv, hs.K_BINS_FAR)
        rest = np.isnan(out)
        if np.any(rest):
            c = sa[rest] * sb[rest] * np.cos(theta[rest])
            out[rest] = expect_2d(self.f, self.f, sa[rest] ** 2, sb[rest] ** 2, c)
        return out

    def _chebyshev(self, s: float, theta: np.ndarray) -> np.ndarray:
        """Uniform variances: D(θ) by one Chebyshev interpolant on |ρ| ≤ CHEB_RHO.

        D is analytic in θ there (the singular points are at |ρ| = 1), so the
        interpolant converges geometrically; it is checked between its nodes
        and, failing that, every point is evaluated directly.  The few pairs
        with |ρ| > CHEB_RHO are evaluated directly.
        """
        out = np.empty(theta.size)
        lo = np.arccos(CHEB_RHO)
        inner = (theta >= lo) & (theta <= np.pi - lo)
        one = np.array([s])

        def direct(th):
            n = th.size
            return self._general(np.full(n, s), np.full(n, s), th, one, np.zeros(2 * n, int))

        done = False
        for degree in (24, 48, 96):
            x = np.cos(np.pi * (np.arange(degree) + 0.5) / degree)
            xc = np.cos(np.pi * (np.arange(degree - 1) + 1.0) / degree)
            th = np.pi / 2 + (np.pi / 2 - lo) * np.concatenate([x, xc])
            vals = direct(th)
            coef = np.polynomial.chebyshev.chebfit(x, vals[:degree], degree - 1)
            approx = np.polynomial.chebyshev.chebval(xc, coef)
            if np.max(np.abs(approx - vals[degree:])) <= self.tol * np.max(np.abs(vals)):
                x_inner = (theta[inner] - np.pi / 2) / (np.pi / 2 - lo)
                out[inner] = np.polynomial.chebyshev.chebval(x_inner, coef)
                done = True
                break
        if not done:
            out[inner] = direct(theta[inner])
        if np.any(~inner):
            out[~inner] = direct(theta[~inner])
        return out


def _second(f, sa):
    return np.atleast_1d(expect_1d(lambda u: f(u) ** 2, sa))


def check_finite(values: np.ndarray, a, b, c) -> np.ndarray:
    """Raise IntegrationError naming the first Λ whose value is not finite."""
    bad = ~np.isfinite(values)
    if np.any(bad):
        i = int(np.flatnonzero(bad.ravel())[0])
        raise IntegrationError("HGM produced a non-finite value",
                               float(np.ravel(a)[i]), float(np.ravel(b)[i]), float(np.ravel(c)[i]))
    return values
