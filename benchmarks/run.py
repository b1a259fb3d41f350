"""NTK benchmark: ntkhgm's ``auto`` versus Gauss–Hermite (and closed forms for ReLU).

Depth-3 NTK (convention arora) on N points in d = 10 of four kinds:

- ``gaussian``: N(0, I);
- ``sphere``: the same points normalised to the unit sphere;
- ``clustered``: 20 cluster centres ~ N(0, I), each point a centre plus noise 0.05·N(0, I)
  (about 5 % of the pairs have ρ > 0.985: the near-diagonal region, issue 9);
- ``deep``: the Gaussian points, depth 10 instead of 3.

Reports wall time, peak traced memory (tracemalloc: numpy allocations) and the
max relative error of each method against the best reference of the same run
(closed where it exists, else auto cross-checked with quad on a sample of
entries).  Times are ratios within one run, on one machine, measured without
tracemalloc; the peak memory of auto and closed comes from a second, traced call
(gh's is not measured: a second gh run would double the benchmark's time).

    python benchmarks/run.py [--sizes 200 1000] [--activations resin gelu relu]
                             [--data gaussian sphere clustered deep] [--out FILE]
                             [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

import ntkhgm


def _timed(fn, memory: bool, repeat: int = 1):
    """(result, seconds, peak traced bytes or None).

    Timing runs untraced (tracemalloc slows numpy-heavy code unevenly), the least
    of ``repeat`` runs (as timeit: other load on the machine only ever adds); with
    ``memory`` the call is repeated under tracemalloc for the peak.
    """
    dt = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        dt = min(dt, time.perf_counter() - t0)
    peak = None
    if memory:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out, dt, peak


def _sample_error(K, X, act, depth, rng, m=12):
    """Max error of K against the quad method on m random entries (a small reference)."""
    idx = rng.choice(K.shape[0], size=min(m, K.shape[0]), replace=False)
    Kq = ntkhgm.kernel(X[idx], activation=act, depth=depth, method="quad")
    return float(np.max(np.abs(K[np.ix_(idx, idx)] - Kq) / np.abs(Kq).max()))


def clustered_points(n: int, d: int = 10, clusters: int = 20, noise: float = 0.05,
                     seed: int = 0) -> np.ndarray:
    """n points around ``clusters`` centres ~ N(0, I_d), noise·N(0, I_d) each (issue 9)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    return centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d))


DATA = ("gaussian", "sphere", "clustered", "deep")


def run(sizes, activations, depth=3, d=10, seed=0, data_kinds=DATA, deep_depth=10, repeat=1):
    rows = []
    rng = np.random.default_rng(seed)
    for n in sizes:
        Xg = np.random.default_rng(seed + n).standard_normal((n, d))
        sets = {"gaussian": (Xg, depth),
                "sphere": (Xg / np.linalg.norm(Xg, axis=1, keepdims=True), depth),
                "clustered": (clustered_points(n, d, seed=seed + n), depth),
                "deep": (Xg, deep_depth)}
        warm = clustered_points(24, d, seed=seed)
        for data in data_kinds:
            X, L = sets[data]
            for act in activations:
                # per-process set-up (exact systems, tables) is paid once, untimed: every row
                # then measures the evaluation itself (first-use costs: README, "Speed")
                for m in ["auto", "gh"]:
                    ntkhgm.kernel(warm, activation=act, depth=L, method=m)
                methods = ["auto", "gh"] + (["closed"] if act == "relu" else [])
                results = {}
                for m in methods:
                    K, dt, peak = _timed(lambda m=m, X=X, act=act, L=L: ntkhgm.kernel(
                        X, activation=act, depth=L, method=m), memory=m != "gh", repeat=repeat)
                    results[m] = (K, dt, peak)
                ref = results["closed"][0] if "closed" in results else results["auto"][0]
                scale = np.abs(ref).max()
                for m, (K, dt, peak) in results.items():
                    err = float(np.max(np.abs(K - ref)) / scale)
                    rows.append(dict(N=n, data=data, depth=L, activation=act, method=m,
                                     time_s=dt,
                                     peak_MB=None if peak is None else peak / 2**20,
                                     max_rel_err=err,
                                     speedup_vs_gh=results["gh"][1] / dt))
                if "closed" not in results:
                    rows[-len(methods)]["auto_vs_quad_sample"] = _sample_error(
                        results["auto"][0], X, act, L, rng)
                for r in rows[-len(methods):]:
                    print(json.dumps(r), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000])
    p.add_argument("--activations", nargs="+", default=["resin", "gelu", "relu"])
    p.add_argument("--data", nargs="+", default=list(DATA), choices=DATA)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--repeat", type=int, default=1,
                   help="time each call this many times and report the least")
    args = p.parse_args()
    rows = run(args.sizes, args.activations, depth=args.depth, data_kinds=args.data,
               repeat=args.repeat)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
