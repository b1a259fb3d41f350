"""Scale benchmark (issue 10): tiles, out-of-core output, peak RSS, Dask speed-up.

    python benchmarks/scale.py                      # everything, as in benchmarks/README.md
    python benchmarks/scale.py --sizes 1000 5000 --speedup-n 1000

Part 1: `ntkhgm kernel X.csv -a relu -L 3 -o K.npy` on N Gaussian rows (d = 10)
for each N, run as a child process: wall time, time per kernel entry (after the
start-up time of a 2-row run), peak RSS ("Maximum resident set size" of
``/usr/bin/time -v``; ``getrusage`` of the child without it), tiles; for the
largest N, the max relative difference between K's first 2000×2000 block and
the untiled in-memory kernel of those rows.

Part 3 (in process): ``depth=[1, 2, 3]`` against ``depth=3`` alone (issue 12:
one pass costs no more than the deepest kernel), and tiled against untiled
kernels for relu, erf, resin and gelu.

Part 2: `--jobs 1` against `--jobs 2` (a Dask LocalCluster of two worker
processes) for ReSin depth 3 at N = --speedup-n, in the same run, and the max
difference between the two outputs.

The tables are printed as Markdown and written to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout, not whatever ntkhgm is installed
    sys.path.insert(0, str(ROOT))
D = 10


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def data(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D))


TIME_V = Path("/usr/bin/time")


def run_kernel(csv: Path, out: Path, *args: str) -> dict:
    """One `ntkhgm kernel` child: wall seconds, peak RSS (kB, as `/usr/bin/time -v`
    reports it) and its summary line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [sys.executable, "-m", "ntkhgm", "kernel", str(csv), "-o", str(out), *args]
    if TIME_V.exists():
        cmd = [str(TIME_V), "-v", *cmd]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    if m:
        peak_kb = int(m.group(1))
    else:  # no /usr/bin/time: the same kernel counter, through getrusage (a new max only)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak_kb = peak if peak > before else None
    summary = [line for line in p.stderr.splitlines() if line.startswith("ntkhgm: wrote")]
    return {"wall_s": wall, "peak_rss_kb": peak_kb, "summary": summary[-1] if summary else ""}


def write_csv(X: np.ndarray, path: Path) -> None:
    np.savetxt(path, X, delimiter=",", fmt="%.17g")


def part_sizes(sizes: list[int], tmp: Path) -> list[dict]:
    import ntkhgm

    start = tmp / "two.csv"
    write_csv(data(2), start)
    startup = run_kernel(start, tmp / "two.npy", "-a", "relu", "-L", "3")["wall_s"]
    rows = []
    for n in sorted(sizes):  # increasing, so each child's peak RSS is a new maximum
        csv, out = tmp / f"x{n}.csv", tmp / f"K{n}.npy"
        X = data(n)
        write_csv(X, csv)
        r = run_kernel(csv, out, "-a", "relu", "-L", "3")
        tiles = re.search(r"(\d+) tiles of ≤(\d+)", r["summary"])
        row = {"N": n, "wall_s": round(r["wall_s"], 2),
               "ns_per_entry": round(1e9 * (r["wall_s"] - startup) / n ** 2, 1),
               "peak_rss_MB": None if r["peak_rss_kb"] is None
               else round(r["peak_rss_kb"] / 1024, 1),
               "tiles": int(tiles.group(1)) if tiles else None,
               "tile_edge": int(tiles.group(2)) if tiles else None}
        if n == max(sizes):
            m = min(n, 2000)
            K = np.load(out, mmap_mode="r")
            sub = np.array(K[:m, :m])
            ref = ntkhgm.kernel(X[:m], activation="relu", depth=3, tile=m)  # one tile
            row["subblock"] = m
            row["subblock_max_rel_diff"] = float(np.max(np.abs(sub - ref)) / np.max(np.abs(ref)))
            del K
        out.unlink()
        rows.append(row)
        print(row, flush=True)
    return rows, startup


def wait_for_quiet(max_wait: float, threshold: float = 20.0, polls: int = 2) -> dict:
    """Wait (at most ``max_wait`` s) until no other process uses more than ``threshold`` %
    CPU in ``polls`` consecutive 10-s polls; returns what was seen (for the record)."""
    import psutil

    me = os.getpid()
    t0, quiet, busy = time.time(), 0, []
    while time.time() - t0 < max_wait:
        procs = list(psutil.process_iter(["pid", "name"]))
        for q in procs:
            try:
                q.cpu_percent(None)
            except psutil.Error:
                pass
        time.sleep(10)
        busy = []
        for q in procs:
            try:
                if q.pid != me and q.cpu_percent(None) > threshold:
                    busy.append(q.info["name"])
            except psutil.Error:
                pass
        quiet = 0 if busy else quiet + 1
        if quiet >= polls:
            break
    return {"waited_s": round(time.time() - t0), "quiet": quiet >= polls, "busy": busy}


