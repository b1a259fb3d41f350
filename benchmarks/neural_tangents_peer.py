"""Optional peer comparison: neural-tangents' ``stax.ElementwiseNumerical`` against ntkhgm.

neural-tangents is **not** a dependency of ntkhgm: it needs an older jax and
numpy < 2, so it lives in its own virtual environment.  This script has two
halves, run in the two environments; they exchange plain ``.npy`` files.

1. In a separate venv with neural-tangents (no ntkhgm needed)::

       python -m venv /tmp/nt-venv
       /tmp/nt-venv/bin/pip install "numpy<2" "jax[cpu]" "neural-tangents==0.6.5"
       /tmp/nt-venv/bin/python benchmarks/neural_tangents_peer.py run -o /tmp/nt-out

   (neural-tangents 0.6.5 declares jax>=0.4.16, frozendict, tensorflow>=2.15 and
   tf2jax; ``import neural_tangents`` imports tensorflow.  Its newest release
   predates numpy 2 and the jax versions that removed APIs it uses, so pin an
   older jax if the import fails.)
   computes the NTK of ``stax.serial(*[Dense(W, b), ElementwiseNumerical(resin, deg)] * L,
   Dense(W, b))`` on data/diabetes_{train,test}.csv (float64, jax_enable_x64),
   K(train, train) and K(test, train), timed, and writes them with their timings.

2. In ntkhgm's environment::

       python benchmarks/neural_tangents_peer.py compare /tmp/nt-out

   computes the same kernels with ``ntkhgm.kernel(..., convention="nt", W_std=W,
   b_std=b)`` by hgm (and gh at the same degree, to separate the rule's error
   from the implementation), and prints times and max relative differences
   (max|ΔK| / max|K_hgm|).

Status: written against neural-tangents 0.6.5's source (``ElementwiseNumerical(fn,
deg, df)`` uses ``scipy.special.roots_hermite(deg)``); it has **not** been run in
this project yet — installing tensorflow (~0.5 GB) was out of the session's
scope.  Nothing here is run by the tests.
"""

from __future__ import annotations

import argparse
import json
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


def run(args) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from neural_tangents import stax

    def resin(x):
        return jnp.where(x > 0, jnp.sin(x), 0.0)

    def resin_prime(x):
        return jnp.where(x > 0, jnp.cos(x), 0.0)

    layers = []
    for _ in range(args.depth):
        layers += [stax.Dense(1, W_std=args.W_std, b_std=args.b_std),
                   stax.ElementwiseNumerical(resin, deg=args.degree, df=resin_prime)]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=args.W_std, b_std=args.b_std))
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
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
                times_s=times, jax=jax.__version__)
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
    r = sub.add_parser("run", help="in the neural-tangents venv: compute and save the kernels")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--depth", type=int, default=3)
    r.add_argument("--degree", type=int, default=25)
    r.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    r.add_argument("--b-std", dest="b_std", type=float, default=0.05)
    c = sub.add_parser("compare", help="in ntkhgm's environment: compare with ntkhgm")
    c.add_argument("dir")
    args = p.parse_args()
    (run if args.cmd == "run" else compare)(args)


if __name__ == "__main__":
    main()
