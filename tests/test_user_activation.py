"""A user activation end to end: annihilator + σ expression → Pfaffian (Singular) → kernel."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

import ntkhgm
from ntkhgm.cli import main


def test_user_activation_kernel_matches_the_catalog_closed_form(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(tmp_path))
    runner = CliRunner()
    common = ["--annihilator", "u*du-2", "--derivative-annihilator", "u*du-1",
              "--name", "myrelu2", "--sigma", "u^2*step(u)", "--dsigma", "2*u*step(u)",
              "--quiet"]
    for extra in ([], ["--derivative"]):
        res = runner.invoke(main, ["pfaffian", *common, *extra])
        assert res.exit_code == 0, res.output
    a, b, c = np.array([2.0, 0.5]), np.array([3.0, 4.0]), np.array([1.2, -1.3])
    for derivative in (False, True):
        got = ntkhgm.dual("myrelu2", a, b, c, derivative=derivative, method="hgm")
        exact = ntkhgm.dual("relu2", a, b, c, derivative=derivative, method="closed")
        np.testing.assert_allclose(got, exact, rtol=1e-12)
    X = np.random.default_rng(0).standard_normal((6, 3))
    K = ntkhgm.kernel(X, activation="myrelu2", depth=2)
    Kc = ntkhgm.kernel(X, activation="relu2", depth=2, method="closed")
    assert np.max(np.abs(K - Kc)) <= 1e-12 * np.abs(Kc).max()


def test_unknown_activation_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(tmp_path))
    from ntkhgm.errors import UnknownActivationError

    try:
        ntkhgm.dual("nosuchact", 1.0, 1.0, 0.0)
    except UnknownActivationError as exc:
        assert "unknown activation 'nosuchact'" in str(exc)
    else:
        raise AssertionError("no error")
