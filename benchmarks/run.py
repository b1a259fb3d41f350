"""NTK benchmark: hgm versus Gauss–Hermite (and closed forms for ReLU), issue 4.

Depth-3 NTK (convention arora) on N Gaussian points in d = 10, and on the same
points normalised to the unit sphere.  Reports wall time, peak traced memory
(tracemalloc: numpy allocations) and the max relative error of each method
against the best reference of the same run (closed where it exists, else hgm
cross-checked with quad on a sample of entries).  Times are ratios within one
run, on one machine, measured without tracemalloc; the peak memory of hgm and
closed comes from a second, traced call (gh's is not measured: a second gh run
would double the benchmark's time).

    python benchmarks/run.py [--sizes 200 1000] [--activations resin relu] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

import ntkhgm


def _timed(fn, memory: bool):
    """(result, seconds, peak traced bytes or None).

    Timing runs untraced (tracemalloc slows numpy-heavy code unevenly); with
    ``memory`` the call is repeated under tracemalloc for the peak.
    """
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
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


def run(sizes, activations, depth=3, d=10, seed=0):
    rows = []
    rng = np.random.default_rng(seed)
    for n in sizes:
        Xg = np.random.default_rng(seed + n).standard_normal((n, d))
        Xs = Xg / np.linalg.norm(Xg, axis=1, keepdims=True)
        for data, X in (("gaussian", Xg), ("sphere", Xs)):
            for act in activations:
                methods = ["hgm", "gh"] + (["closed"] if act == "relu" else [])
                results = {}
                for m in methods:
                    K, dt, peak = _timed(lambda m=m, X=X, act=act: ntkhgm.kernel(
                        X, activation=act, depth=depth, method=m), memory=m != "gh")
                    results[m] = (K, dt, peak)
                ref = results["closed"][0] if "closed" in results else results["hgm"][0]
                scale = np.abs(ref).max()
                for m, (K, dt, peak) in results.items():
                    err = float(np.max(np.abs(K - ref)) / scale)
                    rows.append(dict(N=n, data=data, activation=act, method=m, time_s=dt,
                                     peak_MB=None if peak is None else peak / 2**20,
                                     max_rel_err=err,
                                     speedup_vs_gh=results["gh"][1] / dt))
                if "closed" not in results:
                    rows[-len(methods)]["hgm_vs_quad_sample"] = _sample_error(
                        results["hgm"][0], X, act, depth, rng)
                for r in rows[-len(methods):]:
                    print(json.dumps(r), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000])
    p.add_argument("--activations", nargs="+", default=["resin", "relu"])
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = run(args.sizes, args.activations, depth=args.depth)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
