"""The Taylor series at ρ = 0 of the Pfaffian ρ-system, all paths at once (docs/math.md §9a).

With fixed variances a = sa², b = sb² the normalised moments G̃ satisfy
dG̃/dρ = B(sa, sb, ρ)·G̃, B = N(ρ)/den(ρ), den = κ(1 − ρ)^m₁(1 + ρ)^m₂·Q̃(ρ)
(:class:`.pfaffian_ode.RhoSystem`, docs/math.md §9).  At ρ = 0 (c = 0) the start
G̃(0) is the factorised 1-D moments of §5, and ρ = 0 is an ordinary point
(den(0) ≠ 0), so G̃ = Σ_k G̃_k ρ^k converges for |ρ| below the nearest zero of den.
Multiplying through by den and comparing powers of ρ gives a linear recurrence,

    den₀ (k+1) G̃_{k+1} = Σ_{j=0}^{deg N} N_j G̃_{k−j} − Σ_{j=1}^{deg den} den_j (k+1−j) G̃_{k+1−j},

run per path (vectorised over the paths: one stacked matrix product per order) on
the terms H_k = G̃_k ρ^k themselves, so that nothing over- or underflows.

Per path: a truncation bound from the geometric decay of the terms (blocks of
:data:`BLOCK` terms), the series only where |ρ| ≤ :data:`SAFE_RADIUS` times the
distance to the nearest zero of den, and a rounding estimate from a second run
whose start is perturbed by :data:`PERTURB`·ε relative (in the same matrix
product).  :meth:`RhoTaylor.evaluate` reports which paths meet the tolerance;
the others are for the caller's Runge–Kutta paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pfaffian_ode import RhoSystem

EPS = np.finfo(float).eps
SAFE_RADIUS = 0.95    # the series only for |ρ| ≤ SAFE_RADIUS·(nearest zero of den)
BLOCK = 8             # terms per block of the truncation bound
KMAX = 1024           # at most this many terms per path
ROUNDING = 1.0        # kicks of ROUNDING·ε·Σ|products| per order, for the rounding estimate
START = 2.0           # the start values perturbed by START times their error
TAIL_SHARE = 0.1      # the truncation bound must be ≤ TAIL_SHARE·tol·scale
RUNS = 2              # perturbed runs (independent signs; the larger difference counts)
# pseudo-random signs of the kicks: (run, order mod 61, component mod 64); fixed, so that a
# path's result does not depend on anything but its own data
SIGNS = np.where(np.random.default_rng(20240611).random((RUNS, 62, 64)) < 0.5, -1.0, 1.0)
# paths run together: as many as keep their arrays (two window × r × r matrices and the
# window of the runs, ~20 kB a path for GELU) within CHUNK_BYTES, so that they stay in cache
# (measured for GELU at N = 100: 256 paths a chunk ran the series in 0.6 of the time of 1024)
CHUNK_BYTES = 6 << 20
CHUNK_PATHS = (64, 4096)


@dataclass(frozen=True)
class _Compiled:
    """A :class:`RhoSystem` as float arrays: the polynomial coefficients in (sa, sb) of every
    nonzero numerator entry (i, j) of degree e in ρ, and of Q̃'s coefficients."""

    rank: int
    deg: int                       # degree of N in ρ
    m1: int
    m2: int
    kappa: float
    num_powers: np.ndarray         # (M, 2): exponents of sa, sb
    num_coef: np.ndarray           # (M, X)
    num_index: tuple[np.ndarray, np.ndarray, np.ndarray]     # (e, i, j) of the X columns
    rest_powers: np.ndarray        # (M', 2)
    rest_coef: np.ndarray          # (M', deg Q̃ + 1)


_COMPILED: dict[int, tuple[RhoSystem, _Compiled]] = {}


