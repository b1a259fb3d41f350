"""Peer comparison: neural-tangents' ``stax.ElementwiseNumerical`` against ntkhgm.

neural-tangents is **not** a dependency of ntkhgm: it needs an older jax and
numpy < 2, so it lives in its own virtual environment, made by
``../shared/tools/nt_venv.sh`` (neural-tangents 0.6.5, jax/jaxlib 0.4.23,
numpy < 2, scipy < 1.14, ml-dtypes 0.3.2, tensorflow-cpu 2.15.1).  The halves run
in the two environments and exchange plain ``.npy`` files.

**The table of benchmarks/README.md** (issue 14)::

    NT_VENV=/work/nt-venv bash ../shared/tools/nt_venv.sh
    python benchmarks/neural_tangents_peer.py table --nt-python /work/nt-venv/bin/python \
        --sizes 200 1000 2000 --repeat 3 --out benchmarks/results/nt_peer.json

For each N and data set (the Gaussian rows of benchmarks/run.py, d = 10, and the
same rows on the unit sphere) it computes the depth-3 ReSin NTK (convention
``nt``, W_std 1, b_std 0) with neural-tangents (``ElementwiseNumerical`` degree 25,
jit, float64; timed on the second call, after compilation; the first call's time
is reported too) and with ntkhgm's default method, each in a fresh process (ntkhgm
timed from after ``import ntkhgm``: every set-up cost is inside), one after the
other, ``--repeat`` rounds of the two alternating (the best of each is reported, all
are kept), and reports the times, the difference between the two kernels and
ntkhgm's error against the ``quad`` method on 6 random rows.

**The diabetes comparison** (two steps):

1. In the neural-tangents venv (no ntkhgm needed)::

       /work/nt-venv/bin/python benchmarks/neural_tangents_peer.py run -o /tmp/nt-out

   computes the NTK of ``stax.serial(*[Dense(W, b), ElementwiseNumerical(resin, deg)] * L,
   Dense(W, b))`` on data/diabetes_{train,test}.csv (float64, jax_enable_x64),
   K(train, train) and K(test, train), timed, and writes them with their timings.

2. In ntkhgm's environment::

       python benchmarks/neural_tangents_peer.py compare /tmp/nt-out

   computes the same kernels with ``ntkhgm.kernel(..., convention="nt", W_std=W,
   b_std=b)`` by hgm (and gh at the same degree, to separate the rule's error
   from the implementation), and prints times and max relative differences
   (max|ΔK| / max|K_hgm|).

Nothing here is run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "data" / "diabetes_train.csv"
TEST = ROOT / "data" / "diabetes_test.csv"


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and the target (last column, ``progression``) of a shipped CSV."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return table[:, :-1], table[:, -1]


def _nt_kernel_fn(depth: int, W_std: float, b_std: float, degree: int):
    """neural-tangents' kernel function of the ReSin network (jit, float64)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from neural_tangents import stax

    def resin(x):
        return jnp.where(x > 0, jnp.sin(x), 0.0)

    def resin_prime(x):
        return jnp.where(x > 0, jnp.cos(x), 0.0)

    layers = []
    for _ in range(depth):
        layers += [stax.Dense(1, W_std=W_std, b_std=b_std),
                   stax.ElementwiseNumerical(resin, deg=degree, df=resin_prime)]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=W_std, b_std=b_std))
    return jax.jit(kernel_fn, static_argnames="get"), jax.__version__


def nt_kernel(args) -> None:
    """In the neural-tangents venv: the NTK of the rows in args.X, timed; JSON on stdout."""
    kernel_fn, version = _nt_kernel_fn(args.depth, args.W_std, args.b_std, args.degree)
    X = np.load(args.X)
    t0 = time.perf_counter()
    kernel_fn(X, None, get="ntk").block_until_ready()        # compiles for this shape
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    K = np.asarray(kernel_fn(X, None, get="ntk").block_until_ready())
    dt = time.perf_counter() - t0
    np.save(args.out, K)
    print(json.dumps(dict(first_call_s=first, time_s=dt, jax=version)))


def ntkhgm_kernel(args) -> None:
    """In ntkhgm's environment, a fresh process: the NTK of args.X timed from after import."""
    import ntkhgm

    X = np.load(args.X)
    t0 = time.perf_counter()
    K = ntkhgm.kernel(X, activation="resin", depth=args.depth, convention="nt",
                      W_std=args.W_std, b_std=args.b_std)
    dt = time.perf_counter() - t0
    np.save(args.out, K)
    print(json.dumps(dict(time_s=dt)))


