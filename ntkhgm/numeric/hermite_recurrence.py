"""Hermite coefficients from the annihilator: a recurrence in n (docs/math.md §10).

With g(z) = f(s z), s = √a, and c_n = E[g(z) He_n(z)], multiplication by u = s z
and differentiation ∂u = ∂z / s act on the coefficient sequence as the shift
operators

    (M c)_n = c_{n+1} + n c_{n−1}   (z·),      (S c)_n = c_{n+1}   (∂z·),

so an annihilator Σ κ_ab u^a ∂u^b of f (a distribution identity) gives, after
multiplying by s^B (B the order), Σ_j P_j(n, s) c_{n+j} = 0 for every n ≥ 0:
one recurrence, with coefficients polynomial in n and s, for all variances.  It
is run forward on the normalised h_n = c_n/√(n!) from the first n0(s) + J
coefficients, which come from quadrature; n0 ≈ a lies past the hump of the
entire-function branch s^n/√(n!), beyond which no solution of the recurrence
grows, so rounding stays at the level of the ℓ² norm (§10).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

from ..algebra.annihilator import Annihilator, parse_annihilator

# a sequence operator: {(shift j, power of s): coefficients of a polynomial in n, low first}
S_STEP = 0.25
S_GRID = 2.0 ** np.arange(-8.0, 8.0 + S_STEP / 2, S_STEP)   # s = √a from 0.004 to 256
N_GRID = 2 ** np.arange(2, 13)                                # 4 … 4096

SeqOp = dict[tuple[int, int], list[Fraction]]


def _poly_add(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * max(len(p), len(q))
    for i, x in enumerate(p):
        out[i] += x
    for i, x in enumerate(q):
        out[i] += x
    while out and out[-1] == 0:
        out.pop()
    return out


def _poly_mul(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    if not p or not q:
        return []
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, x in enumerate(p):
        for j, y in enumerate(q):
            out[i + j] += x * y
    return out


def _poly_shift(p: list[Fraction], j: int) -> list[Fraction]:
    """p(n + j)."""
    out: list[Fraction] = []
    for k, x in enumerate(reversed(p)):  # Horner in (n + j)
        out = _poly_add(_poly_mul(out, [Fraction(j), Fraction(1)]), [x]) if k else [x]
    return out


def _compose(A: SeqOp, B: SeqOp) -> SeqOp:
    """(A∘B)c = A(Bc): Σ_j A_j(n) Σ_k B_k(n + j) c_{n+j+k}."""
    out: SeqOp = {}
    for (j, sa), pa in A.items():
        for (k, sb), pb in B.items():
            key = (j + k, sa + sb)
            out[key] = _poly_add(out.get(key, []), _poly_mul(pa, _poly_shift(pb, j)))
    return {k: v for k, v in out.items() if v}


_M: SeqOp = {(1, 0): [Fraction(1)], (-1, 0): [Fraction(0), Fraction(1)]}
_S: SeqOp = {(1, 0): [Fraction(1)]}


@dataclass(frozen=True, eq=False)
class HermiteRecurrence:
    """Σ_{j=lo}^{hi} P_j(n, s) c_{n+j} = 0 (n ≥ 0), P_j = Σ_{i,k} coef[j−lo, i, k] sⁱ nᵏ."""

    lo: int
    hi: int
    coef: np.ndarray   # (hi − lo + 1, degree in s + 1, degree in n + 1), rationals as floats

    @classmethod
    def from_annihilator(cls, ann: Annihilator | str) -> HermiteRecurrence | None:
        """The recurrence of docs/math.md §10; None where its leading coefficient P_hi(n, s)
        can vanish for n ≥ 0, s > 0 (then a forward run cannot be trusted: quadrature)."""
        if isinstance(ann, str):
            ann = parse_annihilator(ann)
        order = ann.order
        total: SeqOp = {}
        for a, b, kappa in ann.terms:
            op: SeqOp = {(0, a - b + order): [Fraction(kappa)]}
            for _ in range(b):
                op = _compose(op, _S)
            for _ in range(a):
                op = _compose(_M, op)
            for key, p in op.items():
                total[key] = _poly_add(total.get(key, []), p)
        total = {k: v for k, v in total.items() if v}
        if not total:
            return None
        lo, hi = min(j for j, _ in total), max(j for j, _ in total)
        ds = max(i for _, i in total)
        dn = max(len(p) for p in total.values()) - 1
        coef = np.zeros((hi - lo + 1, ds + 1, dn + 1))
        for (j, i), p in total.items():
            coef[j - lo, i, : len(p)] = [float(x) for x in p]
        lead = coef[-1]
        nonzero = lead[lead != 0]
        if nonzero.size == 0 or not (np.all(nonzero > 0) or np.all(nonzero < 0)):
            return None
        return cls(lo, hi, coef)

    @property
    def first(self) -> int:
        """The first n whose equation has P_hi(n, s) ≠ 0 for all s > 0 (P_hi's monomials
        have one sign: it vanishes at n = 0 only if every monomial has a factor n)."""
        return 1 if np.all(self.coef[-1][:, 0] == 0) else 0

    def ratios(self, n: np.ndarray, sa: np.ndarray) -> np.ndarray:
        """R_j(n, s), shape (len(n), hi − lo, len(sa)), of h_{n+hi} = Σ_{j<hi} R_j h_{n+j} for
        the normalised h_m = c_m/√(m!) (zero where n + j < 0).  In long double (where the
        platform has it), elementwise in a fixed order: a column never depends on the others."""
        lo, hi, ld = self.lo, self.hi, np.longdouble
        n = np.asarray(n, dtype=ld)
        npow = n[:, None] ** np.arange(self.coef.shape[2])                    # (K, dn+1)
        A = np.einsum("jik,nk->nji", self.coef.astype(ld), npow)              # exact integers
        sa = np.asarray(sa, dtype=ld)
        P = A[:, :, 0, None] * np.ones_like(sa)
        si = np.ones_like(sa)
        for i in range(1, A.shape[2]):
            si = si * sa
            P = P + A[:, :, i, None] * si                                     # (K, J, V)
        R = np.zeros((n.size, hi - lo, sa.size), dtype=ld)
        for jj in range(hi - lo):
            # c_{n+j} = h_{n+j} √((n+j)!), the equation divided by √((n+hi)!)
            w = np.ones(n.size, dtype=ld)
            for t in range(lo + jj + 1, hi + 1):
                w = w / np.sqrt(np.maximum(n + t, 1))
            R[:, jj] = -(P[:, jj] * w[:, None]) / P[:, -1]
            R[n + lo + jj < 0, jj] = 0
        return R

    def _radius(self, n: int, sa: np.ndarray) -> np.ndarray:
        """Spectral radius of the one-step companion matrix at n, for each s."""
        J = self.hi - self.lo
        C = np.zeros((sa.size, J, J))
        C[:, np.arange(J - 1), np.arange(1, J)] = 1.0
        C[:, -1, :] = self.ratios(np.array([n]), sa)[0].T
        return np.max(np.abs(np.linalg.eigvals(C)), axis=1)

    @cached_property
    def _start_table(self) -> np.ndarray:
        """n0 on the grid S_GRID of s: the smallest n (of N_GRID) past which no solution
        of the recurrence grows faster than algebraically (one-step spectral radius
        ≤ 1 + 1/n at every larger grid n), so rounding is not amplified (docs/math.md §10)."""
        n0 = np.full(S_GRID.size, np.iinfo(np.int64).max // 4)
        ok = np.ones(S_GRID.size, dtype=bool)
        for n in N_GRID[::-1]:
            ok &= self._radius(int(n), S_GRID) <= 1.0 + 1.0 / n
            n0[ok] = n
        return np.maximum(n0, self.first)

    def start(self, sa: np.ndarray) -> np.ndarray:
        """n0(s): the first equation run forward (the larger of the two grid neighbours'
        n0; beyond the grid: never, quadrature only).  A power of two, so that few
        quadrature tables serve all s."""
        sa = np.asarray(sa, dtype=float)
        x = (np.log2(np.maximum(sa, 1e-300)) - np.log2(S_GRID[0])) / S_STEP
        i = np.clip(np.floor(x).astype(int), 0, S_GRID.size - 2)
        out = np.maximum(self._start_table[i], self._start_table[i + 1])
        inside = (sa >= S_GRID[0]) & (sa <= S_GRID[-1])
        return np.where(inside, out, np.iinfo(np.int64).max // 4)

    def run(self, H: np.ndarray, sa: np.ndarray, n0: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Fill H[m], m ≥ n0 + hi, of each column (variance sa²) from its H[: n0 + hi]
        (docs/math.md §10).  Carried in long double: the rounding of R_j in double, fed
        through thousands of steps, would reach 1e-14 of the ℓ² norm (GELU′, large a)."""
        kmax = H.shape[0] - 1
        sa = np.asarray(sa, dtype=float)
        lo, hi = self.lo, self.hi
        for c0 in range(0, sa.size, chunk):
            cols = slice(c0, c0 + chunk)
            start = max(int(n0[cols].min()), 0)
            if start > kmax - hi:
                continue
            ns = np.arange(start, kmax - hi + 1)
            R = self.ratios(ns, sa[cols])
            X = H[:, cols].astype(np.longdouble)
            first = n0[cols] + hi
            for t, n in enumerate(ns):
                acc = np.zeros(X.shape[1], dtype=np.longdouble)
                for jj in range(max(0, -(n + lo)), hi - lo):
                    acc = acc + R[t, jj] * X[n + lo + jj]
                X[n + hi] = np.where(n + hi >= first, acc, X[n + hi])
            H[:, cols] = X
        return H
