"""Closed-form dual activations D(a, b, c) = E_{N(0,Λ)}[f(u) f(v)] (docs/math.md §6).

All functions broadcast over arrays a, b, c with Λ = [[a, c], [c, b]] a valid
covariance (checked by the caller).  The angle θ = arccos ρ is computed as
atan2(√(ab − c²), c), which keeps full relative accuracy near |ρ| = 1.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .covariance import correlation


def _angle(a, b, c):
    """(√(ab), θ) with θ = arccos(c/√(ab)) ∈ [0, π], computed stably."""
    cor = correlation(a, b, c)
    return cor.root, cor.theta


@cache
def _arccos_kernel_J(n: int):
    """Cho & Saul's J_n(θ) = (−1)^n sin^{2n+1}θ (1/sinθ ∂θ)^n ((π − θ)/sinθ), as numpy code.

    The expression is built by sympy from the formula (not from user input) and
    simplified so that no division by sin θ remains.
    """
    import sympy as sp  # only here: keeps `import ntkhgm` fast

    t = sp.symbols("t", real=True)
    expr = (sp.pi - t) / sp.sin(t)
    for _ in range(n):
        expr = sp.diff(expr, t) / sp.sin(t)
    expr = sp.simplify(sp.expand_trig((-1) ** n * sp.sin(t) ** (2 * n + 1) * expr))
    expr = sp.expand(sp.cancel(sp.expand(expr)))
    return sp.lambdify(t, expr, modules="numpy")


def rectified_monomial(n: int, a, b, c):
    """E[uⁿY(u) vⁿY(v)] = (ab)^{n/2} J_n(θ) / (2π) (Cho & Saul 2009; docs/math.md §6)."""
    r, th = _angle(a, b, c)
    if n == 0:
        return (np.pi - th) / (2 * np.pi) * np.ones_like(r)
    return r ** n * _arccos_kernel_J(n)(th) / (2 * np.pi)


def relu(a, b, c):
    """Arc-cosine kernel √(ab)/(2π)(√(1−ρ²) + (π − arccos ρ)ρ)."""
    r, th = _angle(a, b, c)
    return r * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)


def step(a, b, c):
    """E[Y(u)Y(v)] = (π − arccos ρ)/(2π)."""
    _, th = _angle(a, b, c)
    return (np.pi - th) / (2 * np.pi)


def erf(a, b, c):
    """E[erf u erf v] = (2/π) arcsin(2c/√((1+2a)(1+2b)))."""
    return 2 / np.pi * np.arcsin(2 * c / np.sqrt((1 + 2 * a) * (1 + 2 * b)))


def erf_derivative(a, b, c):
    """E[σ'σ'] for σ' = (2/√π)e^{−u²}: (4/π)/√((1+2a)(1+2b) − 4c²)."""
    return 4 / np.pi / np.sqrt((1 + 2 * a) * (1 + 2 * b) - 4 * c * c)


def normcdf(a, b, c):
    """E[Φ(u)Φ(v)] = 1/4 + arcsin(c/√((1+a)(1+b)))/(2π)."""
    return 0.25 + np.arcsin(c / np.sqrt((1 + a) * (1 + b))) / (2 * np.pi)


def normcdf_derivative(a, b, c):
    """E[φ(u)φ(v)] = 1/(2π√((1+a)(1+b) − c²))."""
    return 1 / (2 * np.pi * np.sqrt((1 + a) * (1 + b) - c * c))


def sin(a, b, c):
    """E[sin u sin v] = e^{−(a+b)/2} sinh c."""
    return np.exp(-(a + b) / 2) * np.sinh(c)


def cos(a, b, c):
    """E[cos u cos v] = e^{−(a+b)/2} cosh c."""
    return np.exp(-(a + b) / 2) * np.cosh(c)


_BY_NAME = {
    ("relu", False): relu, ("relu", True): step,
    ("erf", False): erf, ("erf", True): erf_derivative,
    ("normcdf", False): normcdf, ("normcdf", True): normcdf_derivative,
    ("sin", False): sin, ("sin", True): cos,
}


def closed_form(name: str, derivative: bool = False):
    """The closed-form dual of σ (or σ') of the named activation, or None."""
    if (name, derivative) in _BY_NAME:
        return _BY_NAME[name, derivative]
    if name.startswith("relu") and name[4:].isdigit():
        n = int(name[4:])
        if derivative:
            return lambda a, b, c: n * n * rectified_monomial(n - 1, a, b, c)
        return lambda a, b, c: rectified_monomial(n, a, b, c)
    return None
