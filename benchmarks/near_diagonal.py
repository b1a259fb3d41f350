"""Issue 9's timing condition: clustered data against spread data and Gauss–Hermite, same run.

Depth-3 NTK (convention ``arora``, method ``auto``) of N = 200 points in d = 10: spread
points ~ N(0, I) against points in tight clusters (``--clusters`` centres ~ N(0, I), noise
0.05·N(0, I): about 10 % of the pairs have ρ > 0.985 with 10 clusters), and Gauss–Hermite
degree 25 on the clustered points.  Every kernel is computed ``--repeat`` times, the least
CPU time (``time.process_time``: other load on the machine only ever adds) is reported;
one warm-up call per method first (per-process set-up: README, "Speed").  ``--methods``:
``auto`` (GELU: its closed form) and ``series+hgm`` (the holonomic route, for GELU too).

    python benchmarks/near_diagonal.py [--activations resin gelu] [--clusters 10 20]
                                       [--methods auto series+hgm] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import ntkhgm
import ntkhgm.duals


def clustered(n: int, clusters: int, d: int = 10, noise: float = 0.05, seed: int = 1):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    return centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d))


def _cpu(X, act: str, method: str, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.process_time()
        ntkhgm.kernel(X, activation=act, depth=3, method=method)
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activations", nargs="+", default=["resin", "gelu"])
    p.add_argument("--clusters", type=int, nargs="+", default=[10, 20])
    p.add_argument("--methods", nargs="+", default=["auto", "series+hgm"])
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="rounds of the three timings")
    p.add_argument("--repeat", type=int, default=2, help="calls per timing (least taken)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    spread = np.random.default_rng(2).standard_normal((args.n, 10))
    warm = clustered(6, 3, seed=3)
    rows = []
    for act in args.activations:
        for m in args.methods + ["gh"]:
            ntkhgm.kernel(warm, activation=act, depth=3, method=m)
        for k in args.clusters:
            X = clustered(args.n, k)
            for r in range(args.rounds):
                h = _cpu(X, act, "gh", args.repeat)
                for m in args.methods:
                    g = _cpu(spread, act, m, args.repeat)
                    c = _cpu(X, act, m, args.repeat)
                    row = dict(activation=act, method=m,
                               resolved=ntkhgm.duals.resolve_method(act, method=m),
                               clusters=k, round=r, spread_s=g, clustered_s=c,
                               clustered_gh25_s=h, clustered_over_spread=c / g,
                               clustered_over_gh=c / h)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
