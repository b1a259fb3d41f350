"""Hermite coefficients from the annihilator: a recurrence in n (docs/math.md §10).

With g(z) = f(s z), s = √a, and c_n = E[g(z) He_n(z)], multiplication by u = s z
and differentiation ∂u = ∂z / s act on the coefficient sequence as the shift
operators

    (M c)_n = c_{n+1} + n c_{n−1}   (z·),      (S c)_n = c_{n+1}   (∂z·),

so an annihilator Σ κ_ab u^a ∂u^b of f (a distribution identity) gives, after
multiplying by s^B (B the order), Σ_j P_j(n, s) c_{n+j} = 0 for every n ≥ 0:
one recurrence, with coefficients polynomial in n and s, for all variances.  It
is run forward on the normalised h_n = c_n/√(n!) from the first n0(s) + J
coefficients, which come from quadrature; n0 lies past the humps (s^n/√(n!) of an
entire function's branch, at n ≈ a) beyond which no solution of the recurrence
grows faster than algebraically, so rounding stays at the level of the ℓ² norm (§10).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

from ..algebra.annihilator import Annihilator, parse_annihilator

S_STEP = 0.25
S_GRID = 2.0 ** np.arange(-8.0, 8.0 + S_STEP / 2, S_STEP)   # s = √a from 0.004 to 256
N_GRID = 2 ** np.arange(2, 13)                                # 4 … 4096

# a sequence operator: {(shift j, power of s): coefficients of a polynomial in n, low first}
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
    dtype: type = np.float64   # of the run: float64, or long double where that drifts
    # variances with s ≤ float64_limit run in float64 even when dtype is long double (their
    # float64 run was measured not to drift: docs/math.md §10)
    float64_limit: float = 0.0

    def with_dtype(self, dtype: type, float64_limit: float = 0.0) -> HermiteRecurrence:
        return HermiteRecurrence(self.lo, self.hi, self.coef, dtype, float64_limit)

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
        if hi == lo:
            # one term: h_n = 0 beyond the first few (a polynomial f, e.g. du): nothing to run
            return None
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

    @cached_property
    def active(self) -> np.ndarray:
        """The shifts j < hi whose P_j is not identically 0 (as offsets j − lo)."""
        return np.flatnonzero(np.any(self.coef[:-1] != 0, axis=(1, 2)))

    def ratios(self, n: np.ndarray, sa: np.ndarray) -> np.ndarray:
        """R_j(n, s), shape (len(n), len(active), len(sa)), of h_{n+hi} = Σ_j R_j h_{n+j}
        for the normalised h_m = c_m/√(m!) (zero where n + j < 0).  Elementwise in a fixed
        order: a column never depends on the others.

        R_j = −w_j(n) P_j(n, s)/P_hi(n, s), w_j = √((n+j)!/(n+hi)!).  Where P_hi depends on s
        alone (every catalog recurrence), −w_j/… is folded into the per-n coefficients of
        P_j and 1/P_hi(s) is one value per variance — a monomial s^k (ReLU, ReSin, sin)
        just lowers the powers of s: per element, only the powers' products and sums.
        The per-n parts depend on n alone: remembered per run of n (:meth:`_per_n`)."""
        ld = self.dtype
        A, w = self._per_n(np.asarray(n))
        lead = self._lead
        sa = np.asarray(sa, dtype=ld)
        if self._lead_in_s_only:
            used, k = self._powers
            R = self._power_sum(A, sa, used, k)
            if k:
                if lead[k, 0] != 1:             # (x/1 = x exactly)
                    R /= lead[k, 0]
            else:
                R *= 1 / (sa[None, :] ** np.arange(lead.shape[0])[:, None]
                          * lead[:, :1]).sum(axis=0)
            return R
        used, _ = self._powers
        P = self._power_sum(A, sa, used, 0)
        R = P[:, :-1]                   # (P_j · −w_j) / P_hi, written over P
        np.multiply(R, -w[:, :, None], out=R)
        np.divide(R, P[:, -1:], out=R)
        return R

    @cached_property
    def _lead(self) -> np.ndarray:
        return self.coef[-1].astype(self.dtype)

    @cached_property
    def _lead_in_s_only(self) -> bool:
        """P_hi depends on s alone (every catalog recurrence)."""
        return bool(np.all(self.coef[-1][:, 1:] == 0))

    @cached_property
    def _powers(self) -> tuple[np.ndarray, int]:
        """The powers of s in the P_j of :meth:`ratios` (with P_hi where it depends on n too),
        and k: the power s^k that 1/P_hi = 1/(ℓ_k s^k) lowers them by (0: none)."""
        if not self._lead_in_s_only:
            rows = np.append(self.active, self.coef.shape[0] - 1)
            return np.flatnonzero(np.any(self.coef[rows] != 0, axis=(0, 2))), 0
        lead = self.coef[-1]
        powers = np.flatnonzero(lead[:, 0] != 0)
        used = np.flatnonzero(np.any(self.coef[self.active] != 0, axis=(0, 2)))
        k = int(powers[0]) if powers.size == 1 and used[0] >= powers[0] else 0
        return used, k

    @cached_property
    def _per_n_memo(self) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        return {}

    def _per_n(self, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-n coefficients of :meth:`ratios`: A[n, j, i] (of sⁱ in P_j, times −w_j(n)
        where P_hi depends on s alone) and w_j(n); exact in n.  Remembered for runs of
        consecutive n (a run asks for the same blocks each time)."""
        consecutive = n.size > 0 and int(n[-1]) - int(n[0]) == n.size - 1
        key = (int(n[0]), int(n.size)) if consecutive else None
        memo = self._per_n_memo
        hit = memo.get(key) if consecutive else None
        if hit is not None:
            return hit
        lo, hi, ld = self.lo, self.hi, self.dtype
        n = np.asarray(n, dtype=ld)
        npow = n[:, None] ** np.arange(self.coef.shape[2])                    # (K, dn+1)
        w = np.ones((n.size, self.active.size), dtype=ld)
        for t, jj in enumerate(self.active):
            # c_{n+j} = h_{n+j} √((n+j)!), the equation divided by √((n+hi)!)
            for u in range(lo + jj + 1, hi + 1):
                w[:, t] = w[:, t] / np.sqrt(np.maximum(n + u, 1))
            w[n + lo + jj < 0, t] = 0
        coef = self.coef.astype(ld)
        if self._lead_in_s_only:
            # R_j = Σ_i (−w_j(n) P_ji(n)) s^i / ℓ(s)
            A = np.einsum("jik,nk->nji", coef[self.active], npow)             # exact
            A *= -w[:, :, None]
        else:
            rows = np.append(self.active, self.coef.shape[0] - 1)
            A = np.einsum("jik,nk->nji", coef[rows], npow)                     # exact
        A.flags.writeable = w.flags.writeable = False
        if consecutive:
            if len(memo) >= 64:             # (the blocks of a few runs' starts; clear() is
                memo.clear()                # atomic where threads share the recurrence)
            memo[key] = (A, w)
        return A, w

    @staticmethod
    def _power_sum(A: np.ndarray, sa: np.ndarray, used: np.ndarray, k: int) -> np.ndarray:
        """Σ_{i ∈ used} A[:, :, i] s^{i−k}, elementwise from the highest power down (the
        term of s⁰ added as it is: x·1 = x exactly)."""
        P = A[:, :, used[-1], None] * sa[None, :] ** (used[-1] - k)
        tmp = np.empty_like(P)
        for i in used[-2::-1]:                          # elementwise, in a fixed order
            if i == k:
                P += A[:, :, i, None]
                continue
            np.multiply(A[:, :, i, None], sa[None, :] ** (i - k), out=tmp)
            P += tmp
        return P

    def _radius(self, n: np.ndarray, sa: np.ndarray) -> np.ndarray:
        """Spectral radius of the one-step companion matrix at each n (rows) and s (columns):
        one batch of eigenvalue problems (each matrix's own LAPACK call, whatever the batch)."""
        n = np.atleast_1d(n)
        J = self.hi - self.lo
        C = np.zeros((n.size, sa.size, J, J))
        C[:, :, np.arange(J - 1), np.arange(1, J)] = 1.0
        C[:, :, -1, self.active] = np.swapaxes(self.ratios(n, sa), 1, 2).astype(float)
        return np.max(np.abs(np.linalg.eigvals(C)), axis=-1)

    @cached_property
    def _start_columns(self) -> np.ndarray:
        """n0 at the grid points S_GRID (−1 where not computed yet: :meth:`_start_at`)."""
        return np.full(S_GRID.size, -1, dtype=np.int64)

    def _start_at(self, cols: np.ndarray) -> np.ndarray:
        """n0 at the grid points S_GRID[cols]: the smallest n (of N_GRID) past which no
        solution of the recurrence grows faster than algebraically (one-step spectral
        radius ≤ 1 + 1/n at every larger grid n), so rounding is not amplified (docs/math.md
        §10).  Each grid point's n0 depends on it alone; computed on first need (the
        variances of a kernel span a few grid points), all of them in one batch."""
        memo = self._start_columns
        cols = np.asarray(cols)
        todo = np.unique(cols[memo[cols] < 0])
        if todo.size:
            n0 = np.full(todo.size, np.iinfo(np.int64).max // 4)
            ok = np.ones(todo.size, dtype=bool)
            radius = self._radius(N_GRID, S_GRID[todo])
            for i in range(N_GRID.size - 1, -1, -1):
                n = N_GRID[i]
                ok &= radius[i] <= 1.0 + 1.0 / n
                n0[ok] = n
            memo[todo] = np.maximum(n0, self.first)
        return memo[cols]

    @property
    def _start_table(self) -> np.ndarray:
        """n0 on the whole grid S_GRID (:meth:`_start_at`)."""
        return self._start_at(np.arange(S_GRID.size))

    def start(self, sa: np.ndarray) -> np.ndarray:
        """n0(s): the first equation run forward (the larger of the two grid neighbours'
        n0; beyond the grid: never, quadrature only).  A power of two, so that few
        quadrature tables serve all s."""
        sa = np.asarray(sa, dtype=float)
        x = (np.log2(np.maximum(sa, 1e-300)) - np.log2(S_GRID[0])) / S_STEP
        i = np.clip(np.floor(x).astype(int), 0, S_GRID.size - 2)
        table = self._start_at(np.stack([i, i + 1]))
        out = np.maximum(table[0], table[1])
        inside = (sa >= S_GRID[0]) & (sa <= S_GRID[-1])
        return np.where(inside, out, np.iinfo(np.int64).max // 4)

    def run(self, H: np.ndarray, sa: np.ndarray, n0: np.ndarray, steps: int = 64) -> np.ndarray:
        """Fill H[m], m ≥ n0 + hi, of each column (variance sa²) from its H[: n0 + hi]
        (docs/math.md §10), in ``dtype``.  All columns run together from the smallest n0,
        a column's rows below its own n0 + hi kept; the ``lag`` equations n … n + lag − 1
        (lag: the nearest shift below hi) need no row they produce, so they run as one
        step (one shift below hi: running products, :meth:`_run_products`).  Each column
        sees the same elementwise operations whatever the batch.  H is filled in place
        and returned."""
        kmax = H.shape[0] - 1
        sa = np.asarray(sa, dtype=float)
        n0 = np.maximum(np.broadcast_to(np.asarray(n0, dtype=np.int64), sa.shape), 0)
        if self.float64_limit > 0 and self.dtype != np.float64:
            # each column by its own variance: float64 where that was measured not to drift
            cheap = sa <= self.float64_limit
            if np.any(cheap):
                for mask, rec in ((cheap, self._float64), (~cheap, self._long)):
                    if np.any(mask):
                        H[:, mask] = rec.run(H[:, mask], sa[mask], n0[mask], steps)
                return H
        lo, hi = self.lo, self.hi
        cols = np.flatnonzero(n0 <= kmax - hi)
        if cols.size == 0:
            return H
        shifts = [(u, lo + int(jj)) for u, jj in enumerate(self.active)]
        if len(shifts) == 1:
            return self._run_products(H, sa, n0, cols, shifts[0][1])
        if cols.size == 1:
            H[:, cols[0]] = self._run_one(H[:, cols[0]], float(sa[cols[0]]), int(n0[cols[0]]),
                                          shifts)
            return H
        start = n0[cols]
        first, last = int(start.min()), int(start.max())
        lag = hi - max(j for _, j in shifts)
        X = np.ascontiguousarray(np.take(H, cols, axis=1), dtype=self.dtype)   # rows in a line
        jmin = shifts[0][1]
        tmp = np.empty((lag, cols.size), dtype=self.dtype)
        part = np.empty_like(tmp)
        (u0, j0), rest = shifts[0], shifts[1:]

        def step(n: int, b0: int, stop: int, Ru: list) -> int:
            """Equations n … n + w − 1 at once (they read rows below n + hi only): the first
            ones (terms with n + j < 0 left out) and those of columns still starting."""
            w = 1 if n + jmin < 0 else min(lag, stop - n)
            terms = shifts if n + jmin >= 0 else [(u, j) for u, j in shifts if n + j >= 0]
            rows = X[n + hi:n + hi + w]
            new = tmp[:w] if n < last else rows
            if not terms:               # P_j = 0 for every j ≥ −n: h_{n+hi} = 0
                new[...] = 0
            else:
                t, p = n - b0, part[:w]
                u, j = terms[0]
                np.multiply(Ru[u][t:t + w], X[n + j:n + j + w], out=new)
                for u, j in terms[1:]:
                    np.multiply(Ru[u][t:t + w], X[n + j:n + j + w], out=p)
                    new += p
            if n < last:                # columns that start later keep their rows
                np.copyto(rows, new, where=(n + np.arange(w))[:, None] >= start)
            return w

        with np.errstate(all="ignore"):     # rows a column does not keep may overflow
            for b0 in range(first, kmax - hi + 1, steps):
                stop = min(b0 + steps, kmax - hi + 1)
                R = self.ratios(np.arange(b0, stop), sa[cols])   # in cache: a few steps
                # each R_j's rows in one line: a step's slices are then contiguous (3× faster
                # for a few hundred columns than the strided views of R)
                Ru = list(np.ascontiguousarray(R.transpose(1, 0, 2)))
                n = b0
                while n < stop and (n + jmin < 0 or n < last):
                    n += step(n, b0, stop, Ru)
                # every term present and every column running: h_{n+hi} = Σ_j R_j h_{n+j},
                # products and sums in the order of the shifts, lag rows a step
                end = n + (stop - n) // lag * lag
                R0, others = Ru[u0], [(Ru[u], j) for u, j in rest]
                for m in range(n, end, lag):
                    t = m - b0
                    new = X[m + hi:m + hi + lag]
                    np.multiply(R0[t:t + lag], X[m + j0:m + j0 + lag], out=new)
                    for Rj, j in others:
                        np.multiply(Rj[t:t + lag], X[m + j:m + j + lag], out=part)
                        new += part
                n = max(n, end)
                while n < stop:
                    n += step(n, b0, stop, Ru)
        if cols.size == H.shape[1]:
            H[...] = X
        else:
            H[:, cols] = X
        return H

    def _run_products(self, H: np.ndarray, sa: np.ndarray, n0: np.ndarray, cols: np.ndarray,
                      j: int) -> np.ndarray:
        """:meth:`run` where one shift j is active (ReLU, sin, erf, …): h_{n+hi} = R(n) h_{n+j},
        so the rows of each residue of n modulo hi − j are running products — numpy's cumprod
        takes the same products in the same order as the steps, in one call per residue.
        Columns are grouped by n0 (each keeps its rows below its own n0 + hi); rows whose
        equation has no term (n + j < 0) are 0."""
        kmax, hi = H.shape[0] - 1, self.hi
        d = hi - j
        with np.errstate(all="ignore"):     # rows a column does not keep may overflow
            for start in np.unique(n0[cols]).tolist():
                grp = cols[n0[cols] == start]
                X = np.ascontiguousarray(np.take(H, grp, axis=1), dtype=self.dtype)
                n = np.arange(start, kmax - hi + 1)
                R = self.ratios(n, sa[grp])[:, 0]
                for r in range(min(d, n.size)):
                    ns, Rs = n[r::d], R[r::d]
                    empty = int(np.count_nonzero(ns + j < 0))
                    X[ns[:empty] + hi] = 0
                    if empty < ns.size:
                        m = int(ns[empty])
                        chain = np.concatenate([X[m + j][None], Rs[empty:]])
                        X[m + hi::d][: ns.size - empty] = np.cumprod(chain, axis=0)[1:]
                H[:, grp] = X
        return H

    @cached_property
    def _float64(self) -> HermiteRecurrence:
        return HermiteRecurrence(self.lo, self.hi, self.coef, np.float64)

    @cached_property
    def _long(self) -> HermiteRecurrence:
        return HermiteRecurrence(self.lo, self.hi, self.coef, self.dtype)

    def _run_one(self, h: np.ndarray, s: float, start: int, shifts) -> np.ndarray:
        """:meth:`run` for one column (one variance: sphere data, the Chebyshev nodes), in
        numpy scalars of ``dtype``: the same products and sums in the same order as the
        array steps (elementwise arithmetic of the same type), without an array per step."""
        kmax, hi = h.size - 1, self.hi
        x = list(h.astype(self.dtype))
        zero = self.dtype(0)
        if start <= kmax - hi:
            R = self.ratios(np.arange(start, kmax - hi + 1), np.array([s]))[:, :, 0]
            for t, n in enumerate(range(start, kmax - hi + 1)):
                terms = [(u, n + j) for u, j in shifts if n + j >= 0]
                if not terms:
                    x[n + hi] = zero
                    continue
                Rt = R[t]
                u, m = terms[0]
                acc = Rt[u] * x[m]
                for u, m in terms[1:]:
                    acc = acc + Rt[u] * x[m]
                x[n + hi] = acc
        return np.array(x, dtype=self.dtype)
