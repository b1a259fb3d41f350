"""The dual activation as a series in ρ with per-variance factors (docs/math.md §8).

Price's theorem gives D_f(a, b, c) = Σ_k (c^k/k!) m_k(a) m_k(b), m_k(a) = E[f^{(k)}]; with
ρ = c/√(ab) and Gaussian integration by parts this is Mehler's expansion

    D_f(a, b, c) = Σ_n ρⁿ h_n(a) h_n(b),   h_n(a) = E_{z~N(0,1)}[f(√a z) He_n(z)] / √(n!),

whose coefficients are 1-D integrals, computed once per distinct variance.
Since Σ_n h_n(a)² = E f(√a z)², the truncation error after K terms is at most
|ρ|^{K+1} √(T_K(a) T_K(b)), T_K = Σ_{n>K} h_n² (Cauchy–Schwarz), which picks K
per pair.  Convergence is geometric in |ρ| but slow near |ρ| = 1, where the
Pfaffian ODE takes over.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .hermite_recurrence import HermiteRecurrence
from .quadrature import composite_rule

Z_SERIES = 15.0   # ψ_n(z)·√φ(z) with √φ(15) ≈ 5e-25: beyond any K used here
K_BINS = (8, 16, 32, 64, 128, 256)
K_BINS_FAR = (512, 1024, 2048)


@cache
def _hermite_table(kmax: int, width: float, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and the table w(z)·φ(z)·He_k(z)/√(k!) (k = 0..kmax) of a composite rule.

    Gauss–Legendre panels of ``width`` on [−Z, Z], split at 0; the normalised
    Hermite polynomials come from their stable recurrence He_{k+1} = z He_k − k He_{k−1}.
    """
    m = int(np.ceil(Z_SERIES / width))
    z, w = composite_rule(np.linspace(0.0, Z_SERIES, m + 1), n)
    z, w = np.concatenate([-z[::-1], z]), np.concatenate([w[::-1], w])
    q = np.empty((kmax + 1, z.size))
    q[0] = w * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    if kmax >= 1:
        q[1] = z * q[0]
    for k in range(1, kmax):
        q[k + 1] = (z * q[k] - np.sqrt(k) * q[k - 1]) / np.sqrt(k + 1)
    return z, q


def _rule_width(sa: np.ndarray, nmax: np.ndarray) -> np.ndarray:
    """Panel width resolving He_n, n ≤ nmax (period ~2π/√(2n+1)), and σ(√a z), whose
    features (a period, erf's step) have widths ~1/√a; rounded down to a power of two so
    that few tables serve all variances."""
    width = np.minimum(np.minimum(1.0, 2 * np.pi / np.sqrt(2 * nmax + 1.0)),
                       2.0 / np.maximum(sa, 1e-300))
    return 2.0 ** np.floor(np.log2(width))


