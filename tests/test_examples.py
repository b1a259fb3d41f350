"""examples/gp_toy_1d.py: runs, writes a PNG, and its bands widen away from the data."""

from __future__ import annotations

import importlib.util

import numpy as np
from conftest import ROOT


def _load():
    spec = importlib.util.spec_from_file_location("gp_toy_1d", ROOT / "examples" / "gp_toy_1d.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gp_toy_plot(tmp_path):
    mod = _load()
    out = tmp_path / "toy.png"
    mod.main(["-o", str(out), "--depth", "2"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = mod.posteriors("relu", 2, n_grid=41)
    X, y = mod.toy_data()
    for kind in ("nngp", "ntk"):
        g, mean, std, model = res[kind]
        # far from the data the posterior is wider than at a training point
        at_train = model.predict(X[:1], return_std=True)[1][0]
        assert std[0] > 10 * at_train and np.all(std >= 0)
        assert model.kind == kind and np.isfinite(model.loo_error_)
