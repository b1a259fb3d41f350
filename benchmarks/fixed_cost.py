"""Fixed costs: per-process set-up and the per-entry cost at small N (issue 14, item 3).

Every measurement is its own fresh process (``one MODE N SEED``), which imports ntkhgm
and then

- ``fresh``: times ``ntkhgm.kernel`` on data set A (rows from seed SEED): the process's
  first call, every set-up cost inside;
- ``warm``: first calls ``ntkhgm.kernel`` on another data set of the same size (seed
  SEED + 1000: its variances are not A's, so nothing of A is remembered), then times the
  call on A.

Depth-3 ReSin NTK, convention ``nt``, W_std 1, b_std 0, N Gaussian rows in d = 10; CPU
seconds of the process (``time.process_time``: on a shared virtual machine wall time
also counts time taken by other guests).  From these:

- set-up = fresh − warm on the same data: what a process's first call pays beyond the
  work itself (lazy imports, tables, first touches of memory);
- per-entry ratio = (T(200)/200²) / (T(1000)/1000²), from warm and from fresh processes.

``table`` runs ``--rounds`` rounds (each: fresh and warm at N = 200, then at N = 1000,
new seeds each round) and prints the rounds and their medians::

    python benchmarks/fixed_cost.py table --rounds 5 --out benchmarks/results/fixed_cost.json

Nothing here is run by the tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

KW = dict(activation="resin", depth=3, convention="nt", W_std=1.0, b_std=0.0)
SMALL, LARGE = 200, 1000


def one(mode: str, n: int, seed: int) -> float:
    """CPU seconds of the timed call (module docstring); run in a fresh process."""
    a = np.random.default_rng(seed).standard_normal((n, 10))
    b = np.random.default_rng(seed + 1000).standard_normal((n, 10))
    import ntkhgm

    if mode == "warm":
        ntkhgm.kernel(b, **KW)
    t = time.process_time()
    ntkhgm.kernel(a, **KW)
    return time.process_time() - t


def _fresh_process(mode: str, n: int, seed: int) -> float:
    out = subprocess.run([sys.executable, __file__, "one", mode, str(n), str(seed)],
                         check=True, capture_output=True, text=True, timeout=600)
    return float(out.stdout.split()[-1])


def table(rounds: int, seed: int) -> dict:
    rows = []
    for r in range(rounds):
        s = seed + r
        t = {f"{mode}_{n}": _fresh_process(mode, n, s)
             for n in (SMALL, LARGE) for mode in ("fresh", "warm")}
        scale = (LARGE / SMALL) ** 2
        row = {"seed": s, **t,
               "setup_200": t["fresh_200"] - t["warm_200"],
               "setup_1000": t["fresh_1000"] - t["warm_1000"],
               "ratio_warm": scale * t["warm_200"] / t["warm_1000"],
               "ratio_fresh": scale * t["fresh_200"] / t["fresh_1000"]}
        rows.append(row)
        print("seed {seed}: N = 200 fresh {fresh_200:.3f} warm {warm_200:.3f} set-up "
              "{setup_200:+.3f} | N = 1000 fresh {fresh_1000:.3f} warm {warm_1000:.3f} | "
              "per-entry ratio warm {ratio_warm:.2f} fresh {ratio_fresh:.2f}".format(**row),
              flush=True)
    medians = {k: float(np.median([row[k] for row in rows])) for k in rows[0] if k != "seed"}
    print("medians: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    return {"rows": rows, "medians": medians, "kernel": KW,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("one", help="one timed call in this process (prints CPU seconds)")
    o.add_argument("mode", choices=["fresh", "warm"])
    o.add_argument("n", type=int)
    o.add_argument("seed", type=int)
    t = sub.add_parser("table", help="rounds of fresh processes, and their medians")
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--seed", type=int, default=41)
    t.add_argument("--out", default=None)
    args = p.parse_args()
    if args.cmd == "one":
        print(f"{one(args.mode, args.n, args.seed):.4f}")
        return
    result = table(args.rounds, args.seed)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
