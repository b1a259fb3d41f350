"""The activation catalog (docs/math.md §3).

Each :class:`Activation` carries vectorised σ and σ', the annihilators of σ and
σ' as text in ``u`` and ``du`` (the grammar of :mod:`ntkhgm.algebra.annihilator`),
and whether it is holonomic.  This layer is pure data: closed-form dual
activations live in :mod:`ntkhgm.numeric.closed_forms`, keyed by name.  Every
catalog activation is smooth except possibly at u = 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..errors import UnknownActivationError

Array = np.ndarray

_SQRT_2PI = np.sqrt(2.0 * np.pi)


# how the Hermite recurrence of an annihilator runs (docs/math.md §10): the dtype's name and
# the √a up to which float64 is used where that dtype is long double.  The catalog declares
# what the per-process measurement (numeric.hermite_series.checked_recurrence) finds, and
# tests/test_hermite_recurrence.py measures it again; None: measured in each process.
Precision = tuple[str, float]
F64: Precision = ("float64", 0.0)


@dataclass(frozen=True)
class Rectified:
    """The entire g of σ = Y(u)·g(u) (docs/math.md §9b): vectorised g, an annihilator of g
    (text, as above), and (K ↦ g's Taylor coefficients g_0 … g_K)."""

    g: Callable[[Array], Array]
    annihilator: str
    taylor: Callable[[int], Array]
    precision: Precision | None = None


@dataclass(frozen=True)
class Activation:
    """One activation σ: vectorised σ and σ', annihilators of σ and σ'.

    ``annihilator`` and ``derivative_annihilator`` are operators in u, du that
    kill σ and σ' as distributions (None: not holonomic).
    """

    name: str
    formula: str
    sigma: Callable[[Array], Array]
    dsigma: Callable[[Array], Array]
    annihilator: str | None
    derivative_annihilator: str | None
    kink_at_zero: bool = False
    # σ = Y(u)·g(u) and σ' = Y(u)·g'(u) with g entire (ReSin, ReLU^n): (g, g'), None
    # otherwise (docs/math.md §9b)
    rectified: tuple[Rectified, Rectified] | None = None
    # the recurrences' precision for σ and σ' (see Precision above)
    recurrence_precision: tuple[Precision | None, Precision | None] = (None, None)

    @property
    def holonomic(self) -> bool:
        return self.annihilator is not None

    def function(self, derivative: bool = False) -> Callable[[Array], Array]:
        return self.dsigma if derivative else self.sigma

    def annihilator_of(self, derivative: bool = False) -> str | None:
        return self.derivative_annihilator if derivative else self.annihilator

    def precision_of(self, derivative: bool = False) -> Precision | None:
        return self.recurrence_precision[int(derivative)]

    def rectified_of(self, derivative: bool = False) -> Rectified | None:
        return None if self.rectified is None else self.rectified[int(derivative)]


def _monomial(n: int, factor: float = 1.0) -> Rectified:
    """g = factor·uⁿ (ReLU^n: σ = uⁿ·Y(u), σ' = n·u^{n−1}·Y(u))."""
    def taylor(K: int) -> Array:
        g = np.zeros(K + 1)
        g[n] = factor
        return g
    return Rectified(g=lambda u: factor * np.asarray(u, dtype=float) ** n,
                     annihilator=f"u*du-{n}" if n else "du", taylor=taylor, precision=F64)


def _trig_taylor(parity: int) -> Callable[[int], Array]:
    """±1/m! on the m of one parity: sin (odd), cos (even)."""
    def taylor(K: int) -> Array:
        m = np.arange(K + 1)
        sign = np.where((m // 2) % 2 == 0, 1.0, -1.0)
        with np.errstate(under="ignore"):
            coef = sign * np.exp(-special.gammaln(m + 1))
        return np.where(m % 2 == parity, coef, 0.0)
    return taylor


_RESIN_PARTS = (Rectified(np.sin, "du^2+1", _trig_taylor(1), F64),
                Rectified(np.cos, "du^2+1", _trig_taylor(0), F64))


def _on_positive(g: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """u ↦ Y(u)·g(u), g evaluated only where u > 0 (half the nodes of a symmetric rule)."""
    def f(u: Array) -> Array:
        u = np.asarray(u, dtype=float)
        out = np.zeros(u.shape)
        pos = u > 0
        if isinstance(g, np.ufunc):
            g(u, out=out, where=pos)        # no gather and scatter of the positive half
        else:
            out[pos] = g(u[pos])
        return out
    return f


def _heaviside(u: Array) -> Array:
    return (np.asarray(u) > 0).astype(float)


def _relu_n(n: int) -> Activation:
    def sigma(u):
        u = np.asarray(u, dtype=float)
        return np.where(u > 0, u, 0.0) ** n

    def dsigma(u):
        u = np.asarray(u, dtype=float)
        return n * np.where(u > 0, u, 0.0) ** (n - 1)

    return Activation(
        name=f"relu{n}", formula=f"u^{n}·Y(u)", sigma=sigma, dsigma=dsigma,
        annihilator=f"u*du-{n}", derivative_annihilator=f"u*du-{n - 1}",
        kink_at_zero=True, rectified=(_monomial(n), _monomial(n - 1, float(n))),
        recurrence_precision=(F64, F64),
    )


def _gelu(u):
    u = np.asarray(u, dtype=float)
    return u * special.ndtr(u)


def _dgelu(u):
    u = np.asarray(u, dtype=float)
    return special.ndtr(u) + u * np.exp(-0.5 * u * u) / _SQRT_2PI


_CATALOG: dict[str, Activation] = {}


def register(act: Activation) -> Activation:
    """Add an activation to the catalog (user activations never do: their names are free)."""
    _CATALOG[act.name] = act
    return act


register(Activation(
    name="relu", formula="u·Y(u)",
    sigma=lambda u: np.maximum(np.asarray(u, dtype=float), 0.0), dsigma=_heaviside,
    annihilator="u*du-1", derivative_annihilator="u*du",
    kink_at_zero=True, rectified=(_monomial(1), _monomial(0)),
    recurrence_precision=(F64, F64),
))
register(Activation(
    name="resin", formula="Y(u)·sin u",
    sigma=_on_positive(np.sin), dsigma=_on_positive(np.cos),
    annihilator="u*(du^2+1)", derivative_annihilator="u^2*(du^2+1)",
    kink_at_zero=True, rectified=_RESIN_PARTS,
    recurrence_precision=(F64, ("longdouble", 0.1)),
))
register(Activation(
    name="gelu", formula="u·Φ(u)", sigma=_gelu, dsigma=_dgelu,
    annihilator="u^2*du^2+(u^2-2)*u*du+(2-u^2)",
    derivative_annihilator="(2-u^2)*du^2-(u^3-4*u)*du",
    recurrence_precision=(("longdouble", 4.0), ("longdouble", 2.0)),
))
register(Activation(
    name="erf", formula="erf(u)", sigma=lambda u: special.erf(u),
    dsigma=lambda u: 2 / np.sqrt(np.pi) * np.exp(-np.square(u)),
    annihilator="du^2+2*u*du", derivative_annihilator="du+2*u",
    recurrence_precision=(F64, F64),
))
register(Activation(
    name="normcdf", formula="Φ(u) = (1 + erf(u/√2))/2", sigma=lambda u: special.ndtr(u),
    dsigma=lambda u: np.exp(-0.5 * np.square(u)) / _SQRT_2PI,
    annihilator="du^2+u*du", derivative_annihilator="du+u",
    recurrence_precision=(F64, F64),
))
register(Activation(
    name="sin", formula="sin u", sigma=np.sin, dsigma=np.cos,
    annihilator="du^2+1", derivative_annihilator="du^2+1",
    recurrence_precision=(F64, F64),
))
register(Activation(
    name="sigmoid", formula="1/(1 + e^{−u})  (not holonomic)",
    sigma=lambda u: special.expit(u),
    dsigma=lambda u: special.expit(u) * special.expit(-np.asarray(u, dtype=float)),
    annihilator=None, derivative_annihilator=None,
))
for _n in (2, 3):
    register(_relu_n(_n))

_RELU_N = re.compile(r"relu([2-9])")
#: a valid activation name (a Pfaffian file's stem and ``activation`` field)
ACTIVATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def get_activation(name: str) -> Activation:
    """Look an activation up by name (``relu4`` … ``relu9`` are made on demand)."""
    key = name.strip().lower()
    if key in _CATALOG:
        return _CATALOG[key]
    m = _RELU_N.fullmatch(key)
    if m:
        return register(_relu_n(int(m.group(1))))
    known = ", ".join(sorted(_CATALOG))
    raise UnknownActivationError(f"unknown activation {name!r}; known: {known}")


def is_catalog_name(name: str) -> bool:
    """True for a catalog name (``relu2`` … ``relu9`` included): reserved for the catalog,
    whose systems are the shipped ones, never a user's."""
    key = name.strip().lower()
    return key in _CATALOG or _RELU_N.fullmatch(key) is not None


def list_activations() -> list[Activation]:
    return [_CATALOG[k] for k in sorted(_CATALOG)]