def part_speedup(n: int, tmp: Path, activation: str) -> dict:
    csv = tmp / f"s{n}.csv"
    write_csv(data(n, seed=1), csv)
    res = {"N": n, "activation": activation}
    outs = {}
    for jobs in (1, 2):
        out = tmp / f"S{jobs}.npy"
        res[f"jobs{jobs}_load_before"] = round(os.getloadavg()[0], 2)
        r = run_kernel(csv, out, "-a", activation, "-L", "3", "--jobs", str(jobs))
        res[f"jobs{jobs}_s"] = round(r["wall_s"], 2)
        res[f"jobs{jobs}_load_after"] = round(os.getloadavg()[0], 2)
        res[f"jobs{jobs}_summary"] = r["summary"]
        outs[jobs] = np.load(out)
        print(res, flush=True)
    res["speedup"] = round(res["jobs1_s"] / res["jobs2_s"], 2)
    res["max_rel_diff"] = float(np.max(np.abs(outs[1] - outs[2])) / np.max(np.abs(outs[1])))
    return res


REGRESS_CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np
from ntkhgm.regression import KernelRegressor
n, ridge, solver, tile = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = np.random.default_rng(4)
X = rng.standard_normal((n, 10))
y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(n)
kw = ({"method_options": {"tile": tile}} if solver == "old"  # reaches ntkhgm.kernel
      else {"solver": solver, "tile": tile})
model = KernelRegressor("relu", 3, ridge=ridge if ridge == "auto" else float(ridge), **kw)
import ntkhgm.regression as reg
solve = []  # (traced before, peak during) of each solver step, the kernel already held
def traced(f):
    def g(*a, **k):
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            return f(*a, **k)
        finally:
            solve.append((before, tracemalloc.get_traced_memory()[1]))
    return g
for name in ("factor_kernel_system", "_loo_search", "choose_ridge"):
    if hasattr(reg, name) and not (name == "choose_ridge" and hasattr(reg, "_loo_search")):
        setattr(reg, name, traced(getattr(reg, name)))
tracemalloc.start()
t0 = time.perf_counter()
model.fit(X, y)
wall = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"fit_s": wall, "traced_peak_B": peak, "ridge": model.ridge_, "solve": solve,
                  "cg_iterations": getattr(model, "cg_iterations_", None),
                  "alpha": model.alpha_[:5].tolist()}))
