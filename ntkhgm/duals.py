"""Dual activations D_σ(a, b, c) = E_{(u,v)~N(0,Λ)}[σ(u)σ(v)], Λ = [[a, c], [c, b]].

One interface, several methods (a registry, so the HGM evaluator plugs in):

    closed       closed forms (docs/math.md §6), where known
    series       the Mehler series with per-variance Hermite coefficients (docs/math.md §8);
                 fails with a typed error where |ρ| is too close to 1 for 2048 terms
    hgm          the holonomic gradient method: the Pfaffian system integrated along
                 paths from its initial values, up to the diagonal (docs/math.md §4, §5, §9)
    series+hgm   by region: the series where it converges within 256 terms, Pfaffian
                 paths beyond (what ``auto`` picks when there is no closed form)
    quad         nested Gauss–Legendre quadrature split at the kink; slow, the reference
    gh           Gauss–Hermite tensor rule (docs/math.md §7), neural-tangents' method
    auto         the most accurate fast method available: closed, then series+hgm,
                 then quad for small inputs or gh (with a warning) for large ones

Covariances are validated: a, b ≥ 0 and c² ≤ ab.  Where |c| exceeds √(ab) by a
relative amount of at most :data:`CLAMP_RTOL` (rounding in an earlier layer) it
is clamped to ±√(ab); beyond that it is rejected with the offending Λ.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .activations import Activation, get_activation
from .errors import (
    InvalidCovarianceError,
    MethodUnavailableError,
    NumericalError,
    UnknownActivationError,
)
from .numeric import closed_forms
from .numeric.covariance import sqrt_product
from .numeric.gauss_hermite import gauss_hermite_dual
from .numeric.quadrature import expect_2d, expect_pair_1d

CLAMP_RTOL = 1e-9
QUAD_AUTO_MAX_POINTS = 2000
MAX_NUMERIC_VARIANCE = 1e4
"""Largest variance for the node-based methods hgm and quad and for the 1-D integral
of a zero-variance pair (issue 13; their nodes grow with √a).  Measured on six
pairs with |ρ| up to 0.999 (σ'): gelu hgm peaks at 0.7 GB at a = 1e2, 1.4 GB at 1e3,
1.9 GB at 1e4, and its 1e8 table would need 3.8 GiB; resin's near-diagonal pairs
need the reference quadrature, which stops converging (typed error) from a ≈ 1e3."""


class AccuracyWarning(UserWarning):
    """A method was chosen whose error can be far above machine precision."""


@dataclass(frozen=True)
class DualMethod:
    """A way to evaluate dual activations: data plus two small functions."""

    name: str
    description: str
    available: Callable[[Activation, bool], bool]
    evaluate: Callable[..., np.ndarray]  # (act, a, b, c, derivative, **options) -> array
    max_variance: float = math.inf
    """Largest a, b the method handles (its rules resolve σ(√a z) with ∝ √a nodes)."""


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
    # not √(ab): a·b under- or overflows for rows with |x| ≲ 1e-81 or ≳ 1e77 (issue 13)
    root = sqrt_product(np.where(bad, 0.0, a), np.where(bad, 0.0, b))
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
    """The cached or shipped Pfaffian system of σ (or σ'), None if there is none.

    Checked against σ's own moments before first use (checks.verified_pfaffian).
    """
    if not act.holonomic:
        return None
    from .algebra.cache import load_pfaffian
    from .checks import verified_pfaffian

    return verified_pfaffian(load_pfaffian(act.name, derivative), act.function(derivative))


def _hgm_available(act: Activation, derivative: bool) -> bool:
    # a file exists; it is loaded and validated only when hgm is used, so that a
    # corrupt file cannot break methods that do not need it (closed forms)
    from .algebra.cache import has_pfaffian

    return act.holonomic and has_pfaffian(act.name, derivative)


_HOLONOMIC_EVALUATORS: dict = {}
_LAST_EVALUATOR: dict = {}      # (activation, derivative, mode) -> the evaluator used last


def _pfaffian_identity(act: Activation, derivative: bool) -> tuple | None:
    """(path, size, mtime, inode) of the Pfaffian file the loader would read, None if
    there is none: the key of the evaluators, so that a changed file makes a new
    evaluator, which reads and checks it again (a stat per call, no read)."""
    if not act.holonomic:
        return None
    from .algebra.cache import pfaffian_path
    from .errors import InputError

    try:
        path = pfaffian_path(act.name, derivative)
        st = path.stat()
    except (OSError, InputError):
        return None
    return str(path), st.st_size, st.st_mtime_ns, st.st_ino


def _holonomic(mode: str):
    """The evaluate function of the series / hgm / series+hgm methods (numeric/hgm.py).

    The Pfaffian system is loaded and verified (hash, integrability, σ's moments:
    :func:`_pfaffian`) by the evaluator on first need.  ``hgm`` needs it for every
    call, so it is loaded before any value is computed; ``series+hgm`` (``auto``) only
    when a pair goes to a Pfaffian path, so a call served by the series never reads
    the file — and a damaged file is then no error for it: its values do not depend
    on the file.  A call that needs the system raises PfaffianFileError as before.
    """

    def evaluate(act, a, b, c, derivative, tol: float | None = None, **options):
        """``a`` may be a :class:`~ntkhgm.numeric.hgm.Pairs` (then b, c are ignored)."""
        from .numeric.hgm import DEFAULT_TOL, HGMEvaluator, Pairs, check_finite

        ident = None
        if mode != "series":
            ident = _pfaffian_identity(act, derivative)
            if ident is None:
                raise MethodUnavailableError(f"no Pfaffian system for {act.name}")
        tol = DEFAULT_TOL if tol is None else float(tol)
        key = (act.name, derivative, tol, mode, ident)
        ev = _HOLONOMIC_EVALUATORS.get(key)
        if ev is None:
            # an evaluator of an older version of the file is dropped with it
            for old in [k for k in _HOLONOMIC_EVALUATORS if k[:4] == key[:4]]:
                del _HOLONOMIC_EVALUATORS[old]
            ev = _HOLONOMIC_EVALUATORS[key] = HGMEvaluator(
                act.function(derivative), None, tol=tol, mode=mode,
                annihilator=act.annihilator_of(derivative),
                loader=None if mode == "series" else lambda: _pfaffian(act, derivative),
                rectified=act.rectified_of(derivative),
                precision=act.precision_of(derivative))
        if mode == "hgm":
            _ = ev.system   # every pair may take a path: load and verify first
        _LAST_EVALUATOR[act.name, derivative, mode] = ev
        if isinstance(a, Pairs):
            return check_finite(ev(a), a.a, a.b, a.c).reshape(a.shape)
        return check_finite(ev(a, b, c), a, b, c)

    return evaluate


register_method(DualMethod("closed", "closed form (docs/math.md §6)", _closed_available, _closed))
register_method(DualMethod("series", "Mehler series (docs/math.md §8), up to 2048 terms",
                           lambda act, d: True, _holonomic("series"), MAX_NUMERIC_VARIANCE))
register_method(DualMethod("hgm", "holonomic gradient method: Pfaffian paths (docs/math.md §4, §9)",
                           _hgm_available, _holonomic("hgm"), MAX_NUMERIC_VARIANCE))
register_method(DualMethod("series+hgm", "Mehler series, Pfaffian paths near |ρ| = 1",
                           _hgm_available, _holonomic("auto"), MAX_NUMERIC_VARIANCE))
register_method(DualMethod("quad", "nested Gauss–Legendre quadrature split at the kink",
                           lambda act, d: True, _quad, MAX_NUMERIC_VARIANCE))
register_method(DualMethod("gh", "Gauss–Hermite tensor rule (docs/math.md §7)",
                           lambda act, d: True, _gh))


def regions(activation: str | Activation, a, b, c, *, derivative: bool = False,
            method: str = "auto") -> dict[str, int]:
    """How the series / hgm / series+hgm methods split (a, b, c) into regions (counts), {}
    for other methods: what ``auto`` did, for ``ntkhgm dual``."""
    act = as_activation(activation)
    name = resolve_method(act, derivative, method, npoints=np.size(a))
    if name not in ("series", "hgm", "series+hgm"):
        return {}
    dual(act, a, b, c, derivative=derivative, method=name)
    mode = "auto" if name == "series+hgm" else name
    return {k: v for k, v in _LAST_EVALUATOR[act.name, derivative, mode].regions.items() if v}


def available_methods(activation: str | Activation, derivative: bool = False) -> list[str]:
    """The methods that can evaluate this activation's dual, most accurate first."""
    act = as_activation(activation)
    order = ["closed", "series+hgm", "hgm", "series", "quad", "gh"]
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
                + ("; compute its Pfaffian with `ntkhgm pfaffian`"
                   if method in ("hgm", "series+hgm") else ""))
        return method
    methods = available_methods(act, derivative)
    for name in ("closed", "series+hgm"):
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
    # D(a, b, c) = D(b, a, c): evaluate with a ≤ b, so that a pair's value does not depend
    # on its orientation (K(x, y) and K(y, x) agree bit for bit, whatever the tiling)
    a, b = np.minimum(a, b), np.maximum(a, b)
    name = resolve_method(act, derivative, method, npoints=a.size)
    zero = (a == 0) | (b == 0)
    _check_range(act, name, a, b, c, ~zero, METHODS[name].max_variance)
    if not np.any(zero):
        return _finite(np.asarray(METHODS[name].evaluate(act, a, b, c, derivative, **options),
                                  dtype=float), act, name, a, b, c)
    # a zero variance (a zero input row) means u ≡ 0: D = f(0)·E f(√b z), the same
    # convention for every method (closed forms would take the ρ → 0 limit instead)
    f = act.function(derivative)
    out = np.empty(a.shape)
    if float(np.asarray(f(np.zeros(1)))[0]) == 0.0:
        out[zero] = 0.0                                  # f(0) = 0: exactly zero
    else:
        _check_range(act, "the 1-D integral of a zero row", a, b, c, zero,
                     MAX_NUMERIC_VARIANCE)
        out[zero] = expect_pair_1d(f, f, np.sqrt(a[zero]), np.sqrt(b[zero]))
    keep = ~zero
    if np.any(keep):
        out[keep] = METHODS[name].evaluate(act, a[keep], b[keep], c[keep], derivative, **options)
    return _finite(out, act, name, a, b, c)


def forget_rows() -> None:
    """Drop the Hermite coefficients the evaluators keep between a kernel's rows' pass and
    its pairs (:meth:`~ntkhgm.numeric.hgm.HGMEvaluator.coefficients`): called when a kernel
    is done, so that they hold no memory after it and a repeated kernel is not served from
    them."""
    for ev in _HOLONOMIC_EVALUATORS.values():
        ev.forget_rows()


_PAIRS_METHODS = ("series", "hgm", "series+hgm")
"""Methods whose evaluate takes a :class:`~ntkhgm.numeric.hgm.Pairs` for (a, b, c)."""


def dual_pairs(activation: str | Activation, a, b, c, which, *, checked: bool = False,
               root=None, index=None, **options) -> list[np.ndarray]:
    """``[dual(activation, a, b, c, derivative=d, method=m, **options) for d, m in which]``,
    value for value, with the work that does not depend on the function done once: the
    checks of Λ, the orientation a ≤ b, and for the series and Pfaffian methods the
    correlation coordinates, √a, √b and the distinct variances (one
    :class:`~ntkhgm.numeric.hgm.Pairs` for all).  What a kernel's layer calls for σ and σ'.

    ``checked``: the caller guarantees a, b ≥ 0 finite, c finite and |c| ≤ ``root`` =
    :func:`~ntkhgm.numeric.covariance.sqrt_product` (a, b) exactly (a kernel clips c so),
    where :func:`validate_covariance` would change nothing; it is skipped.  ``index``: a
    function returning (vals, ia, ib), vals sorted and distinct with √a = vals[ia],
    √b = vals[ib], called only if the distinct variances are needed.
    """
    act = as_activation(activation)
    if checked:
        a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (a, b, c)))
    else:
        a, b, c = validate_covariance(a, b, c)
        root = index = None
    a, b = np.minimum(a, b), np.maximum(a, b)
    if index is not None:           # vals sorted: the smaller index is the smaller variance
        unoriented = index

        def index():
            vals, ia, ib = unoriented()
            return vals, np.minimum(ia, ib), np.maximum(ia, ib)
    names = [resolve_method(act, d, m, npoints=a.size) for d, m in which]
    if np.any(a == 0):              # a zero row (a ≤ b): dual's own convention
        return [dual(act, a, b, c, derivative=d, method=name, **options)
                for (d, _), name in zip(which, names, strict=True)]
    pairs = None
    out = []
    for (d, _), name in zip(which, names, strict=True):
        _check_range(act, name, a, b, c, True, METHODS[name].max_variance)
        if name in _PAIRS_METHODS:
            if pairs is None:
                from .numeric.hgm import Pairs

                pairs = Pairs(a, b, c, root=root, index=index)
            values = METHODS[name].evaluate(act, pairs, None, None, d, **options)
        else:
            values = METHODS[name].evaluate(act, a, b, c, d, **options)
        out.append(_finite(np.asarray(values, dtype=float), act, name, a, b, c))
    return out


def _finite(values: np.ndarray, act: Activation, method: str, a, b, c) -> np.ndarray:
    """``values``, or NumericalError naming the first Λ whose value is not finite."""
    bad = ~np.isfinite(values)
    if np.any(bad):
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape) if bad.ndim else ()
        ai, bi, ci = (np.broadcast_to(x, bad.shape)[i] for x in (a, b, c))
        raise NumericalError(f"{act.name}: method {method} gave a non-finite value "
                             f"({float(values[i])!r}) beyond the double range",
                             float(ai), float(bi), float(ci))
    return values


def _check_range(act: Activation, method: str, a, b, c, where, limit: float) -> None:
    """NumericalError naming the first Λ whose variance is beyond ``limit``."""
    if limit == math.inf:
        return
    over = where & ((a > limit) | (b > limit))
    if np.any(over):
        i = np.unravel_index(int(np.flatnonzero(over)[0]), a.shape) if a.ndim else ()
        raise NumericalError(
            f"{act.name}: variance beyond the range of {method} (a, b ≤ {limit:g}; its "
            "nodes must resolve σ(√a z)); rescale the inputs or use method gh",
            float(a[i]), float(b[i]), float(c[i]))


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
