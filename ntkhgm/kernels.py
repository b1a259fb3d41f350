"""NNGP and NTK of deep fully connected networks (docs/math.md §1), in tiles.

Conventions:

``arora`` (default; seed eqs. 3–7, Arora et al. 2019)
    Σ0 = x·x',  Σh = cσ D_σ(Λh),  Σ̇h = cσ D_σ'(Λh),  Θ0 = Σ0,  Θh = Σh + Θ_{h−1} Σ̇h;
    NNGP = Σ_L, NTK = Θ_L.  W_std and b_std do not apply.
``nt``
    neural-tangents' ``stax.serial(*[Dense(W, b), Act()]*L, Dense(W, b))`` in the
    'ntk' parameterization: nngp = W²x·x'/d0 + b², ntk = nngp, then per layer
    nngp ← W² T + b², ntk ← W²(ntk Ṫ + T) + b² with T = D_σ(Λ), Ṫ = D_σ'(Λ).

Layout (issue 10):

1. **Rows first.**  The per-layer variances Σh(x, x), the diagonal duals and
   Θh(x, x) of every distinct row of X1 ∪ X2 (O(N·L) one-dimensional integrals,
   :func:`row_values`).
2. **Tiles.**  K is cut into independent blocks of pairs (:mod:`ntkhgm.tiling`);
   each runs the whole depth-L recursion for its pairs (:func:`compute_tile`),
   taking its rows' variances from step 1.  The untiled kernel is one tile.
   Σ0 = x·x' is summed in the same order for every pair whatever the block
   (``einsum``; BLAS's order depends on the block's shape), so a pair's value
   does not depend on the tiling beyond what the dual evaluators' batches do.
3. **Exact degeneracy** (issue 9).  Rows that are exactly equal (or exactly
   negated) get Σ0 = ±‖x‖² exactly, and a pair whose Λ is exactly degenerate
   with a = b — u = ±v almost surely — takes the values of the diagonal
   computed in step 1 (the same quantity, E[σ(u)²] or E[σ(u)σ(−u)]), in every
   layer: duplicate rows stay duplicate.  Nothing else is special-cased, so
   near-duplicates stay continuous.
4. **Every depth in one pass** (issue 12): ``depth=[1, 2, 3]`` keeps the
   kernel of each requested depth on the way to the deepest.

A non-finite value in any layer raises :class:`~ntkhgm.errors.NonFiniteKernelError`
naming the row pair and the layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .activations import Activation
from .duals import as_activation, c_sigma, dual, dual_pairs, forget_rows, resolve_method
from .errors import InputError, NonFiniteKernelError, NumericalError
from .numeric.covariance import sqrt_product
from .tiling import Tile, iter_blocks, memory_budget, memory_model, tile_edge, tile_grid

KINDS = ("ntk", "nngp")
CONVENTIONS = ("arora", "nt")

Progress = Callable[[int, int], None]


def _check_depths(depth) -> tuple[tuple[int, ...], bool]:
    """(sorted distinct depths, whether one int was given)."""
    single = not isinstance(depth, (list, tuple, np.ndarray, range))
    values = [depth] if single else list(depth)
    if not values:
        raise InputError("depth: give at least one depth")
    out = []
    for d in values:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer, float, np.floating)) \
                or not np.isfinite(d) or int(d) != d or d < 0:
            raise InputError(f"depth must be a non-negative integer, got {d!r}")
        out.append(int(d))
    return tuple(sorted(set(out))), single


def _check_inputs(X1, X2, kind, convention, W_std, b_std):
    X1 = np.atleast_2d(np.asarray(X1, dtype=float))
    X2 = None if X2 is None else np.atleast_2d(np.asarray(X2, dtype=float))
    if X1.ndim != 2 or X1.shape[0] == 0 or X1.shape[1] == 0:
        raise InputError(f"X1 must be a non-empty 2-D array, got shape {X1.shape}")
    if X2 is not None and (X2.ndim != 2 or X2.shape[1] != X1.shape[1] or X2.shape[0] == 0):
        raise InputError(f"X2 must be a non-empty 2-D array with {X1.shape[1]} columns, "
                         f"got shape {X2.shape}")
    for name, X in (("X1", X1), ("X2", X2)):
        if X is not None and not np.all(np.isfinite(X)):
            raise InputError(f"{name} contains NaN or infinite values")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if convention == "arora" and (W_std != 1.0 or b_std != 0.0):
        raise InputError("W_std and b_std apply to convention 'nt' only")
    if not (np.isfinite(W_std) and np.isfinite(b_std)):
        raise InputError("W_std and b_std must be finite")
    return np.ascontiguousarray(X1), None if X2 is None else np.ascontiguousarray(X2)


# ----------------------------------------------------------------------------- the recursion


@dataclass(frozen=True)
class Recursion:
    """Everything a tile needs besides its rows, resolved once at the boundary.

    Picklable (it travels to Dask workers with each tile); the dual methods are
    concrete names, chosen for the size of the whole kernel, never per tile.
    """

    act: Activation
    depths: tuple[int, ...]
    kind: str
    convention: str
    w2: float
    b2: float
    cs: float
    d0: int
    methods: tuple[str, str | None]   # for σ and σ' (None: NNGP needs no σ')
    options: tuple[tuple[str, object], ...]

    @property
    def depth(self) -> int:
        return self.depths[-1]

    @property
    def ntk(self) -> bool:
        return self.kind == "ntk"

    def input_cov(self, dot):
        """Σ0 from x·x' (docs/math.md §1)."""
        if self.convention == "arora":
            return dot
        return self.w2 * dot / self.d0 + self.b2

    def next_cov(self, T):
        """Σh from T = D_σ(Λh)."""
        if self.convention == "arora":
            return self.cs * T
        return self.w2 * T + self.b2

    def next_ntk(self, theta, T, Td):
        """Θh from Θ_{h−1}, T = D_σ(Λh) and Ṫ = D_σ'(Λh); one expression for pairs and rows
        (so a duplicate pair's value is its diagonal's, bit for bit)."""
        if self.convention == "arora":
            return self.cs * T + theta * (self.cs * Td)
        return self.w2 * (theta * Td + T) + self.b2

    def dual(self, a, b, c, derivative: bool) -> np.ndarray:
        method = self.methods[1 if derivative else 0]
        return dual(self.act, a, b, c, derivative=derivative, method=method,
                    **dict(self.options))

    def duals(self, a, b, c, *, root=None, index=None) -> list[np.ndarray]:
        """[D_σ] or [D_σ, D_σ'] (NTK) of the same pairs, their shared work done once
        (:func:`~ntkhgm.duals.dual_pairs`); with ``root`` the caller has clipped c to
        ±root = √(ab) (kernels do), so the covariance checks would change nothing."""
        which = [(False, self.methods[0])] + ([(True, self.methods[1])] if self.ntk else [])
        return dual_pairs(self.act, a, b, c, which, checked=root is not None, root=root,
                          index=index, **dict(self.options))

    def fingerprint(self) -> dict:
        """What determines the values (for resuming a run): JSON-able."""
        return {"activation": self.act.name, "formula": self.act.formula,
                "depths": list(self.depths), "kind": self.kind,
                "convention": self.convention, "w2": self.w2.hex(), "b2": self.b2.hex(),
                "methods": list(self.methods),
                "options": [[k, repr(v)] for k, v in self.options]}