def _compile(rs: RhoSystem) -> _Compiled:
    """Once per system (keyed by identity; the system is kept alive with its arrays)."""
    hit = _COMPILED.get(id(rs))
    if hit is not None and hit[0] is rs:
        return hit[1]
    r = rs.rank
    terms = [(e1, e2, e3, i, j, cf) for i, row in enumerate(rs.numerators)
             for j, entry in enumerate(row) for e1, e2, e3, cf in entry]
    powers = sorted({(t[0], t[1]) for t in terms})
    cols = sorted({(t[2], t[3], t[4]) for t in terms})
    prow = {p: n for n, p in enumerate(powers)}
    pcol = {c: n for n, c in enumerate(cols)}
    coef = np.zeros((len(powers), len(cols)))
    for e1, e2, e3, i, j, cf in terms:
        coef[prow[e1, e2], pcol[e3, i, j]] += float(cf)
    rpowers = sorted({(e1, e2) for e1, e2, _, _ in rs.rest})
    rrow = {p: n for n, p in enumerate(rpowers)}
    rdeg = max([e3 for _, _, e3, _ in rs.rest] + [0])
    rcoef = np.zeros((len(rpowers), rdeg + 1))
    for e1, e2, e3, cf in rs.rest:
        rcoef[rrow[e1, e2], e3] += float(cf)
    cols_a = np.array(cols, dtype=int).reshape(-1, 3)
    out = _Compiled(
        rank=r, deg=max([c[0] for c in cols] + [0]), m1=rs.m1, m2=rs.m2,
        kappa=float(rs.kappa),
        num_powers=np.array(powers, dtype=float).reshape(-1, 2), num_coef=coef,
        num_index=(cols_a[:, 0], cols_a[:, 1], cols_a[:, 2]),
        rest_powers=np.array(rpowers, dtype=float).reshape(-1, 2), rest_coef=rcoef)
    _COMPILED[id(rs)] = (rs, out)
    return out


def _in_sa_sb(powers: np.ndarray, coef: np.ndarray, sa: np.ndarray, sb: np.ndarray):
    """Σ_m coef[m, :]·sa^e1_m·sb^e2_m per path, shape (paths, columns).  One small
    matrix product per path (a stacked product: a path's value does not depend on its
    batch)."""
    mono = sa[:, None] ** powers[None, :, 0] * sb[:, None] ** powers[None, :, 1]
    return np.matmul(mono[:, None, :], coef)[:, 0, :]


def _times_ends(d: np.ndarray, m1: int, m2: int, absolute: bool) -> np.ndarray:
    """The coefficients of d(ρ)·(1 − ρ)^m₁(1 + ρ)^m₂ (with ``absolute``: of the sums of
    the terms' absolute values, (1 + ρ)^(m₁ + m₂))."""
    for sign, m in ((-1.0, m1), (1.0, m2)):
        for _ in range(m):                                   # × (1 ± ρ)
            d = (np.concatenate([d, np.zeros((d.shape[0], 1))], axis=1)
                 + (1.0 if absolute else sign)
                 * np.concatenate([np.zeros((d.shape[0], 1)), d], axis=1))
    return d


