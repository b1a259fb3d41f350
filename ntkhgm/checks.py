"""Numeric checks of Pfaffian systems against independent moments (docs/math.md §2, §4, §5, §8).

For a standard monomial s = ∂11^i ∂12^j ∂22^k,

    s•Ê(x) = 2^j · (π/√det x) · E_Λ[u^{2i+j} f(u) · v^{2k+j} f(v)],   Λ = −½ x⁻¹,

because ∂11, ∂12, ∂22 bring down u², 2uv, v² under the integral.  The derivative
∂m(s•Ê) = (∂m s)•Ê is again such a moment, so ∂m F = Pm F is checked with no
finite differences: both sides come from :func:`ntkhgm.numeric.quadrature.expect_2d`
(:func:`check_pfaffian_numeric`, seconds per system: ``ntkhgm pfaffian --check``) or
from the Mehler series of the moments at small |ρ| (:func:`cross_check_system`,
milliseconds: run on every system before its first use, see :func:`verified_pfaffian`).

Why a numeric check on load: a gauge transformation F ↦ g·F (e.g. g = x11^(1/100))
turns a valid system into P + (∂g/g)·I, which is still integrable and can carry a
recomputed hash; only the moments themselves — computed from σ, independently of
the file — tell the two apart.  At ρ = 0 the moments factorise into the exact 1-D
moments of the initial-value recipe (docs/math.md §5), so a gauge with ∂g ≠ 0 on
x12 = 0 fails there; the points with ρ ≠ 0 catch the others.
This module sits above both layers (``algebra`` must not import ``numeric``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .algebra.pfaffian import MATRIX_KEYS, PfaffianSystem, compile_matrices
from .errors import PfaffianFileError
from .numeric.quadrature import _half_line_rule, expect_2d, rule_width

__all__ = ["monomial_values", "mehler_monomial_values", "random_points",
           "check_pfaffian_numeric", "cross_check_system", "verified_pfaffian"]

Mono = tuple[int, int, int]


def random_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n negative-definite x = −½Λ⁻¹ from covariances with a, b ∈ [0.5, 2], |ρ| ≤ 0.7."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, n)
    b = rng.uniform(0.5, 2.0, n)
    rho = rng.uniform(-0.7, 0.7, n)
    c = rho * np.sqrt(a * b)
    det = a * b - c * c
    # x = −½ Λ⁻¹, Λ⁻¹ = [[b, −c], [−c, a]] / det
    return -0.5 * b / det, 0.5 * c / det, -0.5 * a / det


def monomial_values(f: Callable[[np.ndarray], np.ndarray], monos: list[Mono],
                    x11, x12, x22) -> dict[Mono, np.ndarray]:
    """s•Ê(x) for each s in ``monos`` by quadrature (module docstring; docs/math.md §5)."""
    x11, x12, x22 = (np.asarray(v, dtype=float) for v in (x11, x12, x22))
    det = x11 * x22 - x12 * x12
    if np.any(det <= 0) or np.any(x11 >= 0):
        raise ValueError("x must be negative definite")
    # Λ = −½ x⁻¹
    a, b, c = -0.5 * x22 / det, -0.5 * x11 / det, 0.5 * x12 / det
    scale = np.pi / np.sqrt(det)
    out = {}
    for (i, j, k) in monos:
        p, q = 2 * i + j, 2 * k + j

        def fu(u, p=p):
            return u ** p * f(u)

        def gv(v, q=q):
            return v ** q * f(v)

        out[(i, j, k)] = (2.0 ** j) * scale * expect_2d(fu, gv, a, b, c)
    return out


MEHLER_TERMS = 48


def mehler_monomial_values(f: Callable[[np.ndarray], np.ndarray], monos: list[Mono],
                           x11, x12, x22, *, terms: int = MEHLER_TERMS,
                           bounds: dict[Mono, np.ndarray] | None = None
                           ) -> dict[Mono, np.ndarray]:
    """s•Ê(x) for each s in ``monos`` from the Mehler series (docs/math.md §5, §8).

    With u = √a z1, v = √b z2, corr(z1, z2) = ρ and hₙ = Heₙ/√n! (orthonormal),
    E[g(z1) h(z2)] = Σₙ ρⁿ E[g hₙ] E[h hₙ]; the 1-D coefficients come from the
    composite Gauss–Legendre rule of :mod:`ntkhgm.numeric.quadrature`.  Meant for
    |ρ| ≤ 0.3, where ``terms`` = 48 leaves a truncation below 0.3⁴⁸ ≈ 1e-25.
    ``bounds``, when given, receives the Cauchy–Schwarz bound of each moment (the
    scale of its rounding error where the moment itself vanishes, e.g. odd σ at ρ = 0).
    """
    x11, x12, x22 = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x11, x12, x22))
    det = x11 * x22 - x12 * x12
    if np.any(det <= 0) or np.any(x11 >= 0):
        raise ValueError("x must be negative definite")
    a, b, c = -0.5 * x22 / det, -0.5 * x11 / det, 0.5 * x12 / det
    sa, sb = np.sqrt(a), np.sqrt(b)
    rho = c / (sa * sb)
    scale = np.pi / np.sqrt(det)
    z, w = _half_line_rule(float(rule_width(max(sa.max(), sb.max()))), 16)
    h = np.empty((terms, z.size))
    h[0] = 1.0
    if terms > 1:
        h[1] = z
    for n in range(1, terms - 1):
        h[n + 1] = (z * h[n] - np.sqrt(n) * h[n - 1]) / np.sqrt(n + 1)
    pmax = max(max(2 * i + j, 2 * k + j) for i, j, k in monos)
    powers = rho[:, None] ** np.arange(terms)                       # (npts, terms)

    def coefficients(s):                                            # (npts, pmax+1, terms)
        u = s[:, None] * z                                           # (npts, nodes)
        with np.errstate(all="ignore"):
            fu = f(u) * w
        up = u[:, None, :] ** np.arange(pmax + 1)[None, :, None]     # (npts, p, nodes)
        return np.einsum("xpq,xq,nq->xpn", up, fu, h)

    A, B = coefficients(sa), coefficients(sb)
    out = {}
    for (i, j, k) in monos:
        p, q = 2 * i + j, 2 * k + j
        out[(i, j, k)] = (2.0 ** j) * scale * np.einsum("xn,xn,xn->x", A[:, p], B[:, q], powers)
        if bounds is not None:
            # Cauchy–Schwarz: |E[g(u) h(v)]| ≤ ‖g‖‖h‖ (Parseval on the same coefficients)
            bounds[(i, j, k)] = (2.0 ** j) * scale * np.sqrt(
                np.sum(A[:, p] ** 2, axis=-1) * np.sum(B[:, q] ** 2, axis=-1))
    return out


def _defect(system: PfaffianSystem, values: Callable[..., dict], f, x11, x12, x22) -> float:
    """Worst relative error of ∂m F = Pm F at the points, moments from ``values``."""
    std = list(system.std_monomials)
    need = set(std)
    for s in std:
        for m in range(3):
            t = list(s)
            t[m] += 1
            need.add(tuple(t))
    bounds: dict = {}
    if values is mehler_monomial_values:
        vals = values(f, sorted(need), x11, x12, x22, bounds=bounds)
    else:
        vals = values(f, sorted(need), x11, x12, x22)
    F = np.stack([vals[s] for s in std], axis=-1)            # (npts, r)
    with np.errstate(all="ignore"):
        mats = compile_matrices(system)(x11, x12, x22)
    worst = 0.0
    for m, key in enumerate(MATRIX_KEYS):
        shifted = [tuple(s[i] + (i == m) for i in range(3)) for s in std]
        lhs = np.stack([vals[t] for t in shifted], axis=-1)
        floor = np.stack([bounds[t] for t in shifted], axis=-1) if bounds else 0.0
        P = mats[key]
        with np.errstate(all="ignore"):
            terms = P * F[:, None, :]
            rhs = terms.sum(-1)
            scale = np.abs(lhs) + np.abs(terms).sum(-1) + 1e-3 * floor
            scale = np.where(scale > 0, scale, 1.0)
            err = np.abs(lhs - rhs) / scale
        # NaN (overflow, a pole at the point, a non-finite σ) fails: max() must not drop it
        if not np.all(np.isfinite(err)):
            return float("inf")
        worst = max(worst, float(np.max(err)))
    return worst


def check_pfaffian_numeric(system: PfaffianSystem,
                           f: Callable[[np.ndarray], np.ndarray] | None = None, *,
                           n_points: int = 3, seed: int = 0, rtol: float = 1e-9,
                           raise_on_failure: bool = True) -> float:
    """Check ∂m F = Pm F at random points (docs/math.md §4); return the worst relative error.

    ``f`` defaults to the catalog's σ (or σ' for a derivative system).  The error of
    each component is relative to |lhs| + Σ|P F| (the scale of the cancellation); a
    non-finite error counts as infinite (a failure).
    """
    f = _default_function(system) if f is None else f
    x11, x12, x22 = random_points(n_points, seed)
    worst = _defect(system, monomial_values, f, x11, x12, x22)
    if raise_on_failure and not worst <= rtol:
        raise PfaffianFileError(
            f"{system.key}: the Pfaffian system disagrees with quadrature "
            f"(relative error {worst:.2e} > {rtol:.0e})")
    return worst


def _default_function(system: PfaffianSystem):
    f = system.function()
    if f is None:
        from .activations import get_activation

        f = get_activation(system.activation).function(system.derivative)
    return f


# (a, b, ρ) of the cross-check points: ρ = 0 is the initial-value recipe itself
CROSS_CHECK_POINTS = ((0.7, 1.3, 0.0), (1.2, 0.8, 0.3), (0.9, 1.1, -0.25))
CROSS_CHECK_RTOL = 1e-10
"""Shipped systems agree to 1e-14; a gauge x11^(1/100) is off by ~1e-2."""


def cross_check_system(system: PfaffianSystem,
                       f: Callable[[np.ndarray], np.ndarray] | None = None, *,
                       rtol: float = CROSS_CHECK_RTOL, source: str | None = None) -> float:
    """Check the system against σ's own moments (Mehler series) at three points.

    Raises PfaffianFileError (naming ``source``) when ∂m F = Pm F fails by more
    than ``rtol`` relative; returns the worst relative error.  Cost: milliseconds.
    """
    f = _default_function(system) if f is None else f
    a, b, rho = (np.array(v) for v in zip(*CROSS_CHECK_POINTS, strict=True))
    c = rho * np.sqrt(a * b)
    det = a * b - c * c
    x11, x12, x22 = -0.5 * b / det, 0.5 * c / det, -0.5 * a / det
    worst = _defect(system, mehler_monomial_values, f, x11, x12, x22)
    if not worst <= rtol:
        raise PfaffianFileError(
            f"{source or system.key}: the Pfaffian system does not match the moments of "
            f"{system.key} (relative error {worst:.1e} > {rtol:.0e}): file tampered with "
            "or derived for another function")
    return worst


_VERIFIED: dict[int, PfaffianSystem] = {}


def verified_pfaffian(system: PfaffianSystem | None,
                      f: Callable[[np.ndarray], np.ndarray]) -> PfaffianSystem | None:
    """``system`` after :func:`cross_check_system` against ``f`` (once per loaded object)."""
    if system is None:
        return None
    if _VERIFIED.get(id(system)) is not system:
        cross_check_system(system, f)
        _VERIFIED[id(system)] = system
    return system