def make_recursion(act: Activation, depths: tuple[int, ...], kind: str, convention: str,
                   W_std: float, b_std: float, method: str, d0: int, npairs: int,
                   options: dict) -> Recursion:
    """Resolve the methods (for the size of the whole kernel) and cσ once."""
    methods = (resolve_method(act, False, method, npoints=npairs),
               resolve_method(act, True, method, npoints=npairs) if kind == "ntk" else None)
    cs = c_sigma(act) if convention == "arora" else 1.0
    with np.errstate(over="ignore"):  # an overflow is reported at layer 0 with its rows
        w2, b2 = float(np.float64(W_std) ** 2), float(np.float64(b_std) ** 2)
    return Recursion(act, depths, kind, convention, w2, b2, float(cs), int(d0), methods,
                     tuple(sorted(options.items())))


def _pair_names(i: int, j: int, n1: int | None) -> tuple[str, str]:
    """Input rows named for a message: 0-based data rows; ``n1`` not None: rows ≥ n1
    are rows of X2 (the rows' pass runs over X1 and X2 concatenated)."""
    def name(r: int, second: bool) -> str:
        if n1 is None:
            return f"row {r}"
        return f"X2 row {r - n1}" if r >= n1 else f"X1 row {r}"
    return name(i, False), name(j, True)