def _chunk(rank: int, window: int) -> int:
    """Paths per chunk of :meth:`RhoTaylor._run`: CHUNK_BYTES over a path's bytes (its
    window·r × r matrices M, |M| and its (1 + RUNS) × 2·window·r buffer), within CHUNK_PATHS."""
    per_path = 8 * (2 * window * rank * rank + 2 * (1 + RUNS) * window * rank)
    return int(np.clip(CHUNK_BYTES // per_path, *CHUNK_PATHS))


def root_free_radius(q: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Whether the polynomial with coefficients ``q`` (paths, deg + 1; lowest power first)
    has no zero in |z| ≤ |ρ|/SAFE_RADIUS, per path: |q₀| > Σ_{k≥1}|q_k| s^k (the triangle
    inequality) or, where that crude test fails, from the roots (eigenvalues of the
    companion matrix; of the polynomial in z² where q is even, as Q̃ is for the catalog)."""
    s = np.abs(rho) / SAFE_RADIUS
    if q.shape[1] > 2 and not np.any(q[:, 1::2]):
        q, s = q[:, ::2], s * s
    ok = np.abs(q[:, 0]) > np.sum(np.abs(q[:, 1:]) * s[:, None] ** np.arange(1, q.shape[1]),
                                  axis=1)
    hard = np.flatnonzero(~ok & (q[:, 0] != 0) & np.all(np.isfinite(q), axis=1))
    if hard.size and q.shape[1] > 1:
        qq = q[hard]
        # the top nonzero degree per path (a lower degree for some variances), monic
        top = q.shape[1] - 1 - np.argmax(qq[:, ::-1] != 0, axis=1)
        for deg in np.unique(top):
            sel = top == deg
            if deg == 0:
                ok[hard[sel]] = True
                continue
            comp = np.zeros((int(np.sum(sel)), deg, deg))
            comp[:, 0, :] = -qq[sel, deg - 1::-1] / qq[sel, deg][:, None]
            comp[:, np.arange(1, deg), np.arange(deg - 1)] = 1.0
            roots = np.linalg.eigvals(comp)
            ok[hard[sel]] = np.min(np.abs(roots), axis=1) > s[hard[sel]]
    return ok


@dataclass
class TaylorResult:
    """Per path: G̃ (the components asked for) at the target, the truncation bound, the
    estimate of rounding and start-value error (the perturbed run), the number of terms,
    whether the path met the tolerance (``ok``), and whether the series converged but
    rounding or its start values keep it from the tolerance (``limited``)."""

    value: np.ndarray          # (paths, components)
    tail: np.ndarray           # (paths,)
    spread: np.ndarray         # (paths,)
    nterms: np.ndarray         # (paths,)
    ok: np.ndarray             # (paths,)
    limited: np.ndarray        # (paths,)

    @property
    def error(self) -> np.ndarray:
        """The estimated error: truncation bound + rounding and start values."""
        return self.tail + self.spread


class RhoTaylor:
    """The Taylor series at ρ = 0 of dG̃/dρ = N/den·G̃ for a batch of paths (docs/math.md
    §9a, module docstring).

    ``rs``: the (sa, sb, ρ) system; ``sa``, ``sb``: √a, √b per path.
    """

    def __init__(self, rs: RhoSystem, sa: np.ndarray, sb: np.ndarray):
        c = _compile(rs)
        self.rank = c.rank
        self.sa = np.asarray(sa, dtype=float)
        self.sb = np.asarray(sb, dtype=float)
        self._compiled = c
        # the nonzero entries (e, i, j) of the numerator's coefficient matrices N_e, per path
        # (P, X), and the sizes of what rounds in them (Σ|term| of each polynomial in sa,
        # sb): the rounding estimate's kicks are relative to them (docs/math.md §9a)
        X = c.num_coef.shape[1]
        both = _in_sa_sb(c.num_powers, np.hstack([c.num_coef, np.abs(c.num_coef)]),
                         self.sa, self.sb)
        self.num, self.num_size = both[:, :X], both[:, X:]
        # den(ρ) = κ(1 − ρ)^m₁(1 + ρ)^m₂·Q̃(sa, sb, ρ) and its sizes (the sums of its terms'
        # absolute values), (P, dd + 1), lowest power first
        R = c.rest_coef.shape[1]
        both = _in_sa_sb(c.rest_powers, np.hstack([c.rest_coef, np.abs(c.rest_coef)]),
                         self.sa, self.sb)
        self._rest = c.kappa * both[:, :R]                  # Q̃'s coefficients times κ
        self.den = _times_ends(self._rest, c.m1, c.m2, False)
        self.den_size = _times_ends(abs(c.kappa) * both[:, R:], c.m1, c.m2, True)
        # the zeros of den: ±1 (where m₁ + m₂ > 0) and those of Q̃
        self._ends = c.m1 + c.m2 > 0

    def _window(self) -> int:
        """L = max(deg N + 1, deg den, 1): the terms the recurrence reads (module docstring)."""
        return max(self._compiled.deg + 1, self.den.shape[1] - 1, 1)

    def usable(self, rho: np.ndarray) -> np.ndarray:
        """Paths whose target |ρ| is at most SAFE_RADIUS times the distance from 0 to the
        nearest zero of den (|ρ| = 1 where m₁ + m₂ > 0, and Q̃'s), with den(0) ≠ 0."""
        rho = np.asarray(rho, dtype=float)
        ok = (self.den[:, 0] != 0) & np.all(np.isfinite(self.den), axis=1)
        ok &= np.all(np.isfinite(self.num), axis=1)
        if self._ends:
            ok &= np.abs(rho) <= SAFE_RADIUS
        ok[ok] = root_free_radius(self._rest[ok], rho[ok])
        return ok

    def evaluate(self, g0: np.ndarray, rho: np.ndarray, *, tol: float, scale: np.ndarray,
                 start_error: np.ndarray | None = None, components: int | None = 1,
                 kmax: int = KMAX) -> TaylorResult:
        """G̃ at ρ from G̃(0) = g0 (paths, r), every path at once (docs/math.md §9a).

        ``start_error``: the absolute error of g0 per component (default ε|g0|).
        ``components``: the first so many components of G̃ are returned and controlled
        (1: D = G̃₀ only); None: all.  With ``scale`` per path (the Cauchy–Schwarz scale
        of D, or that of G̃), a path is ``ok`` when its truncation bound is at most
        TAIL_SHARE·tol·scale and the three estimates together at most tol·scale;
        ``limited`` where the series converged (truncation bound met) but the rounding and
        start-value estimates exceed tol·scale.  Paths outside :meth:`usable` are not run
        (neither ok nor limited).
        """
        rho = np.asarray(rho, dtype=float)
        paths, r = g0.shape
        ncomp = r if components is None else int(components)
        if start_error is None:
            start_error = EPS * np.abs(g0)
        value = np.full((paths, ncomp), np.nan)
        tail, spread = np.full(paths, np.inf), np.full(paths, np.inf)
        nterms = np.zeros(paths, dtype=int)
        run = np.flatnonzero(self.usable(rho))
        # paths of similar |ρ| (similar numbers of terms) together
        run = run[np.argsort(-np.abs(rho[run]), kind="stable")]
        chunk = _chunk(self.rank, self._window())
        for lo in range(0, run.size, chunk):
            idx = run[lo:lo + chunk]
            value[idx], tail[idx], spread[idx], nterms[idx] = self._run(
                idx, g0[idx], start_error[idx], rho[idx], TAIL_SHARE * tol * scale[idx],
                ncomp, kmax)
        finite = np.all(np.isfinite(value), axis=1)
        converged = finite & (tail <= TAIL_SHARE * tol * scale)
        ok = converged & (tail + spread <= tol * scale)
        return TaylorResult(value, tail, spread, nterms, ok, converged & ~ok)

    def _run(self, idx, g0, start_error, rho, target, ncomp, kmax):
        """The recurrence for the paths ``idx`` (module docstring), two runs per path: the
        start, and the start perturbed by START·start_error with a kick of
        ROUNDING·ε·Σ|products| at every order (pseudo-random signs), for the rounding of
        the recurrence and the start values' error.  A path stops where its tail bound
        meets ``target``."""
        c = self._compiled
        P, r = g0.shape
        den, den_size = self.den[idx], self.den_size[idx]
        dd = den.shape[1] - 1
        L = self._window()                         # window: H_{k−L+1} … H_k
        d0 = den[:, 0]
        pw = rho[:, None] ** np.arange(L + 1)[None, :]               # ρ^0 … ρ^L
        apw, ad0 = np.abs(pw), np.abs(d0)
        # slot m of the window holds H_{k−(L−1−m)}; with e = L−1−m (numerator) and
        # j' = L−m (denominator):
        #   H_{k+1} = Σ_m [N_e ρ^{e+1}/(k+1) − den_j' ρ^j' (1 − j'/(k+1))]/den₀·H_m
        # the numerator's part: one stacked product per order, (paths, runs, L·r) @
        # (paths, L·r, r), entry N_e[i, j] in row m·r + j, column i
        e, i, j = c.num_index
        place = ((L - 1 - e) * r + j) * r + i
        factor = pw[:, e + 1] / d0[:, None]                        # (P, X)
        values = self.num[idx] * factor
        # the sizes of the products: the coefficients' Σ|term| (their rounding), and den₀'s
        # relative rounding carried into every coefficient
        slack = 1.0 + den_size[:, 0] / ad0
        M, Mabs = np.zeros((P, L * r * r)), np.zeros((P, L * r * r))
        M[:, place] = values
        Mabs[:, place] = (self.num_size[idx] * np.abs(factor) + np.abs(values)) * slack[:, None]
        M, Mabs = M.reshape(P, L * r, r), Mabs.reshape(P, L * r, r)
        del factor, values
        Dw, Dw_size = np.zeros((P, L)), np.zeros((P, L))
        for m in range(L):
            jd = L - m
            if 1 <= jd <= dd:
                Dw[:, m] = den[:, jd] * pw[:, jd] / d0
                Dw_size[:, m] = den_size[:, jd] * apw[:, jd] / ad0
        jds = L - np.arange(L)
        Dw_size = (Dw_size + np.abs(Dw)) * slack[:, None]
        signs = SIGNS[:, :, np.arange(r) % SIGNS.shape[2]]                 # (RUNS, 62, r)
        kicks = (ROUNDING * EPS) * np.moveaxis(signs[:, :-1], 1, 0)       # (61, RUNS, r)
        # 1 + RUNS runs: the start, and RUNS times the start perturbed by START·start_error
        # and kicked at every order (the difference estimates rounding and start error)
        start = np.concatenate([g0[:, None], g0[:, None] + START * start_error[:, None]
                                * signs[None, :, -1]], axis=1)          # (P, 1 + RUNS, r)
        buf = np.zeros((P, 1 + RUNS, 2 * L * r))   # the window twice: contiguous at every k
        buf[:, :, :r] = start                    # H_0 in slot 0 (and L); H_{<0} = 0
        buf[:, :, L * r:(L + 1) * r] = start
        total = start[:, :, :ncomp].copy()
        carry = np.zeros_like(total)               # compensated sums
        absum = np.max(np.abs(g0[:, :ncomp]), axis=1)
        block = np.zeros(P)
        history = np.full((P, 2), np.inf)          # the two previous blocks' largest terms
        # a floor for the decay of a block where den vanishes at |ρ| = 1 (the solutions'
        # coefficients then decay no faster than that, save for special ones)
        floor = np.abs(rho) ** BLOCK if self._ends else np.zeros(P)
        value = np.full((P, ncomp), np.nan)
        tail, spread = np.full(P, np.inf), np.full(P, np.inf)
        nterms = np.zeros(P, dtype=int)
        live = np.arange(P)                        # paths still running (rows of the arrays)
        for k in range(kmax):
            win = buf[:, :, ((k + 1) % L) * r:((k + 1) % L + L) * r]   # H_{k−L+1} … H_k
            # the denominator's part with its weights (k+1−j')/(k+1), a row per path
            wk = (Dw * (1.0 - jds / (k + 1)))[:, None, None, :]         # (P', 1, 1, L)
            w4 = win.reshape(win.shape[0], 1 + RUNS, L, r)
            h = (win @ M) / (k + 1) - (wk @ w4)[:, :, 0]
            # the size of what was summed (Σ|M||H|: cancellation in the recurrence)
            wk_size = (Dw_size * np.abs(1.0 - jds / (k + 1)))[:, None, :]   # (P', 1, L)
            sizes = ((np.abs(win[:, :1]) @ Mabs)[:, 0] / (k + 1)
                     + (wk_size @ np.abs(w4[:, 0]))[:, 0])
            h[:, 1:] += kicks[k % kicks.shape[0]] * sizes[:, None]
            slot = (k + 1) % L
            buf[:, :, slot * r:(slot + 1) * r] = h
            buf[:, :, (slot + L) * r:(slot + L + 1) * r] = h
            y = h[:, :, :ncomp] - carry                                  # compensated sums
            t = total + y
            carry = (t - total) - y
            total = t
            size = np.max(np.abs(h[:, 0, :ncomp]), axis=1)
            absum = absum + size
            block = np.maximum(block, size)
            if (k + 1) % BLOCK and k + 1 < kmax:
                continue
            # the terms' decay over the last blocks, at least the floor: the tail after
            # this block is at most BLOCK·(largest term of this block)·q/(1 − q)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(block == 0, 0.0, block / history[:, 1])
                prev = np.where(history[:, 1] == 0, 0.0, history[:, 1] / history[:, 0])
                q = np.maximum(np.maximum(ratio, prev), floor[live])
                bound = np.where(q < 1.0, BLOCK * block * q / (1.0 - q), np.inf)
            finished = (bound <= target[live]) | (k + 1 >= kmax)
            history = np.stack([history[:, 1], block], axis=1)
            block = np.zeros(block.size)
            if np.any(finished):
                rows = live[finished]
                nterms[rows] = k + 1
                tail[rows] = bound[finished]
                done = total[finished]
                value[rows] = done[:, 0]
                spread[rows] = (np.max(np.abs(done[:, 1:] - done[:, :1]), axis=(1, 2))
                                + EPS * absum[finished])
                keep = ~finished
                live, buf, M, Mabs = live[keep], buf[keep], M[keep], Mabs[keep]
                Dw, Dw_size = Dw[keep], Dw_size[keep]
                total, carry, absum = total[keep], carry[keep], absum[keep]
                block, history = block[keep], history[keep]
                if live.size == 0:
                    break
        return value, tail, spread, nterms