"""


def part_regress(n: int, tile: int, base: str | None, only: list[str] | None = None
                 ) -> list[dict]:
    """`KernelRegressor(relu, depth 3).fit` on N Gaussian rows (d = 10) in a child process
    per solver: tracemalloc peak of the fit and the child's peak RSS (`/usr/bin/time -v`),
    against K's size 8N²; ``base``: also a checkout without the in-place solvers."""
    runs = [("0.1", "direct"), ("auto", "direct"), ("0.1", "cg")]
    if base:
        runs += [("0.1", "old"), ("auto", "old")]
    if only:
        runs = [tuple(r.split(":")) for r in only]
    rows = []
    for ridge, solver in runs:
        cmd = [sys.executable, "-c", REGRESS_CHILD, str(n), ridge, solver, str(tile)]
        if TIME_V.exists():
            cmd = [str(TIME_V), "-v", *cmd]
        env = _env()
        if solver == "old":
            env["PYTHONPATH"] = base
        # cwd: not this checkout, whose ntkhgm `python -c` would import before PYTHONPATH's
        p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           cwd=tempfile.gettempdir())
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd[-5:])}\n{p.stderr[-2000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        k_mb = 8 * n * n / 1e6
        row = {"N": n, "ridge": ridge, "solver": solver, "fit_s": round(r["fit_s"], 1),
               "K_MB": round(k_mb), "traced_peak_MB": round(r["traced_peak_B"] / 1e6),
               "traced_peak_over_K": round(r["traced_peak_B"] / 1e6 / k_mb, 2),
               "peak_rss_MB": round(int(m.group(1)) / 1024) if m else None,
               # the solver steps: held on entry (K), extra at their peak
               "solve_held_MB": [round(b / 1e6) for b, _ in r["solve"]],
               "solve_extra_MB": [round((pk - b) / 1e6) for b, pk in r["solve"]],
               "ridge_chosen": r["ridge"], "cg_iterations": r["cg_iterations"],
               "alpha_head": r["alpha"]}
        rows.append(row)
        print(row, flush=True)
    return rows


def part_depths_and_tiles(n: int) -> dict:
    """In-process: depth=[1,2,3] against depth=3 alone (best of 3), and tiled (edge n/5)
    against untiled max relative differences, for four activations."""
    import ntkhgm

    X = data(n, seed=2)
    out = {"N": n, "depth_list": {}, "tiled_vs_untiled": {}}
    for act in ("relu", "erf", "resin", "gelu"):
        ntkhgm.kernel(X[:20], activation=act, depth=3)  # evaluator set-up outside the timing
        times = {}
        for key, depth in (("depth3", 3), ("depths123", [1, 2, 3])):
            best = np.inf
            for _ in range(3):
                t0 = time.perf_counter()
                ntkhgm.kernel(X, activation=act, depth=depth)
                best = min(best, time.perf_counter() - t0)
            times[key] = round(best, 3)
        times["ratio"] = round(times["depths123"] / times["depth3"], 3)
        out["depth_list"][act] = times
        full = ntkhgm.kernel(X, activation=act, depth=3)
        tiled = ntkhgm.kernel(X, activation=act, depth=3, tile=max(1, n // 5))
        out["tiled_vs_untiled"][act] = float(np.max(np.abs(tiled - full))
                                             / np.max(np.abs(full)))
        print(act, times, out["tiled_vs_untiled"][act], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 20000])
    ap.add_argument("--speedup-n", type=int, default=4000)
    ap.add_argument("--speedup-activation", default="resin")
    ap.add_argument("--skip-speedup", action="store_true")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before the speed-up part, wait up to this long for no other "
                         "process above 20 %% CPU in two 10-s polls (a shared machine)")
    ap.add_argument("--depths-n", type=int, default=500,
                    help="N of the in-process depth-list and tiled-vs-untiled part (0: skip)")
    ap.add_argument("--regress-n", type=int, default=0,
                    help="N of the regression memory part (0: skip; README: 5000)")
    ap.add_argument("--regress-tile", type=int, default=500)
    ap.add_argument("--regress-base", metavar="PATH",
                    help="also run the regression part on this checkout (PYTHONPATH), e.g. "
                         "one from before the in-place solvers")
    ap.add_argument("--regress-runs", nargs="*", metavar="RIDGE:SOLVER",
                    help="only these runs of the regression part, e.g. 0.1:cg auto:direct")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    args = ap.parse_args()
    # a private cache for this process and its children: nothing lands in ~/.cache
    os.environ.setdefault("NTKHGM_CACHE_DIR", tempfile.mkdtemp(prefix="ntkhgm-bench-cache-"))
    with tempfile.TemporaryDirectory(prefix="ntkhgm-scale-") as tmp:
        tmp = Path(tmp)
        sizes, startup = part_sizes(args.sizes, tmp) if args.sizes else ([], 0.0)
        speed = None
        if not args.skip_speedup:
            seen = wait_for_quiet(args.wait_quiet) if args.wait_quiet else None
            speed = part_speedup(args.speedup_n, tmp, args.speedup_activation)
            speed["quiet_window"] = seen
    extra = part_depths_and_tiles(args.depths_n) if args.depths_n else None
    regress = (part_regress(args.regress_n, args.regress_tile, args.regress_base,
                            args.regress_runs) if args.regress_n else None)
    load = os.getloadavg()
    result = {"sizes": sizes, "startup_s": round(startup, 2), "speedup": speed,
              "depths_and_tiles": extra, "regress": regress,
              "cpus": os.cpu_count(), "loadavg_after": [round(x, 2) for x in load],
              "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("\n| N | wall (s) | ns per entry | peak RSS (MB) | tiles | tile edge |")
    print("|---|---|---|---|---|---|")
    for r in sizes:
        print(f"| {r['N']} | {r['wall_s']} | {r['ns_per_entry']} | {r['peak_rss_MB']} | "
              f"{r['tiles']} | {r['tile_edge']} |")
    for r in sizes:
        if "subblock" in r:
            print(f"\nK[:{r['subblock']}, :{r['subblock']}] of N = {r['N']} vs untiled: "
                  f"max rel diff {r['subblock_max_rel_diff']:.1e}")
    if speed:
        print(f"\n{speed['activation']} N = {speed['N']}: --jobs 1 {speed['jobs1_s']} s, "
              f"--jobs 2 {speed['jobs2_s']} s, speed-up {speed['speedup']}×, "
              f"max rel diff {speed['max_rel_diff']:.1e}; 1-minute load average "
              f"{speed['jobs1_load_before']} → {speed['jobs1_load_after']} (jobs 1), "
              f"{speed['jobs2_load_before']} → {speed['jobs2_load_after']} (jobs 2) on "
              f"{os.cpu_count()} cores")
    if extra:
        print(f"\nN = {extra['N']} in process | depth 3 (s) | depth [1,2,3] (s) | ratio | "
              "tiled (edge N/5) vs untiled, max rel diff |")
        print("|---|---|---|---|---|")
        for act, t in extra["depth_list"].items():
            print(f"| {act} | {t['depth3']} | {t['depths123']} | {t['ratio']} | "
                  f"{extra['tiled_vs_untiled'][act]:.1e} |")
    if regress:
        print("\n| N | ridge | solver | fit (s) | K (MB) | traced peak (MB) | peak / K | "
              "solver step: held + extra (MB) | peak RSS (MB) | cg iterations |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in regress:
            step = ", ".join(f"{h} + {e}" for h, e in zip(r["solve_held_MB"],
                                                          r["solve_extra_MB"], strict=True))
            print(f"| {r['N']} | {r['ridge']} | {r['solver']} | {r['fit_s']} | {r['K_MB']} | "
                  f"{r['traced_peak_MB']} | {r['traced_peak_over_K']} | {step} | "
                  f"{r['peak_rss_MB']} | {r['cg_iterations'] or ''} |")
    print(f"(start-up {startup:.2f} s subtracted per run; load average after: {load})")


if __name__ == "__main__":
    main()