def _nonfinite(values, layer: int, rows1, rows2, what: str, n1: int | None = None) -> None:
    """Raise NonFiniteKernelError naming the first row pair whose value is inf or NaN."""
    bad = ~np.isfinite(values)
    if np.any(bad):
        p = int(np.flatnonzero(bad)[0])
        ri, rj = _pair_names(int(rows1[p]), int(rows2[p]), n1)
        pair = ri if ri == rj else f"{ri} and {rj}"
        raise NonFiniteKernelError(
            f"non-finite kernel value ({what} = {float(values[p])!r}) at layer {layer}, "
            f"{pair}: the inputs or the weights are too large for float64",
            (ri, rj), layer)


def _with_pair(exc: NumericalError, layer: int, a, b, c, rows1, rows2,
               n1: int | None) -> NumericalError:
    """The same error, its message prefixed with the layer and the row pair of its Λ."""
    where = f"layer {layer}"
    if exc.a is not None:
        hit = np.flatnonzero((a == exc.a) & (b == exc.b) & (c == exc.c))
        if hit.size:
            ri, rj = _pair_names(int(rows1[hit[0]]), int(rows2[hit[0]]), n1)
            where += f", {ri}" if ri == rj else f", {ri} and {rj}"
    try:
        new = type(exc)(f"{where}: {exc}")
    except Exception:  # a subclass with another signature: the base class
        new = NumericalError(f"{where}: {exc}")
    new.a, new.b, new.c = exc.a, exc.b, exc.c
    return new


# ----------------------------------------------------------------------------- rows first


@dataclass
class LayerValues:
    """Per-layer values of some rows, one column per row (or per distinct row), layer
    h = 0..L: ``q`` = Σh(x, x), ``theta`` = Θh(x, x); for h ≥ 1 ``t``/``td`` = D_σ/D_σ'(Λ)
    at Λ = q_{h−1}·[[1, 1], [1, 1]] and, when some rows are exact negatives of
    others, ``ta``/``tda`` at q_{h−1}·[[1, −1], [−1, 1]]."""

    q: np.ndarray
    theta: np.ndarray | None
    t: np.ndarray
    td: np.ndarray | None
    ta: np.ndarray | None
    tda: np.ndarray | None


@dataclass
class RowValues(LayerValues):
    """The distinct rows of X1 ∪ X2 (up to sign) through every layer.

    Input row r is ``sign[r]`` times the distinct row ``key[r]``; the layer values
    have one column per key; ``norm`` = ‖x‖² per key (the Σ0 of a row with itself,
    before the convention's affine map).
    """

    key: np.ndarray
    sign: np.ndarray
    norm: np.ndarray
    first: np.ndarray  # an input row of each key (for error messages)
    n1: int | None     # rows ≥ n1 are rows of X2 (for error messages)

    def take(self, rows: np.ndarray) -> TileRows:
        k = self.key[rows]

        def col(x):
            return None if x is None else np.ascontiguousarray(x[:, k])

        return TileRows(rows=rows, n1=self.n1, X=None, key=k, sign=self.sign[rows],
                        norm=self.norm[k],
                        q=col(self.q), theta=col(self.theta), t=col(self.t), td=col(self.td),
                        ta=col(self.ta), tda=col(self.tda))