def _child(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(args) -> None:
    """Both methods on each (N, data), one after the other (module docstring)."""
    import ntkhgm

    me = str(Path(__file__).resolve())
    common = ["--depth", str(args.depth), "--W-std", str(args.W_std),
              "--b-std", str(args.b_std)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            Xg = np.random.default_rng(args.seed + n).standard_normal((n, args.d))
            for data, X in (("gaussian", Xg),
                            ("sphere", Xg / np.linalg.norm(Xg, axis=1, keepdims=True))):
                xp, knt, kh = (os.path.join(tmp, f) for f in ("X.npy", "nt.npy", "h.npy"))
                np.save(xp, X)
                load = os.getloadavg()[0]
                # each side in fresh processes, alternating; the best of --repeat rounds
                # (timer noise on a shared machine only ever adds time)
                nts, ourss = [], []
                for _ in range(args.repeat):
                    nts.append(_child([args.nt_python, me, "nt-kernel", xp, knt, "--degree",
                                       str(args.degree)] + common))
                    ourss.append(_child([sys.executable, me, "ntkhgm-kernel", xp, kh] + common))
                nt = min(nts, key=lambda r: r["time_s"])
                ours = min(ourss, key=lambda r: r["time_s"])
                K_nt, K = np.load(knt), np.load(kh)
                scale = np.abs(K).max()
                off = ~np.eye(n, dtype=bool)
                rel = np.abs(K_nt - K) / np.abs(K)
                quad_err = None
                if args.quad_rows > 0:
                    idx = np.random.default_rng(n).choice(n, size=min(args.quad_rows, n),
                                                         replace=False)
                    Kq = ntkhgm.kernel(X[idx], activation="resin", depth=args.depth,
                                       convention="nt", W_std=args.W_std, b_std=args.b_std,
                                       method="quad")
                    quad_err = float(np.abs(K[np.ix_(idx, idx)] - Kq).max() / np.abs(Kq).max())
                row = dict(N=n, data=data, nt_s=nt["time_s"], nt_first_call_s=nt["first_call_s"],
                           ntkhgm_s=ours["time_s"], speedup=nt["time_s"] / ours["time_s"],
                           rounds=args.repeat, nt_all_s=[r["time_s"] for r in nts],
                           ntkhgm_all_s=[r["time_s"] for r in ourss],
                           nt_vs_ntkhgm_max=float(np.abs(K_nt - K).max() / scale),
                           nt_vs_ntkhgm_median_offdiag=float(np.median(rel[off])),
                           nt_vs_ntkhgm_median_diag=float(np.median(np.diag(rel))),
                           ntkhgm_vs_quad_sample=quad_err,
                           load_before=load, load_after=os.getloadavg()[0], jax=nt["jax"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


def run(args) -> None:
    kernel_fn, version = _nt_kernel_fn(args.depth, args.W_std, args.b_std, args.degree)
    Xtr, _ = load(TRAIN)
    Xte, _ = load(TEST)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    for name, (x1, x2) in {"K_train": (Xtr, None), "K_test": (Xte, Xtr)}.items():
        kernel_fn(x1, x2, get="ntk").block_until_ready()  # compile for these shapes
        t0 = time.perf_counter()
        K = np.asarray(kernel_fn(x1, x2, get="ntk").block_until_ready())
        times[name] = time.perf_counter() - t0
        np.save(out / f"{name}.npy", K)
    meta = dict(depth=args.depth, W_std=args.W_std, b_std=args.b_std, degree=args.degree,
                times_s=times, jax=version)
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))


def compare(args) -> None:
    import ntkhgm

    meta = json.loads((Path(args.dir) / "meta.json").read_text())
    Xtr, _ = load(TRAIN)
    Xte, _ = load(TEST)
    kw = dict(activation="resin", depth=meta["depth"], convention="nt",
              W_std=meta["W_std"], b_std=meta["b_std"])
    print(f"neural-tangents (jax {meta['jax']}), ElementwiseNumerical deg={meta['degree']}: "
          f"{meta['times_s']}")
    for name, (x1, x2) in {"K_train": (Xtr, None), "K_test": (Xte, Xtr)}.items():
        K_nt = np.load(Path(args.dir) / f"{name}.npy")
        res = {}
        for method, opts in (("hgm", {}), ("gh", {"degree": meta["degree"]})):
            t0 = time.perf_counter()
            res[method] = (ntkhgm.kernel(x1, x2, method=method, **kw, **opts),
                           time.perf_counter() - t0)
        ref = res["hgm"][0]
        scale = np.abs(ref).max()
        print(f"{name}: nt {meta['times_s'][name]:.3g} s, ntkhgm hgm {res['hgm'][1]:.3g} s, "
              f"ntkhgm gh {res['gh'][1]:.3g} s; max|K_nt − K_hgm|/max|K_hgm| = "
              f"{np.abs(K_nt - ref).max() / scale:.2e}, max|K_nt − K_gh| / max|K_hgm| = "
              f"{np.abs(K_nt - res['gh'][0]).max() / scale:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="the README table: both methods, time and error")
    t.add_argument("--nt-python", default=os.path.join(
        os.environ.get("NT_VENV", "/work/nt-venv"), "bin", "python"))
    t.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000])
    t.add_argument("--d", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quad-rows", type=int, default=6,
                   help="rows of the quad reference sample (its cost grows like rows²)")
    t.add_argument("--out", default=None)
    t.add_argument("--repeat", type=int, default=1,
                   help="rounds per side (fresh processes, alternating); the best is reported")
    for q, name in ((t, None), (sub.add_parser("nt-kernel"), "nt"),
                    (sub.add_parser("ntkhgm-kernel"), "ntkhgm")):
        if name is not None:
            q.add_argument("X")
            q.add_argument("out")
        q.add_argument("--depth", type=int, default=3)
        q.add_argument("--degree", type=int, default=25)
        q.add_argument("--W-std", dest="W_std", type=float, default=1.0)
        q.add_argument("--b-std", dest="b_std", type=float, default=0.0)
    r = sub.add_parser("run", help="in the neural-tangents venv: compute and save the kernels")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--depth", type=int, default=3)
    r.add_argument("--degree", type=int, default=25)
    r.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    r.add_argument("--b-std", dest="b_std", type=float, default=0.05)
    c = sub.add_parser("compare", help="in ntkhgm's environment: compare with ntkhgm")
    c.add_argument("dir")
    args = p.parse_args()
    {"run": run, "compare": compare, "table": table, "nt-kernel": nt_kernel,
     "ntkhgm-kernel": ntkhgm_kernel}[args.cmd](args)


if __name__ == "__main__":
    main()
