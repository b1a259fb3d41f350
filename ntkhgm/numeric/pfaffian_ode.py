"""The Pfaffian system restricted to paths of fixed variances (docs/math.md §2, §4).

With a = sa², b = sb² fixed and c = sa·sb·ρ, the Pfaffian ∂ij F = Pij F in
x = −½Λ⁻¹ becomes one linear ODE in ρ for the normalised moments

    G̃_s = 2^j E_Λ[u^p f(u) v^q f(v)] / (sa^p sb^q),   s = ∂11^i ∂12^j ∂22^k,
    p = 2i + j,  q = 2k + j,   so that G̃_1 = D_f(a, b, c),

namely dG̃/dρ = B(sa, sb, ρ) G̃ with B = S⁻¹(Σ (∂x_ij/∂ρ) P_ij(x(ρ)) + ρ/(1−ρ²)) S,
S = diag(sa^p sb^q) (G = F·√det x/π = F/(2π√δ), δ = ab − c²).  The symbolic
substitution is done once (sympy) so that no cancellation of large x entries
happens in floating point: B's common denominator is κ(1−ρ)^m₁(1+ρ)^m₂·Q̃, and
1 ∓ ρ are evaluated from θ = arccos ρ as 2 sin²(θ/2), 2 cos²(θ/2).

Paths run in θ from π/2 (c = 0, where the initial values factorise,
docs/math.md §5) to the target, with π/2 − θ geometric in the distance to the
singular end θ ∈ {0, π}: in that parameter the system's pole at ρ = ±1 turns
into bounded coefficients, so every path costs the same, however close |ρ| is
to 1.

That holds where the pole at ρ = ±1 is simple (a Fuchsian, regular singular
point: ReLU, rectified monomials, erf, normcdf, sin).  ReSin's system has a
double pole there (:attr:`RhoSystem.fuchsian` is False): the singular point is
irregular, with modes like e^{c/(1−ρ²)}, and neither explicit nor implicit
(Radau IIA) integration towards it reached 1e-13 in our measurements; the HGM
evaluator sends such paths elsewhere (see :mod:`.hgm`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import sympy as sp

from ..errors import SingularityError
from . import batched_rk

_SA, _SB, _RHO = sp.symbols("sa sb rho", positive=True)
_X = sp.symbols("x11 x12 x22")


def _to_sympy(poly: dict) -> sp.Expr:
    x11, x12, x22 = _X
    return sp.Add(*[sp.Rational(cf.numerator, cf.denominator) * x11 ** e[0] * x12 ** e[1]
                    * x22 ** e[2] for e, cf in poly.items()])


def _poly_terms(expr: sp.Expr) -> list[tuple[int, int, int, Fraction]]:
    """(e_sa, e_sb, e_rho, coefficient) of a polynomial in sa, sb, ρ."""
    poly = sp.Poly(sp.expand(expr), _SA, _SB, _RHO)
    return [(int(m[0]), int(m[1]), int(m[2]), Fraction(int(c.p), int(c.q)))
            for m, c in poly.terms()]


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
        """Substitute x = −½Λ⁻¹(sa, sb, ρ) into the Pfaffian matrices (sympy, exact)."""
        x11, x12, x22 = _X
        a, b = _SA ** 2, _SB ** 2
        c = _SA * _SB * _RHO
        delta = a * b - c * c
        xs = {x11: -b / (2 * delta), x12: c / (2 * delta), x22: -a / (2 * delta)}
        r = len(system.std_monomials)
        A = sp.zeros(r, r)
        for name, var in zip(("x11", "x12", "x22"), _X, strict=True):
            M = sp.Matrix(r, r, lambda i, j, name=name: _to_sympy(system.matrices[name][i][j].num)
                          / _to_sympy(system.matrices[name][i][j].den))
            A += sp.diff(xs[var], _RHO) * M.subs(xs, simultaneous=True)
        A += sp.eye(r) * (_RHO / (1 - _RHO ** 2))
        p = [2 * i + j for i, j, k in system.std_monomials]
        q = [2 * k + j for i, j, k in system.std_monomials]
        B = sp.zeros(r, r)
        for i in range(r):
            for j in range(r):
                B[i, j] = sp.cancel(A[i, j] * _SA ** (p[j] - p[i]) * _SB ** (q[j] - q[i]))
        nums, dens = zip(*(sp.fraction(sp.together(B[i, j])) for i in range(r) for j in range(r)),
                           strict=True)
        common = sp.Integer(1)
        for d in dens:
            common = sp.lcm(common, d)
        kappa, factors = sp.factor_list(common, _SA, _SB, _RHO)
        m1 = m2 = 0
        rest = sp.Integer(1)
        for fac, mult in factors:
            if sp.expand(fac - (_RHO - 1)) == 0 or sp.expand(fac + (_RHO - 1)) == 0:
                sign = 1 if sp.expand(fac - (_RHO - 1)) == 0 else -1
                kappa *= (-sign) ** mult   # write as (1 − ρ)
                m1 += mult
            elif sp.expand(fac - (_RHO + 1)) == 0:
                m2 += mult
            else:
                rest *= fac ** mult
        numerators = tuple(
            tuple(tuple(_poly_terms(sp.cancel(nums[i * r + j] * common / dens[i * r + j])))
                  for j in range(r)) for i in range(r))
        return cls(rank=r, p=tuple(p), q=tuple(q), numerators=numerators,
                   kappa=Fraction(int(sp.Rational(kappa).p), int(sp.Rational(kappa).q)),
                   m1=m1, m2=m2, rest=tuple(_poly_terms(rest)))

    @property
    def fuchsian(self) -> bool:
        """True where the poles at ρ = ±1 are simple (paths may approach them)."""
        return self.m1 <= 1 and self.m2 <= 1

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

    def matrix(self, theta: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """dG̃/dθ = −sin θ · B(cos θ) for the paths idx, shape (len(idx), r, r)."""
        rho = np.cos(theta)
        num = self.coeffs[-1, idx]
        for k in range(self.coeffs.shape[0] - 2, -1, -1):
            num = num * rho[:, None, None] + self.coeffs[k, idx]
        rest = self.rest[-1, idx]
        for k in range(self.rest.shape[0] - 2, -1, -1):
            rest = rest * rho + self.rest[k, idx]
        half = 0.5 * theta
        den = (self.kappa * (2.0 * np.sin(half) ** 2) ** self.m1
               * (2.0 * np.cos(half) ** 2) ** self.m2 * rest)
        return num * (-np.sin(theta) / den)[:, None, None]


def integrate_paths(evaluator: PathEvaluator, g0: np.ndarray, theta_target: np.ndarray, *,
                    tol: float = 1e-13, scale: np.ndarray | None = None,
                    theta_start: np.ndarray | None = None) -> np.ndarray:
    """G̃ at θ_target for every path, from G̃ = g0 at θ_start (default π/2: c = 0).

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
    return batched_rk.integrate(rhs, g0, tol=tol, scale=scale)


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



