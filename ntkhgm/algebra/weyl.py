"""The rational Weyl algebra R = Q(x11,x12,x22)⟨∂11,∂12,∂22⟩ (docs/math.md §4).

Operators are dicts ``{(i, j, k): c}`` for Σ c(x)·∂11^i ∂12^j ∂22^k with the
rational-function coefficients on the left (sympy ``FracField`` elements, exact).

From a Gröbner basis of the restriction ideal (computed by a CAS under a term
order that compares the ∂-monomials first, so that it is also a Gröbner basis of
the extended ideal in R) this module derives the standard monomials and the
Pfaffian matrices ∂m F = Pm F, F = (s1•Ê, …, sr•Ê)ᵀ, by normal forms with the
Leibniz rule ∂m·c = c·∂m + (∂c/∂xm).

The ∂-order is degree reverse lexicographic with ∂11 > ∂22 > ∂12, so that for
ReLU the basis is (1, ∂12) as in docs/math.md §4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

from sympy import QQ
from sympy.polys.fields import FracElement, field

from ..errors import BackendError

XVARS = ("x11", "x12", "x22")
DVARS = ("dx11", "dx12", "dx22")
Mono = tuple[int, int, int]

_K, _X11, _X12, _X22 = field(",".join(XVARS), QQ)
FIELD = _K
GENS = (_X11, _X12, _X22)

Op = dict[Mono, FracElement]


def dkey(m: Mono) -> tuple[int, int, int]:
    """Sort key of the ∂-order (larger key = larger monomial): dp with ∂11 > ∂22 > ∂12."""
    return (m[0] + m[1] + m[2], -m[1], -m[2])


def leading(op: Op) -> Mono:
    return max(op, key=dkey)


def from_sparse(poly: dict[tuple[int, ...], int | Fraction]) -> Op:
    """Convert a sparse polynomial in (x11,x12,x22,dx11,dx12,dx22) (x's left) into an Op."""
    out: dict[Mono, dict[Mono, Fraction]] = {}
    for mono, c in poly.items():
        if len(mono) != 6:
            raise BackendError("internal: expected 6 exponents")
        xm, dm = tuple(mono[:3]), tuple(mono[3:])
        out.setdefault(dm, {})[xm] = Fraction(c)
    res: Op = {}
    for dm, coeffs in out.items():
        c = _K.ring.from_dict({xm: QQ(v.numerator, v.denominator) for xm, v in coeffs.items()})
        if c:
            res[dm] = _K(c)
    return res


def apply_d(op: Op, m: int) -> Op:
    """∂_m · op, with ∂_m·c(x) = c·∂_m + ∂c/∂x_m (m = 0, 1, 2 for x11, x12, x22)."""
    gen = GENS[m]
    out: Op = {}
    for mono, c in op.items():
        shifted = list(mono)
        shifted[m] += 1
        _acc(out, tuple(shifted), c)
        dc = c.diff(gen)
        if dc:
            _acc(out, mono, dc)
    return out


def _acc(out: Op, mono, c) -> None:
    s = out.get(mono)
    s = c if s is None else s + c
    if s:
        out[mono] = s
    else:
        out.pop(mono, None)


def _divides(a: Mono, b: Mono) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a[2] <= b[2]


def standard_monomials(leads: Iterable[Mono], max_rank: int = 200) -> list[Mono]:
    """∂-monomials divisible by no leading monomial, ascending in the ∂-order (1 first)."""
    leads = list(leads)
    if not leads:
        raise BackendError("empty Gröbner basis: the ideal is zero, not holonomic")
    if (0, 0, 0) in leads:
        raise BackendError("the ideal is the whole ring (1 is in it): no Pfaffian system")
    for axis in range(3):
        if not any(all(m[i] == 0 for i in range(3) if i != axis) for m in leads):
            raise BackendError("the restriction ideal is not zero-dimensional in the rational "
                               "Weyl algebra (infinite holonomic rank)")
    found: set[Mono] = set()
    frontier = [(0, 0, 0)]
    while frontier:
        m = frontier.pop()
        if m in found or any(_divides(g, m) for g in leads):
            continue
        found.add(m)
        if len(found) > max_rank:
            raise BackendError(f"holonomic rank above {max_rank}")
        for i in range(3):
            n = list(m)
            n[i] += 1
            frontier.append(tuple(n))
    return sorted(found, key=dkey)


class Reducer:
    """Normal forms modulo a Gröbner basis of a left ideal in R (docs/math.md §4)."""

    def __init__(self, basis: Sequence[Op], progress: Callable[[str], None] | None = None):
        gs = []
        for g in basis:
            if not g:
                continue
            lm = leading(g)
            lc = g[lm]
            gs.append((lm, {m: c / lc for m, c in g.items()}))
        # keep only basis elements whose leading monomial is minimal (the others reduce away)
        gs.sort(key=lambda t: (dkey(t[0]), len(t[1])))
        self.basis = gs
        self.leads = [lm for lm, _ in gs]
        self._shift_cache: dict[tuple[int, Mono], Op] = {}

    def _shifted(self, gi: int, gamma: Mono) -> Op:
        """∂^gamma · g_gi (monic g), cached; built one ∂ at a time."""
        key = (gi, gamma)
        hit = self._shift_cache.get(key)
        if hit is not None:
            return hit
        if gamma == (0, 0, 0):
            res = self.basis[gi][1]
        else:
            m = next(i for i in range(3) if gamma[i] > 0)
            prev = list(gamma)
            prev[m] -= 1
            res = apply_d(self._shifted(gi, tuple(prev)), m)
        self._shift_cache[key] = res
        return res

    def normal_form(self, op: Op) -> Op:
        """Fully reduced normal form: only standard monomials remain."""
        f = dict(op)
        done: Op = {}
        while f:
            lm = leading(f)
            c = f.pop(lm)
            for gi, g_lm in enumerate(self.leads):
                if _divides(g_lm, lm):
                    gamma = (lm[0] - g_lm[0], lm[1] - g_lm[1], lm[2] - g_lm[2])
                    h = self._shifted(gi, gamma)
                    for m, hc in h.items():
                        if m != lm:
                            _acc(f, m, -c * hc)
                    break
            else:
                done[lm] = c
        return done


def pfaffian_from_basis(basis: Sequence[Op]) -> tuple[list[Mono], dict[str, list[list]]]:
    """Standard monomials and Pfaffian matrices {"x11": P11, …} as fractions (docs/math.md §4)."""
    red = Reducer(basis)
    std = standard_monomials(red.leads)
    index = {m: i for i, m in enumerate(std)}
    mats: dict[str, list[list]] = {}
    zero = _K(0)
    for axis, name in enumerate(XVARS):
        rows = []
        for s in std:
            t = list(s)
            t[axis] += 1
            nf = red.normal_form({tuple(t): _K(1)})
            row = [zero] * len(std)
            for m, c in nf.items():
                if m not in index:  # pragma: no cover - guarded by standard_monomials
                    raise BackendError("internal: normal form left a non-standard monomial")
                row[index[m]] = c
            rows.append(row)
        mats[name] = rows
    return std, mats


def frac_to_pair(c: FracElement) -> tuple[dict[Mono, Fraction], dict[Mono, Fraction]]:
    """A FracElement as (num, den) with a primitive integer denominator, positive leading coeff."""
    num = {tuple(m): Fraction(int(v.numerator), int(v.denominator)) for m, v in c.numer.terms()}
    den = {tuple(m): Fraction(int(v.numerator), int(v.denominator)) for m, v in c.denom.terms()}
    return normalize_pair(num, den)


def normalize_pair(num, den):
    """Scale (num, den) so den has coprime integer coefficients and a positive leading one."""
    from math import gcd, lcm

    if not num:
        return {}, {(0, 0, 0): Fraction(1)}
    dl = 1
    for v in den.values():
        dl = lcm(dl, v.denominator)
    g = 0
    for v in den.values():
        g = gcd(g, (v * dl).numerator)
    lead = max(den, key=lambda m: (sum(m), m))
    scale = Fraction(dl, g)
    if den[lead] < 0:
        scale = -scale
    return ({m: v * scale for m, v in num.items()}, {m: v * scale for m, v in den.items()})
