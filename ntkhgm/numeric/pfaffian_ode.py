"""The Pfaffian system restricted to paths of fixed variances (docs/math.md §2, §4, §9).

With a = sa², b = sb² fixed and c = sa·sb·ρ, the Pfaffian ∂ij F = Pij F in
x = −½Λ⁻¹ becomes one linear ODE in ρ for the normalised moments

    G̃_s = 2^j E_Λ[u^p f(u) v^q f(v)] / (sa^p sb^q),   s = ∂11^i ∂12^j ∂22^k,
    p = 2i + j,  q = 2k + j,   so that G̃_1 = D_f(a, b, c),

namely dG̃/dρ = B(sa, sb, ρ) G̃ with B = S⁻¹(Σ (∂x_ij/∂ρ) P_ij(x(ρ)) + ρ/(1−ρ²)) S,
S = diag(sa^p sb^q) (G = F·√det x/π = F/(2π√δ), δ = ab − c²).  The substitution
is exact (:meth:`RhoSystem.from_pfaffian`), so that no cancellation of large x
entries happens in floating point: B's common denominator is
(1−ρ)^m₁(1+ρ)^m₂·Q̃, and 1 ∓ ρ are evaluated from θ = arccos ρ as 2 sin²(θ/2),
2 cos²(θ/2).

Two kinds of path (docs/math.md §9):

- away from |ρ| = 1: in θ, from the initial values at c = 0 (§5) or at |ρ| = 0.9,
  geometric in the distance to the nearer end θ ∈ {0, π}
  (:func:`integrate_paths`);
- near |ρ| = 1: t = 1 − |ρ|, the system re-expanded exactly in t, sheared
  (:class:`EndSystem`) and reduced per path to a residue with eigenvalues in
  [0, 1) (:class:`EndPathEvaluator`); then its local solutions at t = 0
  (:class:`FrobeniusSolutions`), at a cost that does not depend on t, reached by
  Taylor steps at regular points (:func:`taylor_steps`) or a path in log t
  (:func:`integrate_reduced`).  The pole at |ρ| = 1 is double for ReSin
  and GELU (an apparently irregular point); the shearing shows it is regular.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from math import comb, gcd

import numpy as np

from ..errors import SingularityError
from . import batched_rk


@dataclass(frozen=True)
class RhoSystem:
    """dG̃/dρ = N(sa, sb, ρ) / (κ (1−ρ)^m1 (1+ρ)^m2 Q̃(sa, sb, ρ)) · G̃ (module docstring).

    Pure data: polynomial terms as (e_sa, e_sb, e_rho, coefficient).
    """

    rank: int
    p: tuple[int, ...]
    q: tuple[int, ...]
    numerators: tuple[tuple[tuple[tuple[int, int, int, Fraction], ...], ...], ...]
    kappa: Fraction
    m1: int
    m2: int
    rest: tuple[tuple[int, int, int, Fraction], ...]

    @classmethod
    def from_pfaffian(cls, system) -> RhoSystem:
        """Substitute x = −½Λ⁻¹(sa, sb, ρ) into the Pfaffian matrices, exactly.

        x11 = −1/(2a w), x12 = ρ/(2 sa sb w), x22 = −1/(2b w) with w = 1 − ρ², so a
        polynomial of degree n in x is P(sa, sb, ρ)/(sa^2n sb^2n (2w)^n): every entry
        of B is a ratio of polynomials over ℚ, summed and reduced with sparse
        polynomial gcds (sympy's ``ring``; about a second for rank 8).
        """
        # sympy only here (its import costs ~0.5 s that evaluation never needs)
        from sympy.polys.domains import QQ
        from sympy.polys.rings import ring

        ring_, sa, sb, rho = ring("sa,sb,rho", QQ)
        w = 1 - rho ** 2
        r = len(system.std_monomials)
        p = [2 * i + j for i, j, k in system.std_monomials]
        q = [2 * k + j for i, j, k in system.std_monomials]

        def substituted(poly: dict):
            n = max((sum(e) for e in poly), default=0)
            out = ring_(0)
            for (i, j, k), cf in poly.items():
                out += (QQ(cf.numerator, cf.denominator) * (-1) ** (i + k) * rho ** j
                        * sa ** (2 * n - 2 * i - j) * sb ** (2 * n - 2 * k - j)
                        * (2 * w) ** (n - i - j - k))
            return out, n

        # ∂x/∂ρ = factor · sa^−ea sb^−eb w^−2
        dx = {"x11": (-rho, 2, 0), "x12": ((1 + rho ** 2) * QQ(1, 2), 1, 1), "x22": (-rho, 0, 2)}
        entries = {}
        for i in range(r):
            for j in range(r):
                parts = [(rho, w)] if i == j else []
                for name in ("x11", "x12", "x22"):
                    rf = system.matrices[name][i][j]
                    if not rf.num:
                        continue
                    (pn, n), (pd, m) = substituted(rf.num), substituted(rf.den)
                    factor, ea, eb = dx[name]
                    num, den = pn * factor * QQ(2) ** (m - n), pd
                    for base, e in ((sa, 2 * (m - n) - ea + p[j] - p[i]),
                                    (sb, 2 * (m - n) - eb + q[j] - q[i]), (w, m - n - 2)):
                        if e >= 0:
                            num *= base ** e
                        else:
                            den *= base ** -e
                    parts.append((num, den))
                tn, td = ring_(0), ring_(1)
                for nn, dd in parts:
                    lcm = td * dd.quo(td.gcd(dd))
                    tn, td = tn * lcm.quo(td) + nn * lcm.quo(dd), lcm
                if tn:
                    g = tn.gcd(td)
                    entries[i, j] = (tn.quo(g), td.quo(g))
        common = ring_(1)
        for _, d in entries.values():
            common = common * d.quo(common.gcd(d))
        m1 = m2 = 0
        rest = common
        for sign in (-1, 1):
            while True:
                quotient, remainder = rest.div(1 + sign * rho)
                if remainder:
                    break
                rest = quotient
                if sign < 0:
                    m1 += 1
                else:
                    m2 += 1

        def terms(pe):
            return tuple((int(e[0]), int(e[1]), int(e[2]), Fraction(int(c.numerator),
                                                                    int(c.denominator)))
                         for e, c in sorted(pe.terms()))

        numerators = tuple(tuple(
            terms(entries[i, j][0] * common.quo(entries[i, j][1])) if (i, j) in entries else ()
            for j in range(r)) for i in range(r))
        return cls(rank=r, p=tuple(p), q=tuple(q), numerators=numerators, kappa=Fraction(1),
                   m1=m1, m2=m2, rest=terms(rest))

    def to_json(self) -> str:
        def terms(ts):
            return [[e1, e2, e3, str(cf)] for e1, e2, e3, cf in ts]
        return json.dumps({
            "rank": self.rank, "p": list(self.p), "q": list(self.q),
            "numerators": [[terms(e) for e in row] for row in self.numerators],
            "kappa": str(self.kappa), "m1": self.m1, "m2": self.m2, "rest": terms(self.rest),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RhoSystem:
        d = json.loads(text)

        def terms(ts):
            return tuple((int(e1), int(e2), int(e3), Fraction(cf)) for e1, e2, e3, cf in ts)
        return cls(rank=int(d["rank"]), p=tuple(d["p"]), q=tuple(d["q"]),
                   numerators=tuple(tuple(terms(e) for e in row) for row in d["numerators"]),
                   kappa=Fraction(d["kappa"]), m1=int(d["m1"]), m2=int(d["m2"]),
                   rest=terms(d["rest"]))


def _rho_coefficients(terms, sa, sb, degree):
    """Coefficients of ρ^k (k = 0..degree) of a polynomial, per path: shape (paths, degree+1)."""
    out = np.zeros((sa.size, degree + 1))
    for e1, e2, e3, cf in terms:
        out[:, e3] += float(cf) * sa ** e1 * sb ** e2
    return out


class _Rows:
    """Polynomial coefficients (stacked on axis 0, paths on axis 1) of the paths ``idx``,
    laid out per path as (paths, degree + 1, entries) and gathered once per integrator run
    (an RK run passes the same index array to every stage)."""

    def __init__(self):
        self._idx, self._arrays = None, ()

    def get(self, idx: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if idx is not self._idx:
            self._idx = idx
            self._arrays = tuple(np.ascontiguousarray(
                np.moveaxis(a[:, idx], 0, 1).reshape(idx.size, a.shape[0], -1)) for a in arrays)
        return self._arrays


def _polyval(rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_k rows[p, k, :]·x_p^k for every path p: one batched product (rows from :class:`_Rows`)."""
    return (np.vander(x, rows.shape[1], increasing=True)[:, None, :] @ rows)[:, 0, :]


class PathEvaluator:
    """B(sa, sb, ρ) for a batch of fixed-variance paths, compiled to arrays.

    The ρ-polynomial coefficients of every entry are computed once per path
    (they depend on sa, sb only); each ODE stage is then a Horner sweep.
    """

    def __init__(self, rho_system: RhoSystem, sa: np.ndarray, sb: np.ndarray):
        rs = rho_system
        r = rs.rank
        deg = max([t[2] for row in rs.numerators for e in row for t in e] + [0])
        coeffs = np.zeros((sa.size, r, r, deg + 1))
        for i in range(r):
            for j in range(r):
                coeffs[:, i, j, :] = _rho_coefficients(rs.numerators[i][j], sa, sb, deg)
        self.coeffs = np.ascontiguousarray(np.moveaxis(coeffs, -1, 0))   # (deg+1, paths, r, r)
        rdeg = max([t[2] for t in rs.rest] + [0])
        self.rest = np.ascontiguousarray(_rho_coefficients(rs.rest, sa, sb, rdeg).T)
        self.kappa, self.m1, self.m2 = float(rs.kappa), rs.m1, rs.m2
        self._rows = _Rows()

    def matrix(self, theta: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """dG̃/dθ = −sin θ · B(cos θ) for the paths idx, shape (len(idx), r, r)."""
        rho = np.cos(theta)
        coeffs, rest = self._rows.get(idx, self.coeffs, self.rest)
        num = _polyval(coeffs, rho).reshape(idx.size, *self.coeffs.shape[2:])
        rest = _polyval(rest, rho)[:, 0]
        half = 0.5 * theta
        den = (self.kappa * (2.0 * np.sin(half) ** 2) ** self.m1
               * (2.0 * np.cos(half) ** 2) ** self.m2 * rest)
        return num * (-np.sin(theta) / den)[:, None, None]


def integrate_paths(evaluator: PathEvaluator, g0: np.ndarray, theta_target: np.ndarray, *,
                    tol: float = 1e-13, scale: np.ndarray | None = None,
                    theta_start: np.ndarray | None = None, strict: bool = True) -> np.ndarray:
    """G̃ at θ_target for every path, from G̃ = g0 at θ_start (default π/2: c = 0).

    With ``strict=False`` a path that misses the tolerance is NaN, not an error.

    θ_start must lie between π/2 and θ_target (module docstring).
    """
    half_pi = 0.5 * np.pi
    upper = theta_target > half_pi
    # distance to the singular end the path approaches (0 or π)
    end_dist = np.where(upper, np.pi - theta_target, theta_target)
    if np.any(end_dist <= 0):
        raise SingularityError("path ends on the singular locus |ρ| = 1")
    start_dist = (np.full(theta_target.shape, half_pi) if theta_start is None
                  else np.where(upper, np.pi - theta_start, theta_start))
    log_ratio = np.log(end_dist / start_dist)
    sign = np.where(upper, -1.0, 1.0)
    _check_rest(evaluator, theta_target)

    def rhs(tau, y, idx):
        dist = start_dist[idx] * np.exp(tau * log_ratio[idx])
        theta = np.where(upper[idx], np.pi - dist, dist)
        dtheta = sign[idx] * dist * log_ratio[idx]
        M = evaluator.matrix(theta, idx)
        return np.einsum("pij,pj->pi", M, y) * dtheta[:, None]

    if scale is None:
        scale = np.max(np.abs(g0), axis=1)
    return batched_rk.integrate(rhs, g0, tol=tol, scale=scale, strict=strict)


def _check_rest(evaluator: PathEvaluator, theta_target: np.ndarray, samples: int = 64) -> None:
    """Raise SingularityError if Q̃ changes sign (a singular point) on a path."""
    if evaluator.rest.shape[0] == 1:
        return
    idx = np.arange(theta_target.size)
    t = np.linspace(0.0, 1.0, samples)
    rho = np.outer(np.cos(theta_target), t)          # ρ runs from 0 to ρ_target on the path
    vals = evaluator.rest[-1][:, None]
    for k in range(evaluator.rest.shape[0] - 2, -1, -1):
        vals = vals * rho + evaluator.rest[k][:, None]
    bad = np.any(np.sign(vals) != np.sign(vals[:, :1]), axis=1) | np.any(vals == 0, axis=1)
    if np.any(bad):
        i = int(idx[bad][0])
        exc = SingularityError(
            f"the path from ρ = 0 to ρ = {np.cos(theta_target[i]):.17g} meets a singular "
            "point of the Pfaffian system")
        exc.path = i
        raise exc


def rho_system_key(system) -> str:
    """A stable hash of the Pfaffian content, for caching the transformed system."""
    h = hashlib.sha256()
    h.update(repr(tuple(system.std_monomials)).encode())
    for name in ("x11", "x12", "x22"):
        for row in system.matrices[name]:
            for e in row:
                h.update(repr(sorted(e.num.items())).encode())
                h.update(repr(sorted(e.den.items())).encode())
    return h.hexdigest()



# ---------------------------------------------------------------------------
# Near the diagonal: the system at ρ = ±1 in t = 1 ∓ ρ, sheared (docs/math.md §9)


def _shift_terms(terms, end: int) -> dict[tuple[int, int, int], Fraction]:
    """A polynomial in (sa, sb, ρ) re-expanded exactly in t = 1 − end·ρ: {(e_sa, e_sb, k): c}.

    ρ^n = end^n (1 − t)^n; per monomial in (sa, sb) the coefficients are brought to one
    denominator so that the binomial sums run in Python integers (exact, and ~20× faster
    than Fractions: GELU′'s system takes 0.05 s, not 0.8 s)."""
    groups: dict[tuple[int, int], list[tuple[int, Fraction]]] = {}
    for e1, e2, e3, cf in terms:
        groups.setdefault((e1, e2), []).append((e3, Fraction(cf)))
    out: dict[tuple[int, int, int], Fraction] = {}
    for (e1, e2), items in groups.items():
        den = 1
        for _, cf in items:
            den = den * cf.denominator // gcd(den, cf.denominator)
        acc = [0] * (max(e3 for e3, _ in items) + 1)
        for e3, cf in items:
            v = cf.numerator * (den // cf.denominator) * end ** e3
            for k in range(e3 + 1):
                acc[k] += v * comb(e3, k) * (-1) ** k
        for k, v in enumerate(acc):
            if v:
                out[(e1, e2, k)] = Fraction(v, den)
    return out


def shear_exponents(orders: list[list[int | None]]) -> tuple[int, ...] | None:
    """Smallest e ≥ 0 with e_j − e_i ≥ o_ij − 1 for every nonzero entry (None: none exists).

    o_ij is the pole order of entry (i, j) at t = 0; after H = diag(t^−e) G̃ the
    entry has order o_ij − (e_j − e_i) ≤ 1: a simple pole.  A longest-path
    problem (difference constraints, Bellman–Ford): a positive cycle means no
    diagonal shearing makes the point regular.
    """
    r = len(orders)
    e = [0] * r
    edges = [(i, j, orders[i][j] - 1) for i in range(r) for j in range(r)
             if orders[i][j] is not None and i != j]
    for _ in range(r + 1):
        changed = False
        for i, j, w in edges:
            if e[i] + w > e[j]:
                e[j] = e[i] + w
                changed = True
        if not changed:
            return tuple(e)
    return None


@dataclass(frozen=True)
class EndSystem:
    """t·dH/dt = R(t) H near ρ = end (t = 1 − end·ρ), H = diag(t^−e) G̃ (docs/math.md §9).

    R = −end·Ñ(sa, sb, t) / (κ (2 − t)^m_other Q̃(sa, sb, t)) − diag(e), with the
    sheared numerators Ñ_ij = t^(e_j − e_i − m + 1) N_ij re-expanded exactly in
    powers of t (all powers ≥ 0), so nothing cancels in floating point as t → 0.
    Pure data, derived from a :class:`RhoSystem` in exact rational arithmetic.
    """

    end: int
    shear: tuple[int, ...]
    numerators: tuple[tuple[tuple[tuple[int, int, int, Fraction], ...], ...], ...]
    kappa: Fraction
    m_other: int
    rest: tuple[tuple[int, int, int, Fraction], ...]

    @classmethod
    def from_rho_system(cls, rs: RhoSystem, end: int) -> EndSystem:
        """Shift to t, read the pole orders, shear; SingularityError if no diagonal shearing
        makes the singular point regular."""
        m, m_other = (rs.m1, rs.m2) if end == 1 else (rs.m2, rs.m1)
        shifted = [[_shift_terms(rs.numerators[i][j], end) for j in range(rs.rank)]
                   for i in range(rs.rank)]
        orders = [[m - min(k for _, _, k in d) if d else None for d in row] for row in shifted]
        e = shear_exponents(orders)
        if e is None:
            raise SingularityError(
                f"the Pfaffian system's singular point at ρ = {end:+d} could not be made "
                f"regular by a diagonal shearing (pole orders {orders})")
        nums = tuple(tuple(
            tuple(sorted((e1, e2, k + e[j] - e[i] - m + 1, cf)
                         for (e1, e2, k), cf in shifted[i][j].items()))
            for j in range(rs.rank)) for i in range(rs.rank))
        rest = tuple(sorted((e1, e2, k, cf) for (e1, e2, k), cf in
                            _shift_terms(rs.rest, end).items()))
        return cls(end=end, shear=e, numerators=nums, kappa=rs.kappa, m_other=m_other,
                   rest=rest)


NEG_TOL = 1e-3        # residue eigenvalues below −NEG_TOL are shifted (docs/math.md §9)
MAX_STAGES = 8


def _sign_function(A: np.ndarray, iterations: int = 80) -> np.ndarray:
    """Matrix sign of a stack of real matrices (scaled Newton); no eigenvalue on iℝ.

    Each matrix stops iterating when it has converged, so its result does not
    depend on the other matrices of the stack.
    """
    S = A.copy()
    todo = np.arange(S.shape[0])
    for _ in range(iterations):
        if todo.size == 0:
            break
        Sk = S[todo]
        Si = np.linalg.inv(Sk)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            mu = np.abs(np.linalg.det(Si)) ** (1.0 / S.shape[-1])
        mu = np.where(np.isfinite(mu) & (mu > 0), mu, 1.0)[:, None, None]
        new = 0.5 * (mu * Sk + Si / mu)
        done = (np.max(np.abs(new - Sk), axis=(1, 2))
                <= 1e-14 * np.maximum(1.0, np.max(np.abs(new), axis=(1, 2))))
        S[todo] = new
        todo = todo[~done]
    return S


class EndPathEvaluator:
    """The system near ρ = end for a batch of paths, reduced to a non-resonant residue.

    Per path (docs/math.md §9): t·dH/dt = R(t)·H with R = Num(t)/d(t) from
    :class:`EndSystem` (polynomials in t, evaluated at each path's sa, sb), then
    stages of a constant orthonormal gauge P whose first columns span the
    invariant subspace of the residue R(0) for its low eigenvalues (spectral
    projector from the matrix sign function), so that P⁻¹R(0)P is block upper
    triangular; its (high, low) block is set to exactly 0 and the shearing t^F
    raises the eigenvalues < 0 (F = +1 on the low block) or lowers those ≥ 1
    (F = −1 on the high block) by one, keeping a polynomial numerator, a simple
    pole and no cancellation.  The stages end with the spectrum in [0, 1):
    every solution of t·dY/dt = R_Y(t)·Y is then bounded and the local
    solutions at t = 0 are free of resonance (:class:`FrobeniusSolutions`).
    G̃ = diag(t^e)·P₁ t^(−F₁) P₂ t^(−F₂) ⋯ Y.
    """

    def __init__(self, es: EndSystem, sa: np.ndarray, sb: np.ndarray,
                 plan: tuple[tuple[bool, int, float], ...] | None = None):
        """``plan``: the stages (raise the low block?, its size, the split point) of a
        reference path (:attr:`plan`), which every path follows, its residue's spectrum
        not depending on the variances; None: found from each path's residue."""
        r = len(es.shear)
        self.r = r
        deg = max([t[2] for row in es.numerators for e in row for t in e] + [0])
        stages = MAX_STAGES if plan is None else len(plan)
        num = np.zeros((sa.size, r, r, deg + 1 + stages))
        for i in range(r):
            for j in range(r):
                num[:, i, j, :deg + 1] = _rho_coefficients(es.numerators[i][j], sa, sb, deg)
        num = np.moveaxis(num, -1, 0) * (-es.end / float(es.kappa))   # (deg+1+S, P, r, r)
        rdeg = max([t[2] for t in es.rest] + [0])
        d = _rho_coefficients(es.rest, sa, sb, rdeg)                   # (P, rdeg+1)
        for _ in range(es.m_other):                                    # × (2 − t)
            d = (np.concatenate([2 * d, np.zeros((d.shape[0], 1))], axis=1)
                 - np.concatenate([np.zeros((d.shape[0], 1)), d], axis=1))
        self.den = np.ascontiguousarray(d.T)                           # (ddeg+1, P)
        self.shear = np.array(es.shear, dtype=float)
        num[: self.den.shape[0]] -= (self.den[:, :, None, None]
                                     * np.diag(self.shear)[None, None])
        self.gauge: list[tuple[np.ndarray, np.ndarray]] = []
        num = self._reduce(num, plan)
        top = num.shape[0]
        while top > 1 and not np.any(num[top - 1]):
            top -= 1
        self.num = np.ascontiguousarray(num[:top])
        self._rows = _Rows()

    def _reduce(self, num: np.ndarray, plan) -> np.ndarray:
        r = self.r
        eye = np.eye(r)
        cols = np.arange(r)
        d0 = self.den[0][:, None, None]
        paths = d0.shape[0]
        steps = []
        for stage in range(MAX_STAGES if plan is None else len(plan) + 1):
            if plan is None or stage == len(plan):
                lam = np.sort(np.linalg.eigvals(num[0] / d0).real, axis=1)  # residues, (P, r)
                n_neg = np.sum(lam < -NEG_TOL, axis=1)
                n_high = np.sum(lam >= 1.0 - NEG_TOL, axis=1)
                if plan is not None or not np.any(n_neg + n_high):
                    self.spectrum = lam
                    self.plan = tuple(steps)
                    return num
                # a stage splits off the eigenvalues < 0 and raises them by one or, once
                # there are none, those ≥ 1 and lowers them by one: the spectrum ends in
                # [0, 1) (non-resonant, docs/math.md §9), where the Frobenius series applies
                raise_low = n_neg > 0
                n = np.where(raise_low, n_neg, r - n_high)              # size of the low group
                lo = np.take_along_axis(lam, np.maximum(n - 1, 0)[:, None], 1)[:, 0]
                hi = np.take_along_axis(lam, np.minimum(n, r - 1)[:, None], 1)[:, 0]
                shift = np.where(n == r, lam[:, -1] + 1.0,
                                 np.where(n == 0, lam[:, 0] - 1.0, 0.5 * (lo + hi)))
                steps.append((bool(raise_low[0]), int(n[0]), float(shift[0])))
            else:
                low, size, split = plan[stage]
                raise_low = np.full(paths, low)
                n = np.full(paths, size)
                n_neg = n if low else np.zeros(paths, dtype=int)
                n_high = np.zeros(paths, dtype=int) if low else r - n
                shift = np.full(paths, split)
            A = num[0] / d0 - shift[:, None, None] * eye
            # where every path has the same residue (the first stage of resin and resin′:
            # it does not depend on the variances), one path's gauge is every path's
            same = paths > 1 and bool(np.all(A == A[:1]))
            S = _sign_function(A[:1] if same else A)
            # an orthonormal basis whose first n vectors span the invariant subspace of the
            # low eigenvalues: P⁻¹R₀P is block upper triangular, which is all the shearing
            # needs (its (high, low) block is zero), and P is perfectly conditioned
            P = np.linalg.svd(0.5 * (eye - S))[0]
            if same:
                P = np.broadcast_to(P, A.shape).copy()
            take_low = cols[None, :] < n[:, None]                       # (P, r)
            idle = (n_neg + n_high) == 0
            P[idle] = eye     # nothing to split: no change of basis (batch-independent)
            # entries at rounding level are structural zeros of the invariant subspaces
            # (the residue has small rational entries); left in, they would reach D
            # through the negative powers of t in the gauge and grow like t^−k
            P = np.where(np.abs(P) <= 64 * np.finfo(float).eps
                         * np.max(np.abs(P), axis=(1, 2), keepdims=True), 0.0, P)
            num = np.linalg.inv(P)[None] @ num @ P[None]
            # f = +1 on the raised block, −1 on the lowered one, 0 elsewhere
            f = np.where(raise_low[:, None], take_low.astype(float), -(~take_low).astype(float))
            f[idle] = 0.0
            diff = f[:, :, None] - f[:, None, :]                        # f_i − f_j
            num[0] = np.where(diff < 0, 0.0, num[0])                    # exact (high, low) zeros
            if np.any(num[-1][diff[None, ...][0] > 0]):
                raise SingularityError("numerator degree exceeded in the reduction at |ρ| = 1")
            up = np.concatenate([np.zeros_like(num[:1]), num[:-1]])     # × t
            down = np.concatenate([num[1:], np.zeros_like(num[:1])])    # ÷ t
            num = np.where(diff[None] > 0, up, np.where(diff[None] < 0, down, num))
            num[: self.den.shape[0]] += self.den[:, :, None, None] * (f[:, :, None] * eye)[None]
            self.gauge.append((P, f))
        raise SingularityError("the residue at |ρ| = 1 keeps eigenvalues outside [0, 1) after "
                               f"{MAX_STAGES} reduction stages")

    def subset(self, mask: np.ndarray) -> EndPathEvaluator:
        """The same evaluator for the paths ``mask`` only."""
        out = object.__new__(EndPathEvaluator)
        out.r, out.shear, out.plan = self.r, self.shear, self.plan
        out.spectrum = self.spectrum[mask]
        out.num, out.den = self.num[:, mask], self.den[:, mask]
        out.gauge = [(P[mask], f[mask]) for P, f in self.gauge]
        out._rows = _Rows()
        return out

    def to_original(self, t: np.ndarray) -> np.ndarray:
        """The matrix M(t) with G̃ = M(t)·Y, shape (paths, r, r)."""
        M = np.broadcast_to(np.eye(self.r), (t.size, self.r, self.r)).copy()
        for P, f in reversed(self.gauge):
            M = P @ (t[:, None, None] ** -f[:, :, None] * M)
        return t[:, None, None] ** self.shear[None, :, None] * M

    def matrix(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """R_Y(t) for the paths idx, shape (len(idx), r, r)."""
        num, den = self._rows.get(idx, self.num, self.den)
        return (_polyval(num, t) / _polyval(den, t)).reshape(idx.size, self.r, self.r)


def integrate_reduced(evaluator: EndPathEvaluator, y0: np.ndarray, t_start: np.ndarray,
                      t_target: np.ndarray, *, tol: float, scale: np.ndarray,
                      weights: np.ndarray, strict: bool = True) -> np.ndarray:
    """Y at t_target from Y = y0 at t_start: t·dY/dt = R_Y(t)·Y (:class:`EndPathEvaluator`)
    integrated in τ ∈ [0, 1] with log t = log t_start + τ·log(t_target/t_start).

    The error is controlled on Σ_j weights_j·Y_j; with the gauge row M_0·(t_target)
    as weights, on G̃_0 = D at the target.
    """
    log_ratio = np.log(t_target / t_start)

    def rhs(tau, y, idx):
        t = t_start[idx] * np.exp(tau * log_ratio[idx])
        return (evaluator.matrix(t, idx) @ y[:, :, None])[:, :, 0] * log_ratio[idx, None]

    return batched_rk.integrate(rhs, y0, tol=tol, scale=scale, weights=weights, strict=strict)


def _shift_polynomials(coef: np.ndarray, tc: np.ndarray) -> np.ndarray:
    """Coefficients in s of p(tc + s) from those in t of p (axis 0, paths on axis 1):
    Σ_k p_k (tc + s)^k = Σ_j s^j Σ_{k≥j} C(k, j) tc^{k−j} p_k (tc ≤ 0.1: no cancellation
    beyond that of evaluating p at tc)."""
    n = coef.shape[0]
    k = np.arange(n)
    binom = np.array([[comb(int(kk), int(jj)) for kk in k] for jj in k], dtype=float)
    with np.errstate(under="ignore"):
        powers = tc[None, None, :] ** np.maximum(k[None, :, None] - k[:, None, None], 0)
    T = np.where((k[None, :] >= k[:, None])[:, :, None], binom[:, :, None] * powers, 0.0)
    T = T.reshape(T.shape + (1,) * (coef.ndim - 2))
    out = T[:, 0] * coef[0]
    for kk in range(1, n):          # elementwise, in a fixed order: a path's own arithmetic
        out = out + T[:, kk] * coef[kk]
    return out


TAYLOR_RATIO = 0.5      # a step is at most half the distance to the singular point t = 0
TAYLOR_TERMS = 96
TAYLOR_HUMP = 4.0       # Σ|y_k h^k| ≤ TAYLOR_HUMP·|Y|: at most two bits lost to cancellation


def taylor_steps(evaluator: EndPathEvaluator, y0: np.ndarray, t_start: np.ndarray,
                 t_target: np.ndarray, *, tol: float, max_steps: int = 64) -> np.ndarray:
    """Y at t_target from Y = y0 at t_start for the reduced system t·den(t)·Y' = num(t)·Y
    (:class:`EndPathEvaluator`), by Taylor series at regular points (docs/math.md §9,
    "Between t₀ and t₁"): at t_c the coefficients y_k of Y(t_c + s) follow from

        Σ_j A_j (k+1−j) y_{k+1−j} = Σ_j B_j y_{k−j},  A(s) = (t_c+s)·den(t_c+s), B(s) = num(t_c+s),

    and a step h goes at most TAYLOR_RATIO of the way to t = 0, the radius of convergence,
    shorter where the terms would cancel (Σ|y_k h^k| > TAYLOR_HUMP·|Y|: the exponential
    behaviour of large variances); each path stops its own series when three terms in a
    row are below 1e-17 of the largest (its value does not depend on the batch).  The
    rounding of a step, 4ε·max_i Σ_k|y_ik h^k|, is carried on with the growth of |Y|; a
    path whose total exceeds tol·max|y0| (every component matters further on: the gauge
    back to G̃ cancels where Y has grown), or that cannot step within ``max_steps``, is
    NaN (the caller evaluates it otherwise).
    """
    y = np.array(y0, dtype=float, copy=True)
    t = np.array(t_start, dtype=float, copy=True)
    err = np.zeros(t.size)
    paths = np.arange(t.size)
    step_cap = np.full(t.size, TAYLOR_RATIO)          # a path's step, as a fraction of t
    for _ in range(max_steps):
        todo = paths[t != t_target]
        if todo.size == 0:
            break
        tc = t[todo]
        h = np.clip(t_target[todo] - tc, -step_cap[todo] * tc, step_cap[todo] * tc)
        ev = evaluator.subset(np.isin(paths, todo))
        B = _shift_polynomials(ev.num, tc)                         # (nb, P, r, r)
        den = _shift_polynomials(ev.den, tc)                       # (nd, P)
        A = np.concatenate([tc[None] * den, np.zeros((1, tc.size))])
        A[1:] += den                                               # (t_c + s)·den(t_c + s)
        coeffs = [y[todo]]
        total = y[todo].copy()
        size = np.abs(total)
        big = np.max(size, axis=1)
        quiet = np.zeros(todo.size, dtype=int)
        active = np.ones(todo.size, dtype=bool)
        power = np.ones(todo.size)
        for k in range(TAYLOR_TERMS):
            acc = (B[0] @ coeffs[k][:, :, None])[:, :, 0]
            for j in range(1, min(k + 1, B.shape[0])):   # per path, in a fixed order
                acc = acc + (B[j] @ coeffs[k - j][:, :, None])[:, :, 0]
            for j in range(1, min(k + 2, A.shape[0])):
                acc -= (A[j] * (k + 1 - j))[:, None] * coeffs[k + 1 - j]
            coeffs.append(acc / (A[0] * (k + 1))[:, None])
            power = power * h
            term = coeffs[-1] * power[:, None]
            term[~active] = 0.0                       # a path's sum stops with its series
            total += term
            size += np.abs(term)
            big = np.maximum(big, np.max(np.abs(term), axis=1))
            quiet = np.where(np.max(np.abs(term), axis=1) <= 1e-17 * big, quiet + 1, 0)
            active &= quiet < 3
            if not np.any(active):
                break
        good = (~active & np.all(np.isfinite(total), axis=1)
                & (np.max(size, axis=1) <= TAYLOR_HUMP * np.max(np.abs(total), axis=1)))
        grown = np.max(np.abs(total), axis=1) / np.max(np.abs(y[todo]), axis=1)
        err[todo[good]] = (err[todo[good]] * grown[good]
                           + 4 * np.finfo(float).eps * np.max(size[good], axis=1))
        y[todo[good]] = total[good]
        t[todo[good]] = np.where(np.abs(t_target[todo[good]] - tc[good]) <= np.abs(h[good]),
                                 t_target[todo[good]], tc[good] + h[good])
        step_cap[todo[~good]] *= 0.5
    y[(t != t_target) | ~(err <= tol * np.max(np.abs(y0), axis=1))] = np.nan
    return y


def residue_exponents(spectrum: np.ndarray, denominator: int = 12) -> tuple[float, ...]:
    """The distinct exponents of the reduced residue (rationals in [0, 1)), from its
    spectrum at one path, rounded to fractions with small denominators."""
    found = sorted({Fraction(float(x)).limit_denominator(denominator) for x in spectrum})
    return tuple(float(x) for x in found)


def _balance(A: np.ndarray, sweeps: int = 20) -> np.ndarray:
    """Diagonal d (powers of two) with D⁻¹|A|D row and column sums of the off-diagonal
    part about equal (Osborne's balancing, as LAPACK's gebal), per matrix of a stack."""
    A = np.abs(A) * (1.0 - np.eye(A.shape[-1]))
    d = np.ones(A.shape[:2])
    for _ in range(sweeps):
        changed = False
        for i in range(A.shape[-1]):
            B = A / d[:, :, None] * d[:, None, :]
            col, row = np.sum(B[:, :, i], axis=1), np.sum(B[:, i, :], axis=1)
            ok = (col > 0) & (row > 0)
            ratio = np.where(ok, row, 1.0) / np.where(ok, col, 1.0)
            f = np.exp2(np.round(0.5 * np.log2(ratio)))
            changed |= bool(np.any(f != 1.0))
            d[:, i] *= f
        if not changed:
            break
    return d


class FrobeniusSolutions:
    """The local solutions at t = 0 of the reduced system, per path (docs/math.md §9).

    The reduced system t·dY/dt = R(t)·Y (R = num/den, :class:`EndPathEvaluator`) has a
    residue R₀ = R(0) with eigenvalues in [0, 1), so no two differ by a positive
    integer (non-resonant).  Where R₀ is semisimple with the distinct ``exponents`` μ,
    Y = Φ(t)·t^{R₀}·C with Φ = Σ_k Φ_k t^k, Φ₀ = I, and from den·(tΦ' + ΦR₀) = num·Φ
    at order t^k

        den₀ (kΦ_k + Φ_kR₀ − R₀Φ_k) = Σ_{j≥1} num_j Φ_{k−j} − den_j ((k−j)Φ_{k−j} + Φ_{k−j}R₀),

    solved blockwise with the spectral projectors Π_μ = Π_{ν≠μ}(R₀ − ν)/(μ − ν):
    Φ_k = Σ_{α,β} Π_α X Π_β / (k + β − α).  Then
    Y(t) = Φ(t)·Σ_μ (t/t₁)^μ Π_μ·Φ(t₁)⁻¹·Y(t₁) for every 0 < t ≤ t₁: the cost does not
    depend on how small t is.  Φ converges below the nearest other zero of den; its
    partial sums cancel where R is large on |t| ≤ t₁ (large variances), so each path
    gets the largest t₁ ≤ ``t_max`` on a halving ladder where the series has converged
    and Σ_k |Φ_k| t₁^k ≤ HUMP·|Φ(t₁)| (:meth:`reach`).  Y is balanced first by a
    diagonal similarity in powers of two (exact).
    """

    HUMP = 4.0

    def __init__(self, evaluator: EndPathEvaluator, exponents: tuple[float, ...],
                 t_max: float, kmax: int = 64):
        den = evaluator.den
        r = evaluator.r
        eye = np.eye(r)
        num = evaluator.num
        powers = t_max ** np.arange(num.shape[0])[:, None, None, None]
        self.scaling = _balance(np.sum(np.abs(num) * powers, axis=0))
        num = np.ascontiguousarray(
            num / self.scaling[None, :, :, None] * self.scaling[None, :, None, :])
        d0 = den[0][:, None, None]
        R0 = num[0] / d0
        self.exponents = exponents
        proj = []
        for mu in exponents:
            Pm = np.broadcast_to(eye, R0.shape).copy()
            for nu in exponents:
                if nu != mu:
                    Pm = Pm @ ((R0 - nu * eye) / (mu - nu))
            proj.append(Pm)
        self.proj = proj
        resid = R0 - sum(mu * Pm for mu, Pm in zip(exponents, proj, strict=True))
        self.ok = (np.max(np.abs(resid), axis=(1, 2))
                   <= 1e-8 * (1.0 + np.max(np.abs(R0), axis=(1, 2))))
        # Φ_k until every path's terms at t_max are negligible (or kmax): a path keeps
        # the terms up to its own convergence, so its value does not depend on its batch
        phi = [np.broadcast_to(eye, R0.shape).copy()]
        phiR = [R0]                                                   # Φ_m·R₀, once per m
        size = np.ones(R0.shape[0])
        active = np.ones(R0.shape[0], dtype=bool)
        quiet = np.zeros(R0.shape[0], dtype=int)
        self.nterms = np.full(R0.shape[0], kmax)
        for k in range(1, kmax + 1):
            S = np.zeros_like(R0)
            for j in range(1, min(k, num.shape[0] - 1) + 1):
                S += num[j] @ phi[k - j]
            for j in range(1, min(k, den.shape[0] - 1) + 1):
                S -= den[j][:, None, None] * ((k - j) * phi[k - j] + phiR[k - j])
            phi.append(self._sylvester(S / d0, k))
            phiR.append(phi[-1] @ R0)
            term = np.max(np.abs(phi[-1]), axis=(1, 2)) * t_max ** k
            size = np.maximum(size, term)
            quiet = np.where(term <= EPS_FROBENIUS * size, quiet + 1, 0)
            done = active & (quiet >= 3)
            self.nterms[done] = k
            active &= ~done
            if not np.any(active):
                break
        self.phi = np.stack(phi)                                      # (K+1, P, r, r)
        # a path's terms beyond its own number are 0: its sums do not depend on the batch
        self.phi[np.arange(self.phi.shape[0])[:, None] > self.nterms[None, :]] = 0.0
        self.t_max = t_max

    def _sylvester(self, X: np.ndarray, k: int) -> np.ndarray:
        """Φ_k = Σ_{α,β} Π_α X Π_β / (k + β − α), with the last projector I − Σ of the
        others (two exponents, as for every kink: three products, not six)."""
        mus, proj = self.exponents, self.proj
        right = [X @ Pb for Pb in proj[:-1]]
        right.append(X - sum(right))                                  # X Π_last
        out = np.zeros_like(X)
        for beta, XPb in zip(mus, right, strict=True):
            left = [Pa @ XPb for Pa in proj[:-1]]
            left.append(XPb - sum(left))
            for alpha, block in zip(mus, left, strict=True):
                out += block / (k + beta - alpha)
        return out

    def _sum(self, t: np.ndarray, paths: np.ndarray | None = None, hump: bool = False):
        """Φ(t) per path (own number of terms: Φ_k is 0 beyond it), for ``paths`` (all if
        None); with ``hump`` also Σ_k |Φ_k| t^k and the size of the last term."""
        phi = self.phi if paths is None else self.phi[:, paths]
        nterms = self.nterms if paths is None else self.nterms[paths]
        out = phi[0].copy()
        total = np.abs(out) if hump else None
        last = np.zeros(t.size)
        power = np.ones(t.size)
        for k in range(1, phi.shape[0]):
            power = power * t
            term = phi[k] * power[:, None, None]
            out += term
            if hump:
                size = np.abs(term)
                total += size
                last = np.where(k == nterms, np.max(size, axis=(1, 2)), last)
        return (out, total, last) if hump else out

    def reach(self, halvings: int = 12) -> np.ndarray:
        """The largest t₁ = t_max·2^−j (j ≤ halvings) per path where Φ(t₁) is reliable
        (class docstring); NaN where there is none."""
        out = np.full(self.nterms.size, np.nan)
        todo = np.flatnonzero(self.ok)
        for j in range(halvings + 1):
            if todo.size == 0:
                break
            t = np.full(todo.size, self.t_max * 2.0 ** -j)
            total, hump, last = self._sum(t, None if todo.size == out.size else todo, True)
            big = np.max(np.abs(total), axis=(1, 2))
            good = ((np.max(hump, axis=(1, 2)) <= self.HUMP * big)
                    & (last <= 1e-16 * big) & np.all(np.isfinite(total), axis=(1, 2)))
            out[todo[good]] = t[good]
            todo = todo[~good]
        return out

    def weights(self, y1: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """C with Y = Φ(t)·(t/t₁)^{R₀}·C through Y(t₁) = y1 (t₁ from :meth:`reach`; NaN for
        paths it turned down), in the balanced coordinates."""
        at_1 = self._sum(t1)
        bad = ~np.all(np.isfinite(at_1), axis=(1, 2))
        at_1[bad] = np.eye(self.phi.shape[-1])
        c = np.linalg.solve(at_1, (y1 / self.scaling)[:, :, None])
        c[bad] = np.nan
        return c

    def evaluate(self, c: np.ndarray, t1: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Y(t) = Φ(t)·Σ_μ (t/t₁)^μ Π_μ·C for every path (0 < t ≤ t₁), C from :meth:`weights`:
        the cost does not depend on t."""
        if np.any(t <= 0):
            raise SingularityError("path ends on the singular locus |ρ| = 1")
        at_t = self._sum(t)
        power = sum((t / t1)[:, None, None] ** mu * Pm
                    for mu, Pm in zip(self.exponents, self.proj, strict=True))
        return (at_t @ (power @ c))[:, :, 0] * self.scaling

EPS_FROBENIUS = 1e-17
