"""User activations (issue 11): end to end with Singular, listing, every command, reserved
catalog names; click's usage errors and the header warning (one stderr line each)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import ntkhgm
from ntkhgm.cli import main


@pytest.mark.cas
def test_user_activation_kernel_matches_the_catalog_closed_form():
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
        # relative to the Cauchy–Schwarz scale (README, "Error normalisation"): at c = −1.3
        # the value is 9e-4 of the scale, so a plain relative error would measure rounding
        scale = np.sqrt(ntkhgm.dual("relu2", a, a, a, derivative=derivative, method="closed")
                        * ntkhgm.dual("relu2", b, b, b, derivative=derivative, method="closed"))
        assert np.all(np.abs(got - exact) <= 1e-14 * scale), (got, exact)
    X = np.random.default_rng(0).standard_normal((6, 3))
    K = ntkhgm.kernel(X, activation="myrelu2", depth=2)
    Kc = ntkhgm.kernel(X, activation="relu2", depth=2, method="closed")
    assert np.max(np.abs(K - Kc)) <= 1e-12 * np.abs(Kc).max()


def test_unknown_activation_is_a_clear_error():
    from ntkhgm.errors import UnknownActivationError

    try:
        ntkhgm.dual("nosuchact", 1.0, 1.0, 0.0)
    except UnknownActivationError as exc:
        assert "unknown activation 'nosuchact'" in str(exc)
    else:
        raise AssertionError("no error")


# --------------------------------------------------------------- user activations, no CAS

def _store_user(name: str, catalog: str, expressions: tuple[str, str]) -> None:
    """A user activation made of a shipped catalog system under a new name (no CAS)."""
    import dataclasses

    from ntkhgm.algebra.cache import load_pfaffian, store_pfaffian
    from ntkhgm.algebra.sigma_expr import parse_sigma

    for derivative, expr in zip((False, True), expressions, strict=True):
        system = load_pfaffian(catalog, derivative)
        store_pfaffian(dataclasses.replace(system, activation=name,
                                           expression=parse_sigma(expr).text))


def _run(args):
    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:
        runner = CliRunner()
    return runner.invoke(main, args, env={"NO_COLOR": "1"})


def test_user_activation_is_listed_and_accepted_everywhere(isolated_cache, tmp_path):
    _store_user("myrelu2", "relu2", ("u^2*step(u)", "2*u*step(u)"))
    res = _run(["activations"])
    assert res.exit_code == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "│ myrelu2 " in ln)
    assert "yes/yes" in line and "user" in line and "step" in line
    res = _run(["pfaffian", "--activation", "myrelu2", "--derivative", "-q"])
    assert res.exit_code == 0, res.stderr
    assert '"annihilator": "u*du-1"' in res.stdout
    X = np.random.default_rng(1).standard_normal((7, 3))
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",")
    out = tmp_path / "K.npy"
    res = _run(["kernel", str(data), "-a", "myrelu2", "-L", "2", "-m", "hgm", "-o", str(out),
                "-q"])
    assert res.exit_code == 0, res.stderr
    Kc = ntkhgm.kernel(X, activation="relu2", depth=2, method="closed")
    assert np.max(np.abs(np.load(out) - Kc)) <= 1e-12 * np.abs(Kc).max()
    res = _run(["dual", "-a", "myrelu2", "--a", "1", "--b", "2", "--c", "0.5"])
    assert res.exit_code == 0, res.stderr
    assert ntkhgm.available_methods("myrelu2")[:2] == ["series+hgm", "hgm"]


def test_a_user_system_never_shadows_the_catalog(isolated_cache):
    # an older version let `--name relu` shadow the catalog; such a file is now ignored
    import dataclasses

    from ntkhgm.algebra.cache import load_pfaffian
    from ntkhgm.algebra.pfaffian import PfaffianSystem

    fake = dataclasses.replace(load_pfaffian("relu2", False), activation="relu")
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "relu.json").write_text(fake.to_json())
    PfaffianSystem.from_json((isolated_cache / "relu.json").read_text())  # a valid file
    a, b, c = np.array([1.0, 2.0]), np.array([1.5, 0.5]), np.array([0.3, -0.9])
    got = ntkhgm.dual("relu", a, b, c, method="hgm")
    np.testing.assert_allclose(got, ntkhgm.dual("relu", a, b, c, method="closed"), rtol=1e-12)
    rows = _run(["activations"]).stdout.splitlines()
    assert not any("│ user " in ln for ln in rows)  # no user activation: relu.json is not one


def test_header_without_target_is_one_warning_line(tmp_path):
    data = tmp_path / "h.csv"
    data.write_text("a,b,label\n1,2,3\n4,5,6\n0.5,1,2\n")
    res = _run(["kernel", str(data), "-a", "relu", "-L", "1"])
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("ntkhgm: warning: ") and "a, b, label" in res.stderr
    assert len(res.stdout.splitlines()) == 3
    res = _run(["kernel", str(data), "-a", "relu", "-L", "1", "--target", "label"])
    assert res.exit_code == 0 and res.stderr == ""


@pytest.mark.parametrize("args, words", [
    (["kernel", "x.csv", "-a", "relu", "-L", "-1"], "'--depth'"),
    (["kernel", "-a", "relu", "-L", "1"], "Missing argument"),
    (["kernel", "x.csv", "--bogus"], "No such option"),
    (["nosuchcommand"], "No such command"),
    (["dual", "-a", "relu", "--a", "one", "--b", "1", "--c", "0"], "'--a'"),
    (["bench", "accuracy", "--activation"], "requires an argument"),
])
def test_click_usage_errors_are_one_line(args, words):
    res = _run(args)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("ntkhgm: error: ") and res.stderr.count("\n") == 1
    assert words in res.stderr and "Usage:" not in res.stderr
