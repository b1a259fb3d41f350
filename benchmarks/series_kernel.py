"""The per-pair kernel of the Mehler series (docs/math.md §8): numpy over cache-sized blocks
against a numba loop, if numba is importable (it is not a dependency; issue 14).

    pip install --target /tmp/nb numba && PYTHONPATH=/tmp/nb python benchmarks/series_kernel.py

Times Σ_{n≤k} ρⁿ h_n(a_i) h_n(b_j) on 500 000 random pairs of 1000 variances, k = 64,
and checks the two agree bit for bit.
"""

from __future__ import annotations

import time

import numpy as np

from ntkhgm.numeric.hermite_series import series_sum


def main() -> None:
    rng = np.random.default_rng(0)
    V, P, k = 1000, 500_000, 64
    H = 0.1 * rng.standard_normal((257, V))
    ia, ib = rng.integers(0, V, P), rng.integers(0, V, P)
    rho = rng.uniform(-0.5, 0.5, P)
    t0 = time.perf_counter()
    ref = series_sum(H, ia, ib, rho, k)
    print(f"numpy, blocks of 8192 pairs: {time.perf_counter() - t0:.3f} s")
    try:
        t0 = time.perf_counter()
        import numba
    except ImportError:
        print("numba not importable: nothing to compare")
        return
    print(f"import numba: {time.perf_counter() - t0:.2f} s")

    @numba.njit
    def horner(HT, ia, ib, rho, k, out):
        for p in range(rho.size):
            i, j, r = ia[p], ib[p], rho[p]
            acc = HT[i, k] * HT[j, k]
            for n in range(k - 1, -1, -1):
                acc = acc * r + HT[i, n] * HT[j, n]
            out[p] = acc
        return out

    HT = np.ascontiguousarray(H.T)
    t0 = time.perf_counter()
    horner(HT, ia, ib, rho, k, np.empty(P))
    print(f"numba first call (compiles): {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    out = horner(HT, ia, ib, rho, k, np.empty(P))
    print(f"numba: {time.perf_counter() - t0:.3f} s; identical: {np.array_equal(out, ref)}")


if __name__ == "__main__":
    main()
