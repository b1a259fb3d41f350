"""Dual activations D_σ(a, b, c) = E_{(u,v)~N(0,Λ)}[σ(u)σ(v)], Λ = [[a, c], [c, b]].

One interface, several methods (a registry, so the HGM evaluator plugs in):

    closed  closed forms (docs/math.md §6), where known
    hgm     holonomic gradient method (series + Pfaffian ODE, docs/math.md §4, §5, §8)
    quad    nested Gauss–Legendre quadrature split at the kink; slow, the reference
    gh      Gauss–Hermite tensor rule (docs/math.md §7), neural-tangents' method
    auto    the most accurate fast method available: closed, then hgm, then quad
            for small inputs or gh (with a warning) for large ones

Covariances are validated: a, b ≥ 0 and c² ≤ ab.  Where |c| exceeds √(ab) by a
relative amount of at most :data:`CLAMP_RTOL` (rounding in an earlier layer) it
is clamped to ±√(ab); beyond that it is rejected with the offending Λ.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .activations import Activation, get_activation
from .errors import InvalidCovarianceError, MethodUnavailableError, UnknownActivationError
from .numeric import closed_forms
from .numeric.gauss_hermite import gauss_hermite_dual
from .numeric.quadrature import expect_2d, expect_pair_1d

CLAMP_RTOL = 1e-9
QUAD_AUTO_MAX_POINTS = 2000


class AccuracyWarning(UserWarning):
    """A method was chosen whose error can be far above machine precision."""


@dataclass(frozen=True)
class DualMethod:
    """A way to evaluate dual activations: data plus two small functions."""

    name: str
    description: str
    available: Callable[[Activation, bool], bool]
    evaluate: Callable[..., np.ndarray]  # (act, a, b, c, derivative, **options) -> array


METHODS: dict[str, DualMethod] = {}


def register_method(method: DualMethod) -> DualMethod:
    METHODS[method.name] = method
    return method


def as_activation(activation: str | Activation) -> Activation:
    """A catalog activation, or a user activation made by ``ntkhgm pfaffian --name``."""
    if isinstance(activation, Activation):
        return activation
    try:
        return get_activation(activation)
    except UnknownActivationError:
        user = _user_activation(activation)
        if user is None:
            raise
        return user


def _user_activation(name: str) -> Activation | None:
    """Rebuild a user activation from its cached Pfaffians' σ expressions (or None)."""
    from .algebra.cache import load_pfaffian

    sigma = load_pfaffian(name, False)
    if sigma is None or sigma.function() is None:
        return None
    dsigma = load_pfaffian(name, True)
    dfun = dsigma.function() if dsigma is not None else None

    def missing(u):
        raise MethodUnavailableError(
            f"{name}: no σ' expression; create it with `ntkhgm pfaffian --name {name} "
            "--derivative-annihilator ... --dsigma ...`")

    return Activation(
        name=name, formula=sigma.expression, sigma=sigma.function(),
        dsigma=dfun if dfun is not None else missing,
        annihilator=sigma.annihilator,
        derivative_annihilator=dsigma.annihilator if dsigma is not None else None,
        kink_at_zero=True)