def _canonical_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, sign, first) with X[r] = sign[r]·U[key[r]], U the distinct rows up to sign."""
    nz = X != 0
    lead = np.where(nz.any(axis=1), X[np.arange(len(X)), nz.argmax(axis=1)], 1.0)
    sign = np.where(lead < 0, -1.0, 1.0)
    canon = X * sign[:, None]
    canon[canon == 0] = 0.0  # −0.0 and 0.0 are one value
    _, first, key = np.unique(canon, axis=0, return_index=True, return_inverse=True)
    return key.ravel(), sign, first


def row_values(rec: Recursion, X: np.ndarray, n1: int | None = None) -> RowValues:
    """Step 1 of the module docstring: every distinct row through every layer, O(N·L).

    ``X`` is X1, or X1 and X2 concatenated (then ``n1`` = len(X1), for messages).
    """
    key, sign, first = _canonical_rows(X)
    U = X[first] * sign[first][:, None]
    norm = np.einsum("ij,ij->i", U, U)
    anti = bool(np.any(np.bincount(key, weights=(sign > 0)) * np.bincount(key, weights=(sign < 0))))
    L, n = rec.depth, len(first)
    q = np.empty((L + 1, n))
    t, td = np.full((L + 1, n), np.nan), np.full((L + 1, n), np.nan) if rec.ntk else None
    ta = np.full((L + 1, n), np.nan) if anti else None
    tda = np.full((L + 1, n), np.nan) if anti and rec.ntk else None
    theta = np.empty((L + 1, n)) if rec.ntk else None
    rows = first  # the error names an input row of the offending key
    with np.errstate(over="ignore", invalid="ignore"):
        q[0] = rec.input_cov(norm)
        _nonfinite(q[0], 0, rows, rows, "Σ", n1)
        if theta is not None:
            theta[0] = q[0]
        for h in range(1, L + 1):
            # each distinct variance once: equal variances get equal values
            vals, inv = np.unique(q[h - 1], return_inverse=True)
            inv = inv.ravel()
            of_val = np.empty(len(vals), dtype=int)
            of_val[inv] = first  # an input row with each distinct variance
            for out, derivative, c in ((t, False, vals), (td, True, vals),
                                       (ta, False, -vals), (tda, True, -vals)):
                if out is None:
                    continue
                try:
                    out[h] = rec.dual(vals, vals, c, derivative)[inv]
                except NumericalError as exc:
                    raise _with_pair(exc, h, vals, vals, c, of_val, of_val, n1) from None
            q[h] = rec.next_cov(t[h])
            _nonfinite(q[h], h, rows, rows, "Σ", n1)
            if theta is not None:
                theta[h] = rec.next_ntk(theta[h - 1], t[h], td[h])
                _nonfinite(theta[h], h, rows, rows, "Θ", n1)
    return RowValues(q=q, theta=theta, t=t, td=td, ta=ta, tda=tda, key=key, sign=sign,
                     norm=norm, first=first, n1=n1)


# ----------------------------------------------------------------------------- tiles


@dataclass
class TileRows(LayerValues):
    """The rows of one side of a tile and their layer values (columns of RowValues)."""

    rows: np.ndarray          # indices into X1 (then X2), for error messages
    n1: int | None            # rows ≥ n1 are rows of X2
    X: np.ndarray | None
    key: np.ndarray
    sign: np.ndarray
    norm: np.ndarray


def _layer_duals(rec: Recursion, A: TileRows, h: int, a, b, c, root, pa, index, rows1,
                 rows2, anti_ok: bool) -> list[np.ndarray]:
    """[D_σ] or [D_σ, D_σ'] of layer h on the pairs: exactly degenerate pairs with a = b take
    the rows' diagonal (or antidiagonal) values, the rest go to the dual evaluators, σ and
    σ' together (:meth:`Recursion.duals`).  ``root`` = √(ab) with |c| ≤ root (or None:
    checked as any input); ``index``: a function returning (vals, ia, ib), √a = vals[ia],
    √b = vals[ib] (:func:`~ntkhgm.duals.dual_pairs`)."""
    derivs = (False, True) if rec.ntk else (False,)
    eq = a == b
    diag = eq & (c == a)
    anti = eq & (c == -a) & ~diag if anti_ok and A.ta is not None else None
    special = diag if anti is None else diag | anti
    if not np.any(special):
        try:
            return rec.duals(a, b, c, root=root, index=index)
        except NumericalError as exc:
            raise _with_pair(exc, h, a, b, c, rows1, rows2, A.n1) from None
    outs = [np.empty(a.shape) for _ in derivs]
    for out, derivative in zip(outs, derivs, strict=True):
        out[diag] = (A.td if derivative else A.t)[h][pa[diag]]
        if anti is not None and np.any(anti):
            out[anti] = (A.tda if derivative else A.ta)[h][pa[anti]]
    rest = ~special
    if np.any(rest):
        sub = None
        if index is not None:
            def sub():
                vals, ia, ib = index()
                return vals, ia[rest], ib[rest]
        try:
            values = rec.duals(a[rest], b[rest], c[rest],
                               root=None if root is None else root[rest], index=sub)
        except NumericalError as exc:
            raise _with_pair(exc, h, a[rest], b[rest], c[rest], rows1[rest],
                             rows2[rest], A.n1) from None
        for out, v in zip(outs, values, strict=True):
            out[rest] = v
    return outs


def compute_tile(rec: Recursion, A: TileRows, B: TileRows | None) -> dict[int, np.ndarray]:
    """K of every requested depth on the block A × B (B None: A × A, a diagonal block).

    Runs the whole recursion for the block's pairs (docs/math.md §1), taking the rows'
    variances from :func:`row_values`; returns {depth: (len(A), len(B)) array}.
    """
    symmetric = B is None
    Bm = A if symmetric else B
    n1, n2 = len(A.key), len(Bm.key)
    # Σ0 in one summation order for every pair, whatever the block (see module docstring)
    dot = np.einsum("ik,jk->ij", A.X, Bm.X)
    same = A.key[:, None] == Bm.key[None, :]
    if np.any(same):
        exact = (A.sign[:, None] * Bm.sign[None, :]) * A.norm[:, None]
        dot[same] = np.broadcast_to(exact, dot.shape)[same]
    if symmetric:
        pa, pb = np.triu_indices(n1, k=1)
        dot = dot[pa, pb]
    else:
        pa = np.repeat(np.arange(n1), n2)
        pb = np.tile(np.arange(n2), n1)
        dot = dot.ravel()
    rows1, rows2 = A.rows[pa], Bm.rows[pb]
    anti_ok = A.ta is not None and Bm.ta is not None
    out: dict[int, np.ndarray] = {}

    def keep(h: int, pair_values: np.ndarray, row_values: np.ndarray | None) -> None:
        block = np.empty((n1, n2))
        if symmetric:
            block[pa, pb] = pair_values
            block[pb, pa] = pair_values
            block[np.diag_indices(n1)] = row_values[h]
        else:
            block[...] = pair_values.reshape(n1, n2)
        out[h] = block

    with np.errstate(over="ignore", invalid="ignore"):
        cross = rec.input_cov(dot)
        del dot
        _nonfinite(cross, 0, rows1, rows2, "Σ", A.n1)
        theta = cross if rec.ntk else None
        if 0 in rec.depths:
            keep(0, cross, A.q)
        for h in range(1, rec.depth + 1):
            qa, qb = A.q[h - 1], Bm.q[h - 1]
            a, b = qa[pa], qb[pb]
            root = sqrt_product(a, b)  # a·b may underflow or overflow
            c = np.clip(cross, -root, root)  # rounding of earlier layers into the cone
            # the rows' distinct √variances, once per tile and layer: no sort of the pairs
            # (gathered per pair only if the evaluators need them: not on a sphere)
            rows_q = qa if symmetric else np.concatenate([qa, qb])

            def index(rows_q=rows_q):
                vals, inv = np.unique(np.sqrt(rows_q), return_inverse=True)
                return vals, inv[pa], inv[pb if symmetric else n1 + pb]
            # the rows' values are finite (checked); non-negative, c is in ±root: the
            # covariance checks would change nothing (else they run, and say what is wrong)
            trusted = bool(np.all(qa >= 0) and np.all(qb >= 0))
            duals_h = _layer_duals(rec, A, h, a, b, c, root if trusted else None, pa,
                                   index if trusted else None, rows1, rows2, anti_ok)
            T = duals_h[0]
            Td = duals_h[1] if rec.ntk else None
            del a, b, c, root, index, duals_h
            cross = rec.next_cov(T)
            _nonfinite(cross, h, rows1, rows2, "Σ", A.n1)
            if rec.ntk:
                theta = rec.next_ntk(theta, T, Td)
                del Td
                _nonfinite(theta, h, rows1, rows2, "Θ", A.n1)
            del T
            if h in rec.depths:
                if rec.ntk:
                    keep(h, theta, A.theta)
                else:
                    keep(h, cross, A.q)
    return out


# ----------------------------------------------------------------------------- driver


@dataclass
class Plan:
    """A kernel cut into tiles: the recursion, the inputs, the rows' values, the tiles."""

    rec: Recursion
    X1: np.ndarray
    X2: np.ndarray | None
    rows: RowValues
    tiles: list[Tile]
    edge: int

    @property
    def symmetric(self) -> bool:
        return self.X2 is None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.X1), len(self.X1 if self.X2 is None else self.X2)

    def tile_inputs(self, tile: Tile) -> tuple[TileRows, TileRows | None]:
        n1 = len(self.X1)
        A = self.rows.take(np.arange(tile.r0, tile.r1))
        A.X = self.X1[tile.r0:tile.r1]
        if tile.diagonal:
            return A, None
        if self.symmetric:
            B = self.rows.take(np.arange(tile.c0, tile.c1))
            B.X = self.X1[tile.c0:tile.c1]
        else:
            B = self.rows.take(np.arange(n1 + tile.c0, n1 + tile.c1))
            B.X = self.X2[tile.c0:tile.c1]
        return A, B

    def fingerprint(self) -> str:
        """sha256 of everything that determines K and its tiling (for ``--resume``)."""
        h = hashlib.sha256()
        h.update(json.dumps({"rec": self.rec.fingerprint(), "edge": self.edge,
                             "shape": self.shape, "symmetric": self.symmetric},
                            sort_keys=True).encode())
        for X in (self.X1, self.X2):
            if X is not None:
                h.update(str(X.shape).encode())
                h.update(np.ascontiguousarray(X, dtype="<f8").tobytes())
        return h.hexdigest()


