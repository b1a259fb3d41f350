"""Dual activations from a Pfaffian system and its series, all points at once.

For arrays (a, b, c) the evaluator splits the points by what serves them best
and shares all per-variance work (variances repeat across the pairs of a
kernel matrix).  Three modes (the methods ``series``, ``hgm`` and the region
split that ``auto`` uses, :mod:`ntkhgm.duals`):

1. degenerate Λ (a = 0, b = 0 or |ρ| = 1: kernel diagonals, duplicate rows):
   the 1-D integral E_z[f(√a z) f(±√b z)] (every mode);
2. ``series``: the Mehler series (docs/math.md §8, :mod:`.hermite_series`)
   with a rigorous per-pair truncation bound, up to 2048 terms;
3. ``hgm``: the Pfaffian system (docs/math.md §4, §9): for |ρ| ≤ 0.9 its Taylor
   series at ρ = 0 from the factorised 1-D moments at c = 0 (§5, §9a:
   :class:`.taylor.RhoTaylor`, a recurrence per pair, with truncation, rounding and
   start-value estimates; where it does not reach the tolerance a path in
   θ = arccos ρ, or the fallback where rounding or the start values limit it);
   beyond, initial values at |ρ| = 0.9 from the series of the moments
   E[u^p f(u) v^q f(v)] (or at c = 0 and a path in θ), then the local
   (Frobenius) solutions at |ρ| = 1 of the system sheared and reduced there
   (:class:`.pfaffian_ode.EndPathEvaluator`,
   :class:`.pfaffian_ode.FrobeniusSolutions`): a cost that does not depend on
   how near |ρ| = 1 the pair is;
4. ``auto``: the series where it reaches the tolerance within 256 terms; beyond
   |ρ| = 0.9, for f = Y·g with g entire (ReSin), an analytic part and a
   thin-wedge series (docs/math.md §9b, :mod:`.rectified`); then the local
   solutions, if this activation's pass their check at a reference point; then
   the series to 2048 terms where a geometric extrapolation of its tails says it
   can (GELU, an entire function, all the way to |ρ| = 1); then the Pfaffian
   paths; then the series to 2048 terms and the reference quadrature.

Every path near |ρ| = 1 is checked: the limit of its local solution at |ρ| = 1
must agree with the 1-D integral there.  Paths that fail the check or another
guard (a residue computed with too much rounding at large variances, a gauge
that would amplify rounding), and systems with no diagonal shearing (GELU′), go
to the fallback (series to 2048 terms, then quadrature) instead of returning a
value the evaluator cannot vouch for; ``regions`` counts what each call did.

When every point has the same variances (data on a sphere), D depends on θ
alone and is analytic in θ for |ρ| ≤ 0.9: one Chebyshev interpolant there,
built from the steps above at a few nodes and checked between them, serves all
those points (``auto`` only).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from ..errors import (
    IntegrationError,
    MethodUnavailableError,
    PfaffianFileError,
    SingularityError,
)
from . import hermite_series as hs
from .covariance import correlation
from .quadrature import (
    expect_1d,
    expect_1d_powers,
    expect_2d,
    expect_pair_1d,
    expect_pair_1d_shared,
)
from .rectified import K_TAIL as RECTIFIED_TAYLOR
from .rectified import RectifiedNearDiagonal

if TYPE_CHECKING:
    from .pfaffian_ode import EndSystem, RhoSystem
# the Pfaffian machinery (.pfaffian_ode: paths, local solutions; .taylor: the series at
# ρ = 0) is imported where a path is taken: the Mehler series alone need not load it

DEFAULT_TOL = 1e-13
CHEB_RHO = 0.9
RHO_START = 0.9
MODES = ("series", "hgm", "auto")
EPS = np.finfo(float).eps
# variances equal to this relative tolerance count as one (rows normalised in floating point)
UNIFORM_RTOL = 1e-14
# where the local solutions at |ρ| = 1 are checked against the 1-D integral (t^½ ≈ 1e-16)
T_CHECK = 1e-32
# ... to CHECK_TOL·tol of the Cauchy–Schwarz scale (measured: the discrepancy there is
# the error of the path's values, 1e-15 to 2e-13 for ReSin σ′, 1e-12 to 4e-11 for GELU)
CHECK_TOL = 10.0
# the Hermite coefficients of a kernel's rows kept between its rows' pass and its pairs
ROWS_MEMO_BYTES = 64 << 20


_RHO_MEMO: dict[str, RhoSystem] = {}


def rho_system(system) -> RhoSystem:
    """The Pfaffian in (sa, sb, ρ) coordinates (docs/math.md §9), once per process: the
    shipped file checked against the Pfaffian (catalog activations, :mod:`.rho_files`),
    else derived exactly (user activations: up to a second for rank 8)."""
    from ..paths import shipped_rho_dir
    from .pfaffian_ode import RhoSystem, rho_system_key
    from .rho_files import load_rho_system

    key = rho_system_key(system)
    if key not in _RHO_MEMO:
        try:
            rs = load_rho_system(system, shipped_rho_dir())
        except PfaffianFileError as exc:
            warnings.warn(f"{exc}; deriving the system from its Pfaffian instead",
                          RuntimeWarning, stacklevel=2)
            rs = None
        _RHO_MEMO[key] = RhoSystem.from_pfaffian(system) if rs is None else rs
    return _RHO_MEMO[key]


def _moments(f, sa: np.ndarray, pmax: int) -> np.ndarray:
    """μ_p(sa) = E_z[z^p f(sa z)], p = 0..pmax, shape (pmax+1, len(sa)) (docs/math.md §5)."""
    powers = np.arange(pmax + 1)
    return (expect_1d_powers(f, sa, list(powers))            # f once per node
            / np.where(sa > 0, sa, 1.0) ** powers[:, None])


class HGMEvaluator:
    """Dual activation D_f(a, b, c) of one function f (σ or σ') with its Pfaffian system."""

    def __init__(self, f, system=None, *, tol: float = DEFAULT_TOL, mode: str = "auto",
                 annihilator: str | None = None, loader=None,
                 rectified=None, precision: tuple[str, float] | None = None):
        """``system``: the Pfaffian system of f, or None with ``loader``, a function that
        returns it (loaded and verified) and is called on first need only: a call whose
        pairs all go to the series or the 1-D integral never loads the system (mode
        ``series`` never does).  ``rectified``: for f = Y·g with g entire, g
        (:class:`~ntkhgm.activations.Rectified`): mode ``auto`` then evaluates pairs near
        |ρ| = 1 by an analytic part and a thin wedge (docs/math.md §9b) before any path.
        ``precision``: the recurrence's declared precision (catalog activations;
        :func:`.hermite_series.checked_recurrence`), None to measure it."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.f = f
        self._system = system
        self._loader = loader
        self.tol = tol
        self.mode = mode
        self._rs = None
        self._ends: dict = {}
        self._plans: dict = {}
        self.regions: Counter = Counter()
        self._far_bound = np.empty(0)
        self._trust_end: bool | None = None
        # Hermite coefficients by the annihilator's recurrence where it has one (docs/math.md
        # §10), else by quadrature: decided here, once
        self.recurrence = hs.checked_recurrence(f, annihilator, precision)
        self._memo: dict = {}
        self._memo_rows: dict = {}
        # sphere data: the Chebyshev interpolant in θ of each variance (or None: it did not
        # pass its check), built once per process; a function of the variance alone
        self._cheb: dict[float, np.ndarray | None] = {}
        self._near_coef: dict[tuple[float, int], tuple[np.ndarray, np.ndarray]] = {}
        self._rectified = rectified
        self._near_one: RectifiedNearDiagonal | None = None

    def coefficients(self, vals: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
        """h_n(a), n ≤ kmax, and E f², for the distinct √a in ``vals`` (docs/math.md §8, §10).

        Remembered (a column depends on its variance only, so this is exact): a few
        variances at a time (the Chebyshev nodes of one variance, asked for again and
        again), up to 16 sets, and larger sets up to ROWS_MEMO_BYTES in all, the latest
        kept (a kernel's rows: asked for by the diagonals of every layer in the rows'
        pass, then by the pairs of each layer)."""
        key = (kmax, vals.tobytes())
        small = vals.size <= 4
        memo = self._memo if small else self._memo_rows
        if key not in memo:
            value = hs.hermite_coefficients(self.f, vals, kmax, self.recurrence)
            if small:
                if len(memo) >= 16:
                    memo.pop(next(iter(memo)))
            else:
                size = value[0].nbytes
                while memo and sum(h.nbytes for h, _ in memo.values()) + size > ROWS_MEMO_BYTES:
                    memo.pop(next(iter(memo)))
                if size > ROWS_MEMO_BYTES:
                    return value
            memo[key] = value
        H, second = memo[key]
        return H.copy(), second.copy()

    def forget_rows(self) -> None:
        """Drop the remembered coefficients of large sets of variances (a kernel's rows)."""
        self._memo_rows.clear()

    def end_system(self, end: int) -> tuple[EndSystem, np.ndarray] | None:
        """The system at ρ = end in t = 1 − end·ρ, sheared (docs/math.md §9), and the
        spectrum of its reduced residue at a = b = 1; built once.  None where no
        diagonal shearing makes the pole simple (GELU′: a Moser reduction would be
        needed; such paths go to the fallback)."""
        from .pfaffian_ode import EndPathEvaluator, EndSystem

        if end not in self._ends:
            try:
                es = EndSystem.from_rho_system(self.rs, end)
                one = np.ones(1)
                reference = EndPathEvaluator(es, one, one)
                self._ends[end] = (es, reference.spectrum[0])
                self._plans[end] = reference.plan
            except SingularityError:
                self._ends[end] = None
        return self._ends[end]

    @property
    def system(self):
        """The Pfaffian system, loaded on first use (``loader``); a loader that fails
        (a damaged file) fails again at the next use: nothing unverified is kept."""
        if self._system is None and self._loader is not None:
            system = self._loader()
            if system is None:
                raise MethodUnavailableError("no Pfaffian system for this function")
            self._system = system
        return self._system

    @property
    def system_loaded(self) -> bool:
        """Whether the system is at hand (given, or loaded by now)."""
        return self._system is not None

    @property
    def rs(self) -> RhoSystem:
        """The exact (√a, √b, ρ) system, derived on first use (ODE paths only)."""
        if self._rs is None:
            self._rs = rho_system(self.system)
        return self._rs

    def _start(self, sa, sb, theta, near):
        """Initial values G̃ and their θ per path, the scale of G̃ and the Cauchy–Schwarz scale of D.

        Paths start at |ρ| = RHO_START (on the side of the target), where the
        Mehler series gives every component G̃_s to absolute accuracy (it is a
        series for the moment E[u^p f(u) v^q f(v)] too), or, where that series
        is not accurate enough, at c = 0 from the factorised 1-D moments
        (docs/math.md §5).  Starting late matters for σ of large variance (sin,
        erf): their moments at c = 0 are exponentially small, known only to
        absolute accuracy, and the ODE multiplies their relative error by the
        growth e^{√(ab)}.
        """
        rs = self.rs
        j = np.array([m[1] for m in self.system.std_monomials])
        vals, inv = np.unique(np.concatenate([sa, sb]), return_inverse=True)
        ia, ib = inv[: sa.size], inv[sa.size:]
        second = _second(self.f, vals)
        scale = np.sqrt(second[ia] * second[ib])
        rho_start = np.where(np.cos(theta) < 0, -RHO_START, RHO_START)
        g, ok = self._moment_series(vals, ia, ib, rho_start, scale)
        # paths that end before |ρ| = RHO_START start at c = 0 (the seed's HGM)
        ok &= near
        theta_start = np.arccos(rho_start)
        if not np.all(ok):
            mu = _moments(self.f, vals, max(max(rs.p), max(rs.q)))
            g0 = (2.0 ** j)[None, :] * mu[list(rs.p)][:, ia].T * mu[list(rs.q)][:, ib].T
            g[~ok] = g0[~ok]
            theta_start[~ok] = 0.5 * np.pi
        return g, theta_start, np.maximum(scale, np.max(np.abs(g), axis=1)), scale

    def _paths(self, sa, sb, theta):
        """D at θ by the Pfaffian system (step 3); NaN where the growth of rounding
        errors towards |ρ| = 1 would exceed the tolerance (module docstring).

        Targets with |ρ| ≤ RHO_START: the Taylor series at ρ = 0 (docs/math.md §9a) where
        it meets the tolerance, else a path in θ; beyond: :meth:`_ode_paths`."""
        rho_edge = np.arccos(RHO_START)
        near = (theta < rho_edge) | (theta > np.pi - rho_edge)
        out = np.full(theta.size, np.nan)
        far = np.flatnonzero(~near)
        ode = near.copy()
        if far.size:
            out[far], limited = self._taylor(sa[far], sb[far], theta[far])
            # pairs the series did not reach go by a path in θ; those where it converged but
            # its rounding or start-value estimate exceeds the tolerance are left to the
            # fallback: a path in θ from the same start meets the same floor (measured:
            # GELU′ at a, b ≈ 10, |ρ| ≈ 0.8, 24 of 38 paths failed after up to 4096 steps)
            ode[far] = np.isnan(out[far]) & ~limited
        rest = np.flatnonzero(ode)
        if rest.size:
            out[rest] = self._ode_paths(sa[rest], sb[rest], theta[rest])
        return out

    def _taylor(self, sa, sb, theta):
        """D by the Taylor series at ρ = 0 of the ρ-system (docs/math.md §9a), from the
        factorised moments at c = 0 (§5), its error controlled relative to the
        Cauchy–Schwarz scale √(E f(√a z)² E f(√b z)²); NaN where the series does not
        meet the tolerance.  Also a mask of the pairs where the series converged but the
        estimate of its rounding or of the start values' error (quadrature: ε·√E[z^{2p}
        f(√a z)²] for the moment μ_p, measured) carried to the target exceeds it."""
        from .taylor import RhoTaylor

        rs = self.rs
        j = np.array([m[1] for m in self.system.std_monomials])
        pmax = max(max(rs.p), max(rs.q))
        vals, inv = np.unique(np.concatenate([sa, sb]), return_inverse=True)
        ia, ib = inv[: sa.size], inv[sa.size:]
        mu = _moments(self.f, vals, pmax)
        # E[(√a z)^{2p} f(√a z)²]: p = 0 is E f², the Cauchy–Schwarz scale of D
        seconds = expect_1d_powers(lambda u: self.f(u) ** 2, vals, [2 * p for p in range(pmax + 1)])
        nu = np.sqrt(np.maximum(seconds, 0.0)) / np.where(vals > 0, vals, 1.0) ** np.arange(
            pmax + 1)[:, None]
        p, q = list(rs.p), list(rs.q)
        g0 = (2.0 ** j)[None, :] * mu[p][:, ia].T * mu[q][:, ib].T
        g0_error = EPS * (2.0 ** j)[None, :] * (np.abs(mu[p][:, ia].T) * nu[q][:, ib].T
                                                + nu[p][:, ia].T * np.abs(mu[q][:, ib].T))
        res = RhoTaylor(rs, sa, sb).evaluate(g0, np.cos(theta), tol=self.tol,
                                             scale=np.sqrt(seconds[0, ia] * seconds[0, ib]),
                                             start_error=g0_error)
        self.regions["Pfaffian series at ρ = 0 (Taylor)"] += int(np.sum(res.ok))
        return np.where(res.ok, res.value[:, 0], np.nan), res.limited

    def _ode_paths(self, sa, sb, theta):
        """D at θ by paths of the Pfaffian system: in θ up to |ρ| = RHO_START (or the
        target), then near |ρ| = 1 the local solutions (docs/math.md §9)."""
        rho_edge = np.arccos(RHO_START)
        near = (theta < rho_edge) | (theta > np.pi - rho_edge)
        g, theta_start, scale, dual_scale = self._start(sa, sb, theta, near)
        # up to |ρ| = RHO_START (or the target, if nearer): paths in θ
        theta_mid = np.where(near, np.where(theta < 0.5 * np.pi, rho_edge, np.pi - rho_edge),
                             theta)
        out = np.full(theta.size, np.nan)
        move = theta_mid != theta_start
        G = g.copy()
        if np.any(move):
            G[move] = self._theta_paths(sa[move], sb[move], G[move], theta_start[move],
                                        theta_mid[move], scale[move])
        out[~near] = G[~near, 0]
        self.regions["Pfaffian path in θ"] += int(np.sum(~near & np.isfinite(out)))
        for end in (1, -1):
            m = (near & np.all(np.isfinite(G), axis=1)
                 & ((theta < 0.5 * np.pi) if end == 1 else (theta > 0.5 * np.pi)))
            if np.any(m):
                out[m] = self._end_paths(end, sa[m], sb[m], theta[m], G[m], dual_scale[m])
        return out

    def _theta_paths(self, sa, sb, g, theta_start, theta_target, scale):
        from .pfaffian_ode import PathEvaluator, integrate_paths

        try:
            return integrate_paths(PathEvaluator(self.rs, sa, sb), g, theta_target,
                                   tol=self.tol, scale=scale, theta_start=theta_start,
                                   strict=False)
        except (IntegrationError, SingularityError) as exc:
            self._name_lambda(exc, sa, sb, theta_target)

    def _end_paths(self, end, sa, sb, theta, g, scale):
        """From |ρ| = RHO_START to the target near ρ = end (docs/math.md §9); the error
        of D is controlled relative to ``scale``, the Cauchy–Schwarz scale.

        The local (Frobenius) solutions at |ρ| = 1 carry the values from t₁ to the target
        in a cost that does not depend on how near |ρ| = 1 it is; t₁ = 1 − RHO_START, or
        for large variances a smaller t₁ reached first by Taylor steps at regular points
        (or a path in log t).  Targets the local solutions do not reach go that way all
        the way.
        """
        from .pfaffian_ode import EndPathEvaluator, FrobeniusSolutions, residue_exponents

        # t = 1 − |ρ| from θ without cancellation
        t = 2.0 * (np.sin(0.5 * theta) if end == 1 else np.cos(0.5 * theta)) ** 2
        t0 = np.full(t.size, 1.0 - RHO_START)
        out = np.full(t.size, np.nan)
        if self.end_system(end) is None:
            return out
        es, spectrum = self.end_system(end)
        try:
            ev = EndPathEvaluator(es, sa, sb, self._plans[end])
        except SingularityError as exc:
            self._name_lambda(exc, sa, sb, theta)
        # D = Σ_j M_0j(t) Y_j.  Rounding of the start (relative to the size of G̃) is
        # carried to D by the gauge row M_0·, which grows as t → 0 where the system
        # has solutions that blow up there (module docstring); paths whose growth
        # would spoil the tolerance are left to the fallback
        growth = (np.sum(np.abs(ev.to_original(t)[:, 0, :]), axis=1)
                  / np.sum(np.abs(ev.to_original(t0)[:, 0, :]), axis=1))
        ok = 16 * EPS * growth <= 0.1 * self.tol
        # the residue's spectrum does not depend on the variances; where rounding in the
        # polynomial coefficients (large a, b) has moved it, the reduction is not to be trusted
        ok &= np.all(np.abs(ev.spectrum - spectrum) <= 1e-6 * (1 + np.abs(spectrum)), axis=1)
        if not np.any(ok):
            return out
        ev, t, t0, scale = ev.subset(ok), t[ok], t0[ok], scale[ok]
        y0 = np.linalg.solve(ev.to_original(t0), g[ok][:, :, None])[:, :, 0]
        M_end = ev.to_original(t)
        local = FrobeniusSolutions(ev, residue_exponents(spectrum), 1.0 - RHO_START)
        t1 = local.reach()
        reach = np.isfinite(t1)
        t1 = np.where(reach, t1, t0)
        near = reach & (t <= t1)
        y = np.full(y0.shape, np.nan)
        y1 = y0.copy()                 # Y at t₁, where the local solutions take over
        try:
            # large variances (t₁ < t₀): Taylor steps to t₁ first (measured: cheaper than
            # the series of the moments at t₁, ~1/t₁ terms, which often misses the check)
            self._log_path(ev, y0, t0, t1, y1, near & (t1 < t0))
            # targets before t₁: Taylor steps to the target, then on to t₁ for the check
            mid = reach & ~near
            self._log_path(ev, y0, t0, t, y, mid)
            self._log_path(ev, y, t, t1, y1, mid)
        except (IntegrationError, SingularityError) as exc:
            i = int(np.flatnonzero(ok)[getattr(exc, "path", 0)])
            exc.path = i
            self._name_lambda(exc, sa, sb, theta)
        c = local.weights(np.where(reach[:, None], y1, 1.0), t1)
        y[near] = local.evaluate(c, t1, np.where(near, t, t1))[near]
        # an independent check of every path: the limit of its local solution at |ρ| = 1
        # against the 1-D integral E[f(√a z) f(±√b z)] there.  Rounding in the start values,
        # the gauge, the path and the series shows up there as it does at the target;
        # paths that cannot be checked (no local solutions) are left to the fallback
        check = np.full(t.size, T_CHECK)
        limit = np.einsum("pj,pj->p", ev.to_original(check)[:, 0, :],
                          local.evaluate(c, t1, check))
        vals, inv = np.unique(np.concatenate([sa[ok], sb[ok]]), return_inverse=True)
        exact = expect_pair_1d_shared(self.f, vals, inv[: t.size], inv[t.size:], end)
        passed = reach & (np.abs(limit - exact) <= CHECK_TOL * self.tol * scale)
        y[~passed] = np.nan
        self.regions["Pfaffian local solutions at |ρ| = 1 (Frobenius)"] += int(np.sum(
            near & passed))
        self.regions["Pfaffian path near |ρ| = 1 (reduced system, Taylor steps)"] += int(np.sum(
            ~near & passed))
        out[ok] = np.einsum("pj,pj->p", M_end[:, 0, :], y)
        return out

    def _log_path(self, ev, y_from, t_from, t_to, y_out, mask):
        """y_out[mask] = Y at t_to from Y = y_from at t_from: Taylor steps at regular points
        (:func:`.pfaffian_ode.taylor_steps`), or where they cannot step, a path in log t
        with every component to relative accuracy tol (they all matter further on)."""
        from .pfaffian_ode import integrate_reduced, taylor_steps

        if not np.any(mask):
            return
        sub = ev.subset(mask)
        y = taylor_steps(sub, y_from[mask], t_from[mask], t_to[mask], tol=self.tol)
        rest = np.isnan(y[:, 0])
        if np.any(rest):
            size = np.max(np.abs(y_from[mask][rest]), axis=1)
            y[rest] = integrate_reduced(sub.subset(rest), y_from[mask][rest], t_from[mask][rest],
                                        t_to[mask][rest], tol=self.tol, scale=size,
                                        weights=np.ones_like(y[rest]), strict=False)
        y_out[mask] = y

    @staticmethod
    def _name_lambda(exc, sa, sb, theta):
        i = getattr(exc, "path", 0)
        c = sa[i] * sb[i] * np.cos(theta[i])
        raise type(exc)(str(exc), float(sa[i] ** 2), float(sb[i] ** 2), float(c)) from None

    def _moment_series(self, vals, ia, ib, rho, scale, kmax: int = 384):
        """G̃_s = 2^j Σ_n ρⁿ h_n^(p)(a) h_n^(q)(b) with h^(p) the Hermite coefficients of
        z^p f(√a z); and a mask of the paths whose truncation bound meets the tolerance."""
        rs = self.rs
        pmax = max(max(rs.p), max(rs.q))
        # the coefficients of z^p f(√a z) from those of f by the three-term recurrence
        # z·He_n = He_{n+1} + n·He_{n−1} (docs/math.md §8): one quadrature, not pmax + 1
        H, _ = self.coefficients(vals, kmax + pmax)
        # E[(√a z)^{2p} f(√a z)²] for the truncation bounds, one quadrature for all p
        seconds = expect_1d_powers(lambda u: self.f(u) ** 2, vals, [2 * p for p in range(pmax + 1)])
        coef, tails = {}, {}
        for p in range(pmax + 1):
            if p in rs.p or p in rs.q:
                coef[p] = H[: kmax + 1]
                norm = np.where(vals > 0, vals, 1.0) ** (2 * p)
                tails[p] = hs.tail_norms(coef[p], seconds[p] / norm)[-1]
            H = hs.times_z(H)
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

    def __call__(self, a, b=None, c=None) -> np.ndarray:
        """D_f at every (a, b, c), or at the :class:`Pairs` ``a`` (shared with the
        evaluators of other functions); :attr:`regions` then counts the pairs per region."""
        pairs = a if isinstance(a, Pairs) else Pairs(a, b, c)
        out = np.empty(pairs.size)
        d = pairs.cor.degenerate
        self.regions = Counter({"degenerate: 1-D integral": pairs.n_degenerate})
        if pairs.n_degenerate:
            out[d] = self._degenerate(pairs.a[d], pairs.b[d], pairs.c[d])
        if pairs.n_degenerate == pairs.size:
            return out.reshape(pairs.shape)
        if self.mode == "auto" and pairs.uniform:
            # one variance up to rounding (normalised data): D depends on θ alone
            values = self._chebyshev(pairs.s_uniform, pairs.theta)
        else:
            vals, inv = pairs.unique()
            values = self._general(pairs.sa, pairs.sb, pairs.theta, vals, inv)
        if pairs.n_degenerate == 0:
            return values.reshape(pairs.shape)
        out[pairs.rest] = values
        return out.reshape(pairs.shape)

    def _degenerate(self, a, b, c) -> np.ndarray:
        """D where Λ is degenerate: u = √a z, v = ±√b z, one Gaussian variable.

        On the diagonal proper (a = b = c > 0: a kernel's rows) D = E f(√a z)², the
        second moment the Hermite coefficients of √a come with (hs.hermite_coefficients,
        Gauss–Legendre panels split at 0: the same rule as the coefficients, converged
        to rounding for f smooth except at 0): the rows' pass of a kernel asks for the
        coefficients of its variances, which its pairs then use again (remembered,
        :meth:`coefficients`).  Elsewhere the 1-D integral (:func:`.expect_pair_1d`)."""
        out = np.empty(a.size)
        diag = (a == b) & (c == a) & (a > 0)
        if np.any(diag):
            vals, inv = np.unique(np.sqrt(a[diag]), return_inverse=True)
            out[diag] = self.coefficients(vals, hs.K_BINS[-1])[1][inv]
        rest = ~diag
        if np.any(rest):
            sign = np.where(c[rest] < 0, -1.0, 1.0)
            out[rest] = expect_pair_1d(self.f, self.f, np.sqrt(a[rest]),
                                       np.sqrt(b[rest]) * sign)
        return out

    def _series(self, sa, sb, theta, vals, inv, bins, coef=None):
        """Mehler series where it converges within max(bins) terms; NaN elsewhere.
        ``coef``: the coefficients (h_n, E f²) of ``vals`` to bins[-1], if already known."""
        ia, ib = inv[: sa.size], inv[sa.size:]
        rho = np.cos(theta)
        H, second = self.coefficients(vals, bins[-1]) if coef is None else coef
        T = hs.tail_norms(H, second)[list(bins)]
        U = hs.log_tail_ratios(T, second)
        with np.errstate(divide="ignore"):
            log_rho = np.log(np.abs(rho))
        need = hs.terms_needed(log_rho, ia, ib, U, 0.1 * self.tol, bins)
        out = np.full(sa.size, np.nan)
        # the pairs grouped by their number of terms: one stable sort of small integers
        order = np.argsort(need.astype(np.int16), kind="stable")     # (a radix sort)
        edges = np.searchsorted(need[order], list(bins) + [bins[-1] + 1])
        for k, lo, hi in zip(bins, edges[:-1], edges[1:], strict=True):
            if hi > lo:
                sel = order[lo:hi]
                out[sel] = hs.series_sum(H, ia[sel], ib[sel], rho[sel], k)
                self.regions[f"Mehler series, {k} terms"] += int(hi - lo)
        # what 2048 terms could reach, with the tails extrapolated geometrically from the
        # last two bins: optimistic for the algebraic decay of a kink, so a pair that fails
        # even this is not worth coefficients that far (its paths come first)
        self._far_bound = np.full(sa.size, np.inf)
        far = order[: edges[0]]
        with np.errstate(under="ignore", divide="ignore", invalid="ignore"):
            decay = np.minimum(T[-1] / T[-2], 1.0) if len(bins) > 1 else np.ones(T.shape[1])
            steps = (hs.K_BINS_FAR[-1] - bins[-1]) / (bins[-1] - bins[-2]) if len(bins) > 1 else 0
            far_tail = T[-1] * decay ** steps
            scale = np.sqrt(second[ia[far]] * second[ib[far]])
            self._far_bound[far] = (np.abs(rho[far]) ** (hs.K_BINS_FAR[-1] + 1)
                                    * np.sqrt(far_tail[ia[far]] * far_tail[ib[far]]) / scale)
        return out

    def _general(self, sa, sb, theta, vals, inv):
        if self.mode == "hgm":
            out = self._paths(sa, sb, theta)
            rest = np.isnan(out)
            if np.any(rest):
                out[rest] = self._fallback(sa[rest], sb[rest], theta[rest])
            return out
        # the series: 256 terms for all pairs, up to 2048 for the variances of the rest
        out = self._series(sa, sb, theta, vals, inv, hs.K_BINS)
        far = np.flatnonzero(np.isnan(out))
        tried = np.zeros(out.size, dtype=bool)
        if self.mode == "auto" and far.size and self._rectified is not None:
            # f = Y·g: near |ρ| = 1 an analytic part and a thin wedge (docs/math.md §9b)
            near = far[np.abs(np.cos(theta[far])) >= RHO_START]
            if near.size:
                out[near] = self._rectified_near(sa[near], sb[near], theta[near], vals,
                                                 inv[: sa.size][near], inv[sa.size:][near])
                far = far[np.isnan(out[far])]
        if self.mode == "auto" and far.size:
            # beyond |ρ| = RHO_START the local solutions at |ρ| = 1 are cheaper than a
            # longer series, where they pass their check on a reference point (asked only
            # when there are such pairs: the check needs the Pfaffian system)
            first = far[np.abs(np.cos(theta[far])) >= RHO_START]
            if first.size and self._end_paths_hold():
                out[first] = self._paths(sa[first], sb[first], theta[first])
                tried[first] = True
                far = far[np.isnan(out[far])]
        hopeful = far[self._far_bound[far] <= 0.1 * self.tol]
        if hopeful.size:
            out[hopeful] = self._series_far(sa[hopeful], sb[hopeful], theta[hopeful])
            far = far[np.isnan(out[far])]
        if far.size and self.mode == "series":
            i = int(far[0])
            raise IntegrationError(
                f"the Mehler series does not reach tol={self.tol:g} within "
                f"{hs.K_BINS_FAR[-1]} terms (|ρ| too close to 1; use method 'hgm' or 'auto')",
                float(sa[i] ** 2), float(sb[i] ** 2), float(sa[i] * sb[i] * np.cos(theta[i])))
        if far.size:
            sub = np.full(far.size, np.nan)
            fresh = ~tried[far]
            if np.any(fresh):
                sub[fresh] = self._paths(sa[far][fresh], sb[far][fresh], theta[far][fresh])
            rest = np.isnan(sub)
            if np.any(rest):
                # the series to 2048 terms (also where the cheap test above was pessimistic),
                # then the reference quadrature
                sub[rest] = self._fallback(sa[far][rest], sb[far][rest], theta[far][rest])
            out[far] = sub
        return out

    def _rectified_near(self, sa, sb, theta, vals, ia, ib):
        """D near |ρ| = 1 for f = Y·g (docs/math.md §9b), NaN where its bounds do not
        promise the tolerance of the Cauchy–Schwarz scale."""
        if self._near_one is None:
            r = self._rectified
            self._near_one = RectifiedNearDiagonal(r.g, r.annihilator,
                                                   r.taylor(RECTIFIED_TAYLOR), r.precision)
        Hf, second = self.coefficients(vals, hs.K_BINS[-1])
        out = self._near_one.evaluate(sa, sb, theta, vals, ia, ib, Hf, second, self.tol)
        self.regions["near |ρ| = 1: analytic part and wedge series (f = Y·g)"] += int(
            np.sum(np.isfinite(out)))
        return out

    def _end_paths_hold(self) -> bool:
        """Whether the paths near |ρ| = 1 pass their check (:meth:`_end_paths`) at a
        reference point (a = b = 1, ρ = ±0.999); decided once, so that the choice never
        depends on the batch.  GELU's do not (its series reaches |ρ| = 1 instead)."""
        if self._trust_end is None:
            regions = self.regions.copy()
            one = np.ones(2)
            ref = self._paths(one, one, np.arccos(np.array([0.999, -0.999])))
            self._trust_end = bool(np.all(np.isfinite(ref)))
            self.regions = regions
        return self._trust_end

    def _series_far(self, sa, sb, theta):
        """The series continued to 2048 terms, a bin at a time: coefficients to 512 terms for
        these pairs' variances, extended to 1024 only for those of the pairs 512 did not
        serve, ... (most of the work is in the last bin)."""
        out = np.full(sa.size, np.nan)
        todo = np.arange(sa.size)
        coef = None
        for k in hs.K_BINS_FAR:
            vals, inv = np.unique(np.concatenate([sa[todo], sb[todo]]), return_inverse=True)
            coef = self._extend(coef, vals, k)
            out[todo] = self._series(sa[todo], sb[todo], theta[todo], vals, inv, (k,), coef)
            todo = todo[np.isnan(out[todo])]
            if todo.size == 0:
                break
            coef = (vals, *coef)
        return out

    def _extend(self, previous, vals, kmax):
        """h_n (n ≤ kmax) and E f² of ``vals``, from ``previous`` = (their variances, h_n to a
        lower order, E f²) where the annihilator's recurrence runs there: it continues from
        the last coefficients (docs/math.md §10) instead of starting again from the
        quadrature.  Every variance takes the same route (512, then 1024, then 2048 terms),
        so its coefficients do not depend on the batch."""
        if previous is None or self.recurrence is None:
            return self.coefficients(vals, kmax)
        old_vals, H_old, second_old = previous
        cols = np.searchsorted(old_vals, vals)           # vals ⊆ old_vals
        k_old = H_old.shape[0] - 1
        rec = self.recurrence
        H = np.zeros((kmax + 1, vals.size))
        H[: k_old + 1] = H_old[:, cols]
        second = second_old[cols]
        n0 = rec.start(vals)
        more = np.maximum(n0, 0) + rec.hi <= k_old       # the recurrence runs past k_old
        if np.any(more):
            H[:, more] = rec.run(H[:, more], vals[more], np.full(int(np.sum(more)),
                                                                   k_old + 1 - rec.hi))
        if np.any(~more):
            H[:, ~more], second[~more] = self.coefficients(vals[~more], kmax)
        return H, second

    def _fallback(self, sa, sb, theta):
        """Paths that cannot be trusted (docs/math.md §9, "An independent check"): the
        series to 2048 terms, then the reference quadrature."""
        out = self._series_far(sa, sb, theta)
        rest = np.isnan(out)
        if np.any(rest):
            out[rest] = self._quadrature(sa[rest], sb[rest], theta[rest])
        return out

    def _quadrature(self, sa, sb, theta):
        c = sa * sb * np.cos(theta)
        self.regions["fallback: reference quadrature"] += int(sa.size)
        return expect_2d(self.f, self.f, sa ** 2, sb ** 2, c)

    def _chebyshev(self, s: float, theta: np.ndarray) -> np.ndarray:
        """Uniform variances: D(θ) by one Chebyshev interpolant on |ρ| ≤ CHEB_RHO.

        D is analytic in θ there (the singular points are at |ρ| = 1), so the
        interpolant converges geometrically; it is checked between its nodes
        and, failing that, every point is evaluated directly.  The few pairs
        with |ρ| > CHEB_RHO are evaluated directly.  The interpolant depends on s
        alone and is remembered (:meth:`_interpolant`).
        """
        lo = np.arccos(CHEB_RHO)
        inner = (theta >= lo) & (theta <= np.pi - lo)
        n_inner = int(np.count_nonzero(inner))
        coef = self._interpolant(s) if n_inner else None
        self.regions["|ρ| ≤ 0.9, one variance: Chebyshev in θ"] += n_inner if coef is not None \
            else 0
        if coef is not None and n_inner == theta.size:
            return hs.chebyshev_sum(coef, (theta - np.pi / 2) / (np.pi / 2 - lo))
        out = np.empty(theta.size)
        if coef is not None:
            out[inner] = hs.chebyshev_sum(coef, (theta[inner] - np.pi / 2) / (np.pi / 2 - lo))
        if coef is None:
            out[~inner] = self._direct(s, theta[~inner])
            out[inner] = self._direct(s, theta[inner])
        elif n_inner < theta.size:
            out[~inner] = self._near(s, theta[~inner])
        return out

    def _near(self, s: float, theta: np.ndarray) -> np.ndarray:
        """One variance, |ρ| > CHEB_RHO: the series to 2048 terms first (one variance's
        coefficients cost little, and its truncation bound is rigorous), Pfaffian paths
        for the pairs it does not reach (:meth:`_general`).  For many variances the
        paths come first instead (their coefficients to 2048 terms would cost more)."""
        n = theta.size
        out = np.full(n, np.nan)
        todo = np.arange(n)
        one = np.array([s])
        for i, k in enumerate(hs.K_BINS_FAR):   # as _series_far, coefficients kept per s
            key = (float(s), k)
            if key not in self._near_coef:
                if len(self._near_coef) >= len(hs.K_BINS_FAR) * 64:
                    self._near_coef.pop(next(iter(self._near_coef)))
                previous = self._near_coef.get((float(s), hs.K_BINS_FAR[i - 1])) if i else None
                self._near_coef[key] = self._extend(
                    None if previous is None else (one, *previous), one, k)
            m = todo.size
            out[todo] = self._series(np.full(m, s), np.full(m, s), theta[todo], one,
                                     np.zeros(2 * m, int), (k,), self._near_coef[key])
            todo = todo[np.isnan(out[todo])]
            if todo.size == 0:
                break
        if todo.size:
            out[todo] = self._direct(s, theta[todo])
        return out

    def _direct(self, s: float, theta: np.ndarray) -> np.ndarray:
        """D at (s², s², s² cos θ) by the general route (series, then paths)."""
        n = theta.size
        return self._general(np.full(n, s), np.full(n, s), theta, np.array([s]),
                             np.zeros(2 * n, int))

    def _interpolant(self, s: float) -> np.ndarray | None:
        """The Chebyshev coefficients of D(θ) at variance s² on |ρ| ≤ CHEB_RHO (in
        x = (θ − π/2)/(π/2 − arccos CHEB_RHO)), None if no degree up to 96 passes the check
        between its nodes; built on first use, from the values at the nodes by the
        general route (the series there, |ρ| < CHEB_RHO), and remembered per s: a function
        of s alone, so remembering it changes no value."""
        key = float(s)
        if key in self._cheb:
            return self._cheb[key]
        lo = np.arccos(CHEB_RHO)
        found = None
        regions = self.regions.copy()
        for degree in (24, 48, 96):
            x = np.cos(np.pi * (np.arange(degree) + 0.5) / degree)
            xc = np.cos(np.pi * (np.arange(degree - 1) + 1.0) / degree)
            th = np.pi / 2 + (np.pi / 2 - lo) * np.concatenate([x, xc])
            vals = self._direct(key, th)
            coef = np.polynomial.chebyshev.chebfit(x, vals[:degree], degree - 1)
            approx = np.polynomial.chebyshev.chebval(xc, coef)
            if np.max(np.abs(approx - vals[degree:])) <= self.tol * np.max(np.abs(vals)):
                found = coef
                break
        self.regions = regions          # the nodes are not the caller's pairs
        if len(self._cheb) >= 64:
            self._cheb.pop(next(iter(self._cheb)))
        self._cheb[key] = found
        return found


class Pairs:
    """Points (a, b, c), flattened, with what every evaluator computes first from them:
    the correlation coordinates, which are degenerate, √a and √b and θ of the others,
    whether they share one variance, and (on demand) the distinct √a, √b.  Built once
    for σ and σ' of the same pairs (:func:`ntkhgm.duals.dual_pairs`).

    ``root``: √(ab) if known (:func:`.covariance.sqrt_product`); ``index``: a function
    returning (vals, ia, ib) with vals sorted, distinct, and √a = vals[ia], √b = vals[ib]
    per point, if known (a kernel knows its rows' variances: no sort of the pairs).
    ``vals`` may hold variances no point has: the coefficients of a variance do not depend
    on the others.
    """

    def __init__(self, a, b, c, *, root=None, index=None):
        a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (a, b, c)))
        self.shape = a.shape
        self.a, self.b, self.c = a.ravel(), b.ravel(), c.ravel()
        self.size = self.a.size
        self.cor = correlation(self.a, self.b, self.c,
                               None if root is None else np.asarray(root, dtype=float).ravel())
        self.n_degenerate = int(np.count_nonzero(self.cor.degenerate))
        # the non-degenerate points: all of them (the usual case) without copies
        self.rest = slice(None) if self.n_degenerate == 0 else np.flatnonzero(
            ~self.cor.degenerate)
        self._index = index
        self._unique = None
        if self.n_degenerate < self.size:
            self.sa, self.sb = np.sqrt(self.a[self.rest]), np.sqrt(self.b[self.rest])
            self.theta = self.cor.theta[self.rest]
            lo = min(float(self.sa.min()), float(self.sb.min()))
            hi = max(float(self.sa.max()), float(self.sb.max()))
            self.uniform = hi - lo <= UNIFORM_RTOL * hi
            self.s_uniform = 0.5 * (lo + hi)

    def unique(self) -> tuple[np.ndarray, np.ndarray]:
        """(vals, inv): √a = vals[inv[:n]], √b = vals[inv[n:]] of the non-degenerate points."""
        if self._unique is None:
            if self._index is None:
                self._unique = unique_inverse(np.concatenate([self.sa, self.sb]))
            else:
                vals, ia, ib = self._index()
                ia, ib = np.asarray(ia).ravel()[self.rest], np.asarray(ib).ravel()[self.rest]
                self._unique = vals, np.concatenate([ia, ib])
        return self._unique


def unique_inverse(x: np.ndarray, sample: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(x, return_inverse=True) for a long x with few distinct values (the
    variances of a kernel's pairs): the distinct values of a fixed pseudo-random sample,
    completed by those the sample missed, then one binary search per entry — instead
    of sorting all of x.  The result is the same."""
    if x.size <= 4 * sample:
        return np.unique(x, return_inverse=True)
    pick = np.random.default_rng(0).integers(0, x.size, sample)
    vals = np.unique(x[pick])
    inv = np.minimum(np.searchsorted(vals, x), vals.size - 1)
    miss = vals[inv] != x
    if np.count_nonzero(miss) > x.size // 16:       # many distinct values: sort them all
        return np.unique(x, return_inverse=True)
    if np.any(miss):
        vals = np.union1d(vals, x[miss])
        inv = np.searchsorted(vals, x)
    return vals, inv


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