def hermite_coefficients(f, sa: np.ndarray, kmax: int,
                         recurrence: HermiteRecurrence | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """h_n(sa²) for n = 0..kmax (shape (kmax+1, len(sa))) and the second moments E f(sa z)².

    f must be smooth except at 0.  With a ``recurrence`` (docs/math.md §10) only the first
    n0(s) + J coefficients come from quadrature, the rest from the recurrence; without
    one, all of them.  Either way a column depends on its own variance only.
    """
    sa = np.asarray(sa, dtype=float)
    # coefficients from quadrature per variance: all, or those the recurrence starts from
    nq = np.full(sa.size, kmax + 1)
    if recurrence is not None:
        n0 = recurrence.start(sa)
        nq = np.minimum(nq, np.maximum(n0, 0) + recurrence.hi)
    width = _rule_width(sa, nq - 1)
    H = np.zeros((kmax + 1, sa.size))
    second = np.empty(sa.size)
    # the groups of one (width, nq): width is a power of two, so (log2 width, nq) is one integer
    group = np.rint(np.log2(width)).astype(np.int64) * (kmax + 2) + nq
    for key in np.unique(group).tolist():
        m = group == key
        first = int(np.argmax(m))
        w, m_q = float(width[first]), int(nq[first])
        z, q = _hermite_table(m_q - 1, w)
        F = f(sa[m][:, None] * z[None, :])
        # einsum, not BLAS: each sum over the nodes in one fixed order, whatever the batch
        # (a GEMM's rounding depends on the number of columns)
        H[:m_q, m] = np.einsum("vq,kq->kv", F, q)
        second[m] = np.einsum("vq,vq,q->v", F, F, q[0])
    if recurrence is not None and np.any(nq <= kmax):
        r = nq <= kmax
        if np.all(r):
            H = recurrence.run(H, sa, n0)
        else:
            H[:, r] = recurrence.run(H[:, r], sa[r], n0[r])
    return H, second


_CHECKED: dict = {}
# where a float64 run of the recurrence is compared with a long-double one, and how far
# (measured for GELU, GELU′, ReSin′: the drift is reached by ~256 terms and stays to 2048)
DRIFT_VARIANCES = np.array([0.01, 1.0, 4.0, 8.0, 16.0, 64.0])
DRIFT_TERMS = 512


def checked_recurrence(f, annihilator: str | None,
                       declared: tuple[str, float] | None = None) -> HermiteRecurrence | None:
    """The recurrence of ``annihilator`` (docs/math.md §10), checked once per process for
    each (f, annihilator): the evaluators of one function (methods, tolerances) share it.

    None unless it reproduces f's own Hermite coefficients by quadrature (n ≤ 40,
    a ∈ {0.1, 1, 10}) to 1e-12 of their ℓ² norm: an operator that kills f only away from
    the kink, not as a distribution, gives a wrong recurrence and is caught here.  Run in
    float64 unless that drifts from a long-double run by more than 1e-15 of the norm
    over DRIFT_TERMS terms at DRIFT_VARIANCES (ReSin′, GELU, GELU′: R_j's rounding fed
    through slowly decaying solutions); then in long double, save for the variances up to
    the largest one below which every measured variance stayed within 1e-15.

    ``declared``: (dtype name, float64 limit) as the catalog declares it — what this check
    finds for the catalog's own f, measured again by tests/test_hermite_recurrence.py —
    used without the check (it costs ~10 ms per function and process).
    """
    if annihilator is None:
        return None
    key = (id(f), annihilator, declared)
    hit = _CHECKED.get(key)
    if hit is None or hit[0] is not f:          # (an id reused by another function: again)
        if declared is None:
            rec = _checked_recurrence(f, annihilator)
        else:
            rec = HermiteRecurrence.from_annihilator(annihilator)
            if rec is not None:
                rec = rec.with_dtype(np.dtype(declared[0]).type, float(declared[1]))
        hit = _CHECKED[key] = (f, rec)
    return hit[1]


def _checked_recurrence(f, annihilator: str) -> HermiteRecurrence | None:
    rec = HermiteRecurrence.from_annihilator(annihilator)
    if rec is None:
        return None
    sa = np.sqrt(np.array([0.1, 1.0, 10.0]))
    ref, _ = hermite_coefficients(f, sa, 40)
    H = ref.copy()
    n0 = np.full(sa.size, max(rec.first, 0))
    H[n0[0] + rec.hi:] = np.nan
    H = rec.run(H, sa, n0)
    err = np.max(np.abs(H - ref), axis=0) / np.linalg.norm(ref, axis=0)
    if not np.all(err <= 1e-12):
        return None
    sa = np.sqrt(DRIFT_VARIANCES)
    start = np.minimum(rec.start(sa), 64)
    H = np.zeros((DRIFT_TERMS + 1, sa.size))
    H[: int(start.max()) + rec.hi], _ = hermite_coefficients(f, sa, int(start.max()) + rec.hi - 1)
    double = rec.run(H.copy(), sa, start)
    longd = rec.with_dtype(np.longdouble).run(H.copy(), sa, start)
    drift = np.max(np.abs(double - longd), axis=0) / np.linalg.norm(longd, axis=0)
    calm = drift <= 1e-15
    if np.all(calm):
        return rec
    # float64 up to the largest variance below which every measured one is calm
    prefix = np.cumprod(calm).astype(bool)
    return rec.with_dtype(np.longdouble, float(sa[prefix][-1]) if prefix.any() else 0.0)


def times_z(H: np.ndarray) -> np.ndarray:
    """The coefficients of z·g(z) from those of g (rows n = 0..K; returns rows 0..K−1):
    E[z g He_n]/√n! = √(n+1) h_{n+1} + √n h_{n−1}, from z He_n = He_{n+1} + n He_{n−1}."""
    n = np.arange(H.shape[0] - 1, dtype=float)[:, None]
    out = np.sqrt(n + 1.0) * H[1:]
    out[1:] += np.sqrt(n[1:]) * H[:-2]
    return out


TAIL_FLOOR = 1e-15


def tail_norms(H: np.ndarray, second: np.ndarray) -> np.ndarray:
    """T_K = E f² − Σ_{n≤K} h_n² for K = 0..kmax (shape like H).

    The difference is known only to the rounding of E f², so it is floored at
    TAIL_FLOOR·E f², not at 0: a tail computed as 0 on one side must not make
    the bound √(T_K(a) T_K(b)) vanish while the other side's tail is large.
    """
    return np.maximum(second[None, :] - np.cumsum(H * H, axis=0),
                      TAIL_FLOOR * second[None, :])


def log_tail_ratios(T: np.ndarray, second: np.ndarray) -> np.ndarray:
    """U = ½ log(T_K / E f²) per variance (rows: the K of T), the per-variance half of
    the truncation bound in :func:`terms_needed`; −inf where E f² = 0 (f vanishes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(second > 0, 0.5 * np.log(T / np.where(second > 0, second, 1.0)),
                        -np.inf)


def terms_needed(log_rho: np.ndarray, ia: np.ndarray, ib: np.ndarray, U: np.ndarray,
                 tol: float, bins=K_BINS) -> np.ndarray:
    """The smallest K in ``bins`` whose truncation bound |ρ|^{K+1} √(T_K(a) T_K(b)) is
    ≤ tol·√(E f(a)² E f(b)²) (module docstring); −1 if none.

    In logarithms: (K+1)·log|ρ| + U_K(a) + U_K(b) ≤ log tol with U from
    :func:`log_tail_ratios` (rows: the bins), gathered per pair by ia, ib.
    """
    need = np.full(log_rho.shape, -1, dtype=int)
    log_tol = np.log(tol)
    for i in range(len(bins) - 1, -1, -1):
        k = bins[i]
        bound = (k + 1) * log_rho
        bound += U[i].take(ia)
        bound += U[i].take(ib)
        need[bound <= log_tol] = k
    return need


SMALL_SUM = 1 << 17      # pairs × terms up to which series_sum gathers all terms at once (1 MB)


def series_sum(H: np.ndarray, ia: np.ndarray, ib: np.ndarray, rho: np.ndarray, k: int,
               block: int = 8192, H2: np.ndarray | None = None) -> np.ndarray:
    """Σ_{n≤k} ρⁿ h_n(a) g_n(b) by Horner (docs/math.md §8), over blocks of pairs that stay
    in cache; ia, ib index the columns of H and of H2, the coefficients of the second
    function (default H2 = H).  Per term only the rows H[n], H2[n] (one value per distinct
    variance) are gathered; every pair sees the same elementwise operations in the same
    order, so its value does not depend on the block or batch it lands in."""
    H2 = H if H2 is None else H2
    if rho.size * (k + 1) <= SMALL_SUM:
        # few pairs: each term's products gathered at once, then Horner on them — the same
        # products and the same steps (acc·ρ + term), two calls per term instead of five
        terms = H[: k + 1].take(ia, axis=1)
        terms *= H2[: k + 1].take(ib, axis=1)
        acc = terms[k].copy()
        for n in range(k - 1, -1, -1):
            acc *= rho
            acc += terms[n]
        return acc
    out = np.empty(rho.size)
    for lo in range(0, rho.size, block):
        sl = slice(lo, lo + block)
        r, i, j = rho[sl], ia[sl], ib[sl]
        acc = H[k].take(i) * H2[k].take(j)
        term = np.empty_like(acc)
        for n in range(k - 1, -1, -1):
            acc *= r
            np.multiply(H[n].take(i), H2[n].take(j), out=term)
            acc += term
        out[sl] = acc
    return out


def chebyshev_sum(coef: np.ndarray, x: np.ndarray, block: int = 8192) -> np.ndarray:
    """Σ_k coef_k T_k(x) by Clenshaw, over blocks of points that stay in cache: the same
    elementwise steps as ``numpy.polynomial.chebyshev.chebval`` (so the same values, bit
    for bit), without a pass over the whole array per coefficient (docs/math.md §8)."""
    x = np.asarray(x, dtype=float)
    out = np.empty(x.shape)
    flat, res = x.reshape(-1), out.reshape(-1)
    if len(coef) < 3:
        return np.polynomial.chebyshev.chebval(x, coef)
    for lo in range(0, flat.size, block):
        xb = flat[lo:lo + block]
        x2 = 2 * xb
        c0 = np.full(xb.shape, coef[-2])
        c1 = np.full(xb.shape, coef[-1])
        buf = np.empty_like(xb)
        for i in range(3, len(coef) + 1):
            np.multiply(c1, x2, out=buf)
            buf += c0                           # the new c1 = c0 + c1·2x
            np.subtract(coef[-i], c1, out=c0)   # the new c0 = c_{−i} − c1
            c1, buf = buf, c1
        res[lo:lo + block] = c0 + c1 * xb
    return out

