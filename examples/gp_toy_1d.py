"""Gaussian-process posterior of an infinitely wide network on a 1-D toy problem.

    python examples/gp_toy_1d.py [-o gp_toy_1d.png] [--activation relu] [--depth 3]

Fits y = sin(3x) + noise (20 points on [−2, −0.5] ∪ [0.5, 2]) with
ntkhgm's KernelRegressor in convention ``nt`` (W_std = 1.5, b_std = 0.5: in one
dimension the bias keeps the inputs from being all collinear), ridge by
leave-one-out, and plots the posterior mean with ±2σ bands for the NNGP (the
Bayesian posterior of the network's prior) and the NTK-GP (the infinitely
wide network trained by gradient descent to convergence, neural-tangents'
definition).  Needs matplotlib (``pip install "ntkhgm[plot]"``).
"""

from __future__ import annotations

import argparse

import numpy as np

from ntkhgm.regression import KernelRegressor


def toy_data(seed: int = 0, n: int = 20, noise: float = 0.1):
    """x in [−2, −0.5] ∪ [0.5, 2] (a gap in the middle, to show the growing σ), y = sin 3x + ε."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(-2.0, -0.5, n // 2), rng.uniform(0.5, 2.0, n - n // 2)])
    y = np.sin(3 * x) + noise * rng.standard_normal(n)
    return x[:, None], y


def posteriors(activation: str = "relu", depth: int = 3, n_grid: int = 200) -> dict:
    """{kind: (grid, mean, std, fitted model)} for kind nngp and ntk."""
    X, y = toy_data()
    grid = np.linspace(-3.0, 3.0, n_grid)[:, None]
    out = {}
    for kind in ("nngp", "ntk"):
        model = KernelRegressor(activation=activation, depth=depth, kind=kind,
                                convention="nt", W_std=1.5, b_std=0.5).fit(X, y)
        mean, std = model.predict(grid, return_std=True)
        out[kind] = (grid[:, 0], mean, std, model)
    out["data"] = (X[:, 0], y)
    return out


def plot(result: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = result["data"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, kind, name in zip(axes, ("nngp", "ntk"), ("NNGP posterior", "NTK-GP (trained net)"),
                              strict=True):
        g, m, s, model = result[kind]
        ax.fill_between(g, m - 2 * s, m + 2 * s, color="C0", alpha=0.25, label="±2σ")
        ax.plot(g, m, color="C0", label="posterior mean")
        ax.plot(g, np.sin(3 * g), "k--", lw=0.8, label="sin 3x")
        ax.plot(x, y, "o", color="C3", ms=4, label="training data")
        ax.set_title(f"{name}, λ = {model.ridge_:.2g} (LOO)")
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="gp_toy_1d.png", help="PNG file to write")
    p.add_argument("--activation", default="relu")
    p.add_argument("--depth", type=int, default=3)
    args = p.parse_args(argv)
    result = posteriors(args.activation, args.depth)
    plot(result, args.output, f"{args.activation}, depth {args.depth}, convention nt "
                              "(W_std 1.5, b_std 0.5)")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
