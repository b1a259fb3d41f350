"""Numeric verification of Pfaffian systems against 2-D quadrature (docs/math.md §2, §4, §5).

For a standard monomial s = ∂11^i ∂12^j ∂22^k,

    s•Ê(x) = 2^j · (π/√det x) · E_Λ[u^{2i+j} f(u) · v^{2k+j} f(v)],   Λ = −½ x⁻¹,

because ∂11, ∂12, ∂22 bring down u², 2uv, v² under the integral.  The derivative
∂m(s•Ê) = (∂m s)•Ê is again such a moment, so ∂m F = Pm F is checked with no
finite differences: both sides come from :func:`ntkhgm.numeric.quadrature.expect_2d`.
This module sits above both layers (``algebra`` must not import ``numeric``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .algebra.pfaffian import MATRIX_KEYS, PfaffianSystem, compile_matrices
from .errors import PfaffianFileError
from .numeric.quadrature import expect_2d

__all__ = ["monomial_values", "random_points", "check_pfaffian_numeric"]

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


def check_pfaffian_numeric(system: PfaffianSystem,
                           f: Callable[[np.ndarray], np.ndarray] | None = None, *,
                           n_points: int = 3, seed: int = 0, rtol: float = 1e-9,
                           raise_on_failure: bool = True) -> float:
    """Check ∂m F = Pm F at random points (docs/math.md §4); return the worst relative error.

    ``f`` defaults to the catalog's σ (or σ' for a derivative system).  The error of
    each component is relative to |lhs| + Σ|P F| (the scale of the cancellation).
    """
    if f is None:
        f = system.function()
    if f is None:
        from .activations import get_activation

        f = get_activation(system.activation).function(system.derivative)
    x11, x12, x22 = random_points(n_points, seed)
    std = list(system.std_monomials)
    need = set(std)
    for s in std:
        for m in range(3):
            t = list(s)
            t[m] += 1
            need.add(tuple(t))
    vals = monomial_values(f, sorted(need), x11, x12, x22)
    F = np.stack([vals[s] for s in std], axis=-1)            # (npts, r)
    mats = compile_matrices(system)(x11, x12, x22)
    worst = 0.0
    for m, key in enumerate(MATRIX_KEYS):
        lhs = np.stack([vals[tuple(s[i] + (i == m) for i in range(3))] for s in std], axis=-1)
        P = mats[key]
        terms = P * F[:, None, :]
        rhs = terms.sum(-1)
        scale = np.abs(lhs) + np.abs(terms).sum(-1)
        scale = np.where(scale > 0, scale, 1.0)
        err = float(np.max(np.abs(lhs - rhs) / scale))
        worst = max(worst, err)
    if raise_on_failure and not worst <= rtol:
        raise PfaffianFileError(
            f"{system.key}: the Pfaffian system disagrees with quadrature "
            f"(relative error {worst:.2e} > {rtol:.0e})")
    return worst