def plan_kernel(X1, X2=None, *, activation: str | Activation, depth, kind: str = "ntk",
                convention: str = "arora", W_std: float = 1.0, b_std: float = 0.0,
                method: str = "auto", tile: int | None = None,
                memory: str | int | float | None = None, held: int = 0, workers: int = 1,
                parallel: int | None = None, **options) -> tuple[Plan, bool]:
    """Validate, resolve, run the rows' pass and cut K into tiles.

    ``tile`` fixes the tile edge; otherwise it comes from the memory budget, of
    which ``held`` bytes (an in-memory result, say) are taken already and which
    ``workers`` local processes share; with ``parallel`` tiles running at once
    (default ``workers``) there are at least TILES_PER_WORKER of them per worker,
    so that none waits long for the last.  Returns the plan and whether one int
    depth was given.
    """
    from .tiling import current_rss

    depths, single = _check_depths(depth)
    X1, X2 = _check_inputs(X1, X2, kind, convention, W_std, b_std)
    act = as_activation(activation)
    n1, n2 = len(X1), len(X1 if X2 is None else X2)
    npairs = n1 * (n1 + 1) // 2 if X2 is None else n1 * n2
    rec = make_recursion(act, depths, kind, convention, W_std, b_std, method, X1.shape[1],
                         npairs, options)
    if tile is not None:
        if isinstance(tile, bool) or int(tile) != tile or tile < 1:
            raise InputError(f"tile must be a positive integer, got {tile!r}")
        edge = int(tile)
    elif (memory_budget(memory) is None and max(workers, parallel or 1) == 1
          and n1 * n2 * (memory_model(rec.methods)[0] + 8 * len(depths)) <= SMALL_KERNEL):
        edge = max(n1, n2)      # a small kernel is one tile: no need to ask the memory
    else:
        edge = tile_edge(memory_budget(memory), current_rss() + held, methods=rec.methods,
                         workers=workers, n_depths=len(depths))
        if X2 is None and n1 * (n1 - 1) // 2 <= edge * edge:
            # K(X, X) as one diagonal tile holds n1(n1 − 1)/2 pairs, no more than a full
            # tile of the budget's edge: one tile (each tile pays the per-call costs of the
            # evaluators: a variance's coefficients, an interpolant, a path batch)
            edge = max(edge, n1)
        edge = min(edge, balanced_edge(n1, n2, X2 is None, parallel or workers))
        side = max(n1, n2)
        edge = -(-side // -(-side // edge))  # as many blocks, all (nearly) equal
    rows = row_values(rec, X1) if X2 is None else row_values(rec, np.concatenate([X1, X2]), n1)
    return Plan(rec, X1, X2, rows, tile_grid(n1, n2, edge, X2 is None), edge), single


TILES_PER_WORKER = 4
SMALL_KERNEL = 64 << 20
"""Without an explicit budget, a kernel whose whole working memory (bytes per pair of
its methods, tiling.BYTES_PER_PAIR, times n1·n2) is at most this is one tile, sized
without asking the system for its memory (N ≲ 200 for the series and Pfaffian methods)."""


def balanced_edge(n1: int, n2: int, symmetric: bool, parallel: int) -> int:
    """The edge of the fewest equal blocks per side that give at least TILES_PER_WORKER
    tiles per worker (equal blocks: balanced work)."""
    if parallel <= 1:
        return max(n1, n2)
    want = TILES_PER_WORKER * parallel
    for blocks in range(1, max(n1, n2) + 1):
        edge = -(-max(n1, n2) // blocks)
        b1, b2 = -(-n1 // edge), -(-n2 // edge)
        if (b1 * (b1 + 1) // 2 if symmetric else b1 * b2) >= want:
            return edge
    return 1


def run_tiles(plan: Plan, sink: Callable[[Tile, dict[int, np.ndarray]], None], *,
              skip: set[tuple[int, int]] | None = None, client=None,
              progress: Progress | None = None) -> None:
    """Compute every tile not in ``skip`` and hand each result to ``sink`` (in the
    calling process), locally or on a Dask ``client``."""
    todo = [t for t in plan.tiles if not skip or t.index not in skip]
    total, done = len(plan.tiles), len(plan.tiles) - len(todo)
    if progress is not None:
        progress(done, total)
    if client is not None:
        from .parallel import map_tiles

        results = map_tiles(client, plan, todo)
        work = 0
    else:
        results = ((t, compute_tile(plan.rec, *plan.tile_inputs(t))) for t in todo)
        work = max((t.pairs for t in todo), default=0) * memory_model(plan.rec.methods)[0]
    try:
        with kept_heap(work):
            for t, result in results:
                sink(t, result)
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        forget_rows()   # the rows' coefficients served this kernel's pairs


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_MIN, KEEP_MAX = 64 << 20, 1 << 30
_LIBC: list = []


def _glibc():
    """The C library if it is glibc (mallopt, malloc_trim) and NTKHGM_MALLOC_TUNE is not
    0, else None; looked up once."""
    if not _LIBC:
        libc = None
        if os.environ.get("NTKHGM_MALLOC_TUNE", "1").strip() != "0" and \
                sys.platform.startswith("linux"):
            try:
                import ctypes

                lib = ctypes.CDLL(None)
                if all(hasattr(lib, f) for f in ("gnu_get_libc_version", "mallopt",
                                                  "malloc_trim")):
                    libc = lib
            except OSError:
                libc = None
        _LIBC.append(libc)
    return _LIBC[0]


@contextmanager
def kept_heap(work: int):
    """Let glibc keep up to ``work`` bytes (a tile's working memory, KEEP_MIN..KEEP_MAX)
    of freed heap while a kernel runs, then give it all back (``malloc_trim``).

    A layer's pair arrays (4 MB each at N = 1000) are allocated and freed dozens of
    times; with glibc's adaptive thresholds the freed top of the heap is returned to the
    system whenever it exceeds twice the largest array seen, and every new array is then
    page-faulted back in: measured, 2× the time of a depth-3 ReSin NTK on sphere data at
    N = 1000.  On leaving, the thresholds stay at what glibc's own adaptation reaches
    after a 32 MiB array (mmap 32 MiB, trim 64 MiB): setting them ends the adaptation.
    Not glibc, a small kernel, or NTKHGM_MALLOC_TUNE=0: nothing is changed.
    """
    libc = _glibc() if work >= KEEP_MIN else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, int(min(work, KEEP_MAX)))
    try:
        yield
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        libc.malloc_trim(0)


def in_memory_sink(plan: Plan) -> tuple[dict[int, np.ndarray], Callable]:
    """Preallocated K of every depth and the sink that fills it."""
    n1, n2 = plan.shape
    out = {d: np.empty((n1, n2)) for d in plan.rec.depths}

    def sink(tile: Tile, result: dict[int, np.ndarray]) -> None:
        for d, block in result.items():
            for r, c, transposed in iter_blocks(tile, plan.symmetric):
                b = block.T if transposed else block
                out[d][r:r + b.shape[0], c:c + b.shape[1]] = b

    return out, sink


def kernel(X1, X2=None, *, activation: str | Activation, depth: int | Sequence[int],
           kind: str = "ntk", convention: str = "arora", W_std: float = 1.0,
           b_std: float = 0.0, method: str = "auto", progress: Progress | None = None,
           tile: int | None = None, memory: str | int | float | None = None, client=None,
           **options) -> np.ndarray | dict[int, np.ndarray]:
    """NTK or NNGP matrix K(X1, X2) (K(X1, X1) when X2 is None), docs/math.md §1.

    ``depth``: an int gives one matrix; a list of depths gives {depth: matrix}
    from one pass through the layers.  ``method`` chooses the dual-activation
    method (see :mod:`ntkhgm.duals`); ``options`` are passed to it (e.g.
    ``degree`` for ``gh``).  ``tile`` (edge in rows) or ``memory`` (a budget
    such as ``"2GB"``; default ``NTKHGM_MEMORY`` or a fraction of the free
    memory) size the tiles; ``client`` (a ``dask.distributed.Client``) runs
    them on a Dask cluster.  ``progress(done, total)`` is called per tile.
    """
    depths, _ = _check_depths(depth)
    n1 = np.shape(np.atleast_2d(np.asarray(X1, dtype=float)))[0]
    n2 = n1 if X2 is None else np.shape(np.atleast_2d(np.asarray(X2, dtype=float)))[0]
    plan, single = plan_kernel(X1, X2, activation=activation, depth=depth, kind=kind,
                               convention=convention, W_std=W_std, b_std=b_std, method=method,
                               tile=tile, memory=memory, held=8 * n1 * n2 * len(depths),
                               parallel=_cluster_size(client), **options)
    out, sink = in_memory_sink(plan)
    run_tiles(plan, sink, client=client, progress=progress)
    return out[plan.rec.depth] if single else out


def _cluster_size(client) -> int:
    if client is None:
        return 1
    from .parallel import n_workers

    return n_workers(client)