def pole_order_at_diagonal(system, sa: float = 1.1, sb: float = 0.9) -> int:
    """Order of the pole of the ρ-direction system at ρ = ±1 (the larger), numerically.

    Evaluates Σ (∂x_ij/∂ρ) P_ij(x(ρ)) at 1 ∓ ρ = 1e-6 and 1e-8 in 120-digit
    arithmetic (mpmath: no cancellation) and reads the order off the growth.
    Cheap next to the exact transformation, which for large systems (gelu')
    takes minutes and is needed only where paths may approach |ρ| = 1.
    """
    import mpmath as mp

    with mp.workdps(120):
        a, b = mp.mpf(sa) ** 2, mp.mpf(sb) ** 2

        def value(poly, x):
            return mp.fsum(mp.mpf(cf.numerator) / cf.denominator
                           * x[0] ** e[0] * x[1] ** e[1] * x[2] ** e[2]
                           for e, cf in poly.items())

        def size(rho):
            delta = a * b * (1 - rho * rho)
            x = (-b / (2 * delta), mp.mpf(sa) * sb * rho / (2 * delta), -a / (2 * delta))
            dx = (-a * b * b * rho / delta ** 2,
                  mp.mpf(sa) * sb * (delta + 2 * a * b * rho * rho) / (2 * delta ** 2),
                  -a * a * b * rho / delta ** 2)
            r = len(system.std_monomials)
            return max(abs(mp.fsum(d * value(system.matrices[k][i][j].num, x)
                                   / value(system.matrices[k][i][j].den, x)
                                   for d, k in zip(dx, ("x11", "x12", "x22"), strict=True)))
                       for i in range(r) for j in range(r))

        order = 0
        for end in (1, -1):
            e1, e2 = mp.mpf("1e-6"), mp.mpf("1e-8")
            g1, g2 = size(end * (1 - e1)), size(end * (1 - e2))
            if g1 > 0 and g2 > 0:
                order = max(order, int(mp.nint(mp.log(g2 / g1) / mp.log(e1 / e2))))
        return order