def validate_covariance(a, b, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcast a, b, c to float64 arrays and check Λ (clamping within CLAMP_RTOL)."""
    a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (a, b, c)))
    a, b, c = a.copy(), b.copy(), c.copy()
    finite = np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    bad = ~finite | (a < 0) | (b < 0)
    root = np.sqrt(np.where(bad, 0.0, a * b))
    excess = np.abs(c) - root
    bad |= excess > CLAMP_RTOL * root
    if np.any(bad):
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape) if a.ndim else ()
        raise InvalidCovarianceError(
            f"not a covariance matrix: Λ = [[{float(a[i])!r}, {float(c[i])!r}], "
            f"[{float(c[i])!r}, {float(b[i])!r}]] "
            f"(need a, b ≥ 0 finite and c² ≤ ab within relative {CLAMP_RTOL:g})")
    over = excess > 0
    c[over] = np.sign(c[over]) * root[over]
    return a, b, c


def _closed_available(act: Activation, derivative: bool) -> bool:
    return closed_forms.closed_form(act.name, derivative) is not None


def _closed(act, a, b, c, derivative, **options):
    return closed_forms.closed_form(act.name, derivative)(a, b, c)


def _gh(act, a, b, c, derivative, degree: int = 25, **options):
    return gauss_hermite_dual(act.function(derivative), a, b, c, degree=degree)


def _quad(act, a, b, c, derivative, rtol: float = 1e-11, **options):
    f = act.function(derivative)
    return expect_2d(f, f, a, b, c, rtol=rtol)


def _pfaffian(act: Activation, derivative: bool):
    """The cached or shipped Pfaffian system of σ (or σ'), None if there is none."""
    if not act.holonomic:
        return None
    from .algebra.cache import load_pfaffian

    return load_pfaffian(act.name, derivative)


_HGM_EVALUATORS: dict = {}


def _hgm(act, a, b, c, derivative, tol: float | None = None, **options):
    from .numeric.hgm import DEFAULT_TOL, HGMEvaluator, check_finite

    system = _pfaffian(act, derivative)
    if system is None:
        raise MethodUnavailableError(f"no Pfaffian system for {act.name}")
    tol = DEFAULT_TOL if tol is None else float(tol)
    key = (act.name, derivative, tol, id(system))
    if key not in _HGM_EVALUATORS:
        _HGM_EVALUATORS[key] = HGMEvaluator(act.function(derivative), system, tol=tol)
    return check_finite(_HGM_EVALUATORS[key](a, b, c), a, b, c)


register_method(DualMethod("closed", "closed form (docs/math.md §6)", _closed_available, _closed))
register_method(DualMethod("hgm", "holonomic gradient method (series + Pfaffian ODE)",
                           lambda act, d: _pfaffian(act, d) is not None, _hgm))
register_method(DualMethod("quad", "nested Gauss–Legendre quadrature split at the kink",
                           lambda act, d: True, _quad))
register_method(DualMethod("gh", "Gauss–Hermite tensor rule (docs/math.md §7)",
                           lambda act, d: True, _gh))


def available_methods(activation: str | Activation, derivative: bool = False) -> list[str]:
    """The methods that can evaluate this activation's dual, most accurate first."""
    act = as_activation(activation)
    order = ["closed", "hgm", "quad", "gh"]
    names = [m for m in order if m in METHODS] + [m for m in METHODS if m not in order]
    return [m for m in names if METHODS[m].available(act, derivative)]


def resolve_method(activation: str | Activation, derivative: bool = False,
                   method: str = "auto", npoints: int = 1) -> str:
    """Turn ``auto`` into a concrete method name; check an explicit one is available."""
    act = as_activation(activation)
    if method != "auto":
        if method not in METHODS:
            raise MethodUnavailableError(
                f"unknown method {method!r}; choose from auto, {', '.join(METHODS)}")
        if not METHODS[method].available(act, derivative):
            what = "σ'" if derivative else "σ"
            raise MethodUnavailableError(
                f"method {method!r} is not available for {act.name} ({what})"
                + ("; compute its Pfaffian with `ntkhgm pfaffian`" if method == "hgm" else ""))
        return method
    methods = available_methods(act, derivative)
    for name in ("closed", "hgm"):
        if name in methods:
            return name
    if npoints <= QUAD_AUTO_MAX_POINTS:
        return "quad"
    warnings.warn(
        f"{act.name}: no closed form or Pfaffian available; using Gauss–Hermite "
        "quadrature, whose error can be 1e-3 for kinked activations",
        AccuracyWarning, stacklevel=3)
    return "gh"


def dual(activation: str | Activation, a, b, c, *, derivative: bool = False,
         method: str = "auto", **options) -> np.ndarray:
    """E_{N(0,Λ)}[σ(u)σ(v)] (or σ' with ``derivative``), broadcast over a, b, c."""
    act = as_activation(activation)
    a, b, c = validate_covariance(a, b, c)
    name = resolve_method(act, derivative, method, npoints=a.size)
    zero = (a == 0) | (b == 0)
    if not np.any(zero):
        return np.asarray(METHODS[name].evaluate(act, a, b, c, derivative, **options),
                          dtype=float)
    # a zero variance (a zero input row) means u ≡ 0: D = f(0)·E f(√b z), the same
    # convention for every method (closed forms would take the ρ → 0 limit instead)
    f = act.function(derivative)
    out = np.empty(a.shape)
    out[zero] = expect_pair_1d(f, f, np.sqrt(a[zero]), np.sqrt(b[zero]))
    keep = ~zero
    if np.any(keep):
        out[keep] = METHODS[name].evaluate(act, a[keep], b[keep], c[keep], derivative, **options)
    return out


def second_moment(activation: str | Activation, a, *, derivative: bool = False,
                  method: str = "auto", **options) -> np.ndarray:
    """E_{z~N(0,a)}[σ(z)²]: the dual on the diagonal (a = b = c), a 1-D integral."""
    a = np.asarray(a, dtype=float)
    return dual(activation, a, a, a, derivative=derivative, method=method, **options)


def c_sigma(activation: str | Activation) -> float:
    """cσ = 1 / E_{z~N(0,1)}[σ(z)²] (docs/math.md §1), from the most accurate method."""
    act = as_activation(activation)
    method = "closed" if _closed_available(act, False) else "quad"
    return float(1.0 / second_moment(act, 1.0, method=method))
