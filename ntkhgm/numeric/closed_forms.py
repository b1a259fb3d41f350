"""Closed-form dual activations D(a, b, c) = E_{N(0,Λ)}[f(u) f(v)] (docs/math.md §6).

All functions broadcast over arrays a, b, c with Λ = [[a, c], [c, b]] a valid
covariance (checked by the caller).  The angle θ = arccos ρ is computed as
atan2(√(ab − c²), c), which keeps full relative accuracy near |ρ| = 1.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .covariance import correlation, sqrt_product


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
    return r * ((np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi))


def step(a, b, c):
    """E[Y(u)Y(v)] = (π − arccos ρ)/(2π)."""
    _, th = _angle(a, b, c)
    return (np.pi - th) / (2 * np.pi)


# The forms below avoid products of variances (1 + 2a)(1 + 2b), which overflow for
# a, b ≳ 1e154, and e^{−(a+b)/2}·sinh c, which is 0·inf for large a, b, c (issue 13).

def _hyp_root(a, b, shift):
    """√((a + shift)(b + shift)) without forming the product."""
    return sqrt_product(a + shift, b + shift)


def erf(a, b, c):
    """E[erf u erf v] = (2/π) arcsin(2c/√((1+2a)(1+2b)))."""
    return 2 / np.pi * np.arcsin(c / _hyp_root(a, b, 0.5))


def _sqrt_shifted_det(a, b, c, shift):
    """√((a+s)(b+s) − c²) = √((ab − c²) + s(a+b) + s²), overflow-free.

    ab − c² comes as (g − |c|)(g + |c|) with g = √(ab) (exact where c² = ab);
    everything is divided by t = max(g, 1) before the square root and √t is
    multiplied back, so nothing overflows for a, b up to the double range.
    """
    g = sqrt_product(a, b)
    t = np.maximum(g, 1.0)
    cc = np.minimum(np.abs(c), g)
    scaled = (np.maximum(g - cc, 0.0) * (g / t + cc / t) + shift * (a / t) + shift * (b / t)
              + shift * shift / t)
    return np.sqrt(t) * np.sqrt(scaled)


def erf_derivative(a, b, c):
    """E[σ'σ'] for σ' = (2/√π)e^{−u²}: (4/π)/√((1+2a)(1+2b) − 4c²)."""
    return 2 / np.pi / _sqrt_shifted_det(a, b, c, 0.5)


def normcdf(a, b, c):
    """E[Φ(u)Φ(v)] = 1/4 + arcsin(c/√((1+a)(1+b)))/(2π)."""
    return 0.25 + np.arcsin(c / _hyp_root(a, b, 1.0)) / (2 * np.pi)


def normcdf_derivative(a, b, c):
    """E[φ(u)φ(v)] = 1/(2π√((1+a)(1+b) − c²))."""
    return 1 / (2 * np.pi) / _sqrt_shifted_det(a, b, c, 1.0)


def _gelu_parts(a, b, c):
    """(r, Δ) of the GELU forms: r = c/√((1+a)(1+b)), Δ = √((1+a)(1+b) − c²)."""
    return c / _hyp_root(a, b, 1.0), _sqrt_shifted_det(a, b, c, 1.0)


def gelu(a, b, c):
    """E[uΦ(u) vΦ(v)] = c(1/4 + arcsin r/(2π)) + (ab − c² + r²(a + b + 2))/(2πΔ)
    (docs/math.md §6: Φ(u) = P(X ≤ u), an orthant moment of (u, v, u − X, v − Y)).
    ab − c² is formed as (g − |c|)(g + |c|), g = √(ab), each factor divided by √Δ."""
    r, det = _gelu_parts(a, b, c)
    g = sqrt_product(a, b)
    cc = np.minimum(np.abs(c), g)
    root = np.sqrt(det)
    rest = ((g - cc) / root) * ((g + cc) / root) + r * r * ((a + b + 2) / det)
    return c * (0.25 + np.arcsin(r) / (2 * np.pi)) + rest / (2 * np.pi)


def gelu_derivative(a, b, c):
    """E[σ'(u)σ'(v)], σ' = Φ(u) + uφ(u): 1/4 + arcsin r/(2π)
    + c/(2πΔ)·(1/(1+a) + 1/(1+b) + 1/Δ²) (docs/math.md §6; = ∂/∂c of :func:`gelu`)."""
    r, det = _gelu_parts(a, b, c)
    return (0.25 + np.arcsin(r) / (2 * np.pi)
            + c / (2 * np.pi * det) * (1 / (1 + a) + 1 / (1 + b) + (1 / det) ** 2))


def _hyperbolic(a, b, c, sign: float):
    """e^{−m}(e^c + sign·e^{−c})/2 with m = (a+b)/2 ≥ |c|: the product form where it is
    finite (it keeps the relative accuracy of sinh near c = 0), else the exponent form."""
    m = 0.5 * a + 0.5 * b
    with np.errstate(over="ignore", invalid="ignore"):
        direct = np.exp(-m) * (np.sinh(c) if sign < 0 else np.cosh(c))
        shifted = 0.5 * (np.exp(c - m) + sign * np.exp(-c - m))
    return np.where(m <= 700.0, direct, shifted)


def sin(a, b, c):
    """E[sin u sin v] = e^{−(a+b)/2} sinh c."""
    return _hyperbolic(a, b, c, -1.0)


def cos(a, b, c):
    """E[cos u cos v] = e^{−(a+b)/2} cosh c."""
    return _hyperbolic(a, b, c, 1.0)


_BY_NAME = {
    ("relu", False): relu, ("relu", True): step,
    ("erf", False): erf, ("erf", True): erf_derivative,
    ("normcdf", False): normcdf, ("normcdf", True): normcdf_derivative,
    ("sin", False): sin, ("sin", True): cos,
    ("gelu", False): gelu, ("gelu", True): gelu_derivative,
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
