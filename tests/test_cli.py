"""The commands activations, dual, kernel and regress, run as a user would."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DATA, relu_ntk_reference

import ntkhgm
from ntkhgm.cli import main
from ntkhgm.io import read_csv

TRAIN = str(DATA / "diabetes_train.csv")
TEST = str(DATA / "diabetes_test.csv")


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart


def run(*args: str):
    return runner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *words: str) -> str:
    """Exit 2, exactly one line on stderr, no traceback, nothing on stdout."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    err = result.stderr
    assert err.count("\n") == 1 and err.startswith("ntkhgm: error: "), err
    assert "Traceback" not in err and result.stdout == ""
    for w in words:
        assert w in err, err
    return err


def load_csv_text(text: str) -> np.ndarray:
    return np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)


@pytest.fixture
def small(tmp_path):
    """The first 30 training and 12 test rows of data/ (with header)."""
    def head(src, n, name):
        lines = open(src).read().splitlines()[: n + 1]
        p = tmp_path / name
        p.write_text("\n".join(lines) + "\n")
        return str(p)
    return head(TRAIN, 30, "train30.csv"), head(TEST, 12, "test12.csv")


# ----------------------------------------------------------------------------- activations


def test_activations_table():
    r = run("activations")
    assert r.exit_code == 0, r.stderr
    for name in ("relu", "resin", "gelu", "erf", "normcdf", "sin", "sigmoid", "relu2"):
        assert name in r.stdout
    relu_line = next(line for line in r.stdout.splitlines() if "│ relu " in line)
    assert "yes/yes" in relu_line


# ----------------------------------------------------------------------------- dual


def test_dual_relu_all_methods():
    r = run("dual", "--activation", "relu", "--a", "1", "--b", "2", "--c", "0.5")
    assert r.exit_code == 0, r.stderr
    for m in ("closed", "quad", "gh"):
        assert f"│ {m}" in r.stdout
    from ntkhgm.numeric.closed_forms import relu
    assert repr(float(relu(1.0, 2.0, 0.5))) in r.stdout
    assert "vs closed" in r.stdout and "CS scale" in r.stdout


def test_dual_derivative_no_closed_form():
    r = run("dual", "-a", "resin", "--a", "1", "--b", "1", "--c", "1", "--derivative")
    assert r.exit_code == 0, r.stderr
    assert "vs series+hgm" in r.stdout
    assert "│ quad" in r.stdout and "│ gh" in r.stdout and "│ hgm" in r.stdout
    assert "auto uses series+hgm: degenerate: 1-D integral" in r.stdout       # ρ = 1


def test_dual_says_which_region_auto_uses():
    r = run("dual", "-a", "resin", "--a", "1", "--b", "2", "--c", "1.41421")   # ρ ≈ 1 − 2e-6
    assert r.exit_code == 0, r.stderr
    assert "auto uses series+hgm: near |ρ| = 1: analytic part and wedge series" in r.stdout
    assert "hgm uses Pfaffian local solutions at |ρ| = 1" in r.stdout
    r = run("dual", "-a", "resin", "--a", "1", "--b", "2", "--c", "0.3")
    assert "auto uses series+hgm: Mehler series" in r.stdout


@pytest.mark.parametrize("args, words", [
    (["-a", "relu", "--a", "1", "--b", "1", "--c", "2"], ["not a covariance"]),
    (["-a", "relu", "--a", "-1", "--b", "1", "--c", "0"], ["not a covariance"]),
    (["-a", "nosuch", "--a", "1", "--b", "1", "--c", "0"], ["unknown activation"]),
])
def test_dual_errors(args, words):
    assert_user_error(run("dual", *args), *words)


# ----------------------------------------------------------------------------- kernel


def test_kernel_stdout_symmetric_matches_api():
    r = run("kernel", TRAIN, "--target", "progression", "--activation", "relu",
            "--depth", "3")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    K = load_csv_text(r.stdout)
    X, _, _ = read_csv(TRAIN, target="progression")
    assert K.shape == (300, 300)
    np.testing.assert_array_equal(K, K.T)
    ref = relu_ntk_reference(X, X, 3)
    np.testing.assert_allclose(K, ref, rtol=1e-11, atol=1e-11 * np.abs(ref).max())


def test_kernel_npy_and_csv_files(tmp_path):
    out_npy, out_csv = tmp_path / "K.npy", tmp_path / "K.csv"
    args = [TRAIN, "--target", "-1", "-a", "erf", "-L", "2", "--kind", "nngp"]
    r = run("kernel", *args, "-o", out_npy)
    assert r.exit_code == 0, r.stderr
    assert "wrote" in r.stderr and r.stdout == ""
    assert run("kernel", *args, "-o", out_csv, "--quiet").stderr == ""
    K = np.load(out_npy)
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_array_equal(K, np.loadtxt(out_csv, delimiter=",", ndmin=2))
    X, _, _ = read_csv(TRAIN, target=-1)
    np.testing.assert_allclose(K, ntkhgm.kernel(X, activation="erf", depth=2, kind="nngp"),
                               rtol=1e-14)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["K.csv", "K.npy"]


def test_kernel_test_vs_train_nt_convention(tmp_path):
    r = run("kernel", TRAIN, "--test", TEST, "--target", "progression", "-a", "sin", "-L", "2",
            "--convention", "nt", "--W-std", "1.5", "--b-std", "0.1", "-m", "closed")
    assert r.exit_code == 0, r.stderr
    K = load_csv_text(r.stdout)
    assert K.shape == (142, 300)
    Xtr, _, _ = read_csv(TRAIN, target="progression")
    Xte, _, _ = read_csv(TEST, target="progression")
    ref = ntkhgm.kernel(Xte, Xtr, activation="sin", depth=2, convention="nt", W_std=1.5,
                        b_std=0.1, method="closed")
    np.testing.assert_allclose(K, ref, rtol=1e-14)


def test_kernel_resin_gh_small(small):
    train, test = small
    r = run("kernel", train, "--target", "progression", "-a", "resin", "-L", "3", "-m", "gh")
    assert r.exit_code == 0, r.stderr
    K = load_csv_text(r.stdout)
    assert K.shape == (30, 30) and np.all(np.isfinite(K))
    np.testing.assert_allclose(K, K.T, rtol=0, atol=1e-15 * np.abs(K).max())
    assert np.all(np.linalg.eigvalsh(K) > -1e-10 * np.abs(K).max())


def test_kernel_degenerate_rows_valid(tmp_path):
    # single row, duplicate rows, all-zero rows: correct kernels, not errors
    p = tmp_path / "deg.csv"
    p.write_text("a,b\n0,0\n1,2\n1,2\n0,0\n-1,0.5\n")
    r = run("kernel", p, "-a", "relu", "-L", "2")
    assert r.exit_code == 0, r.stderr
    K = load_csv_text(r.stdout)
    X = np.array([[0, 0], [1, 2], [1, 2], [0, 0], [-1, 0.5]], dtype=float)
    np.testing.assert_allclose(K, relu_ntk_reference(X, X, 2), rtol=1e-12, atol=1e-14)
    assert np.all(K[0] == 0) and np.all(K[:, 3] == 0)
    np.testing.assert_array_equal(K[1], K[2])
    one = tmp_path / "one.csv"
    one.write_text("3,4\n")
    r = run("kernel", one, "-a", "erf", "-L", "1")
    assert r.exit_code == 0, r.stderr
    assert load_csv_text(r.stdout).shape == (1, 1)


# ----------------------------------------------------------------------------- regress


@pytest.mark.parametrize("ridge", ["0", "2.5"])
def test_regress_metrics_independent(tmp_path, ridge):
    out = tmp_path / "pred.csv"
    r = run("regress", TRAIN, TEST, "--target", "progression", "--activation", "relu",
            "--depth", "2", "--ridge", ridge, "-m", "closed", "--input-scale", "none", "-o", out)
    assert r.exit_code == 0, r.stderr
    pred, _, header = read_csv(out)
    assert header == ["progression_pred"]
    Xtr, ytr, _ = read_csv(TRAIN, target="progression")
    Xte, yte, _ = read_csv(TEST, target="progression")
    lam = float(ridge)
    alpha = np.linalg.solve(relu_ntk_reference(Xtr, Xtr, 2) + lam * np.eye(len(Xtr)), ytr)
    expected = relu_ntk_reference(Xte, Xtr, 2) @ alpha
    np.testing.assert_allclose(pred[:, 0], expected, rtol=1e-6)
    rmse = np.sqrt(np.mean((expected - yte) ** 2))
    rel = np.linalg.norm(expected - yte) / np.linalg.norm(yte)
    r2 = 1 - np.sum((expected - yte) ** 2) / np.sum((yte - yte.mean()) ** 2)
    for label, value in (("RMSE", rmse), ("relative error", rel), ("R²", r2)):
        line = next(x for x in r.stdout.splitlines() if label in x)
        shown = float(line.split("│")[2])
        assert shown == pytest.approx(value, rel=1e-5), (label, line)


def test_regress_stdout_pipeline_and_no_target_in_test(tmp_path, small):
    train, test = small
    r = run("regress", train, test, "--target", "progression", "-a", "erf", "-L", "2",
            "--ridge", "1e-3")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "progression_pred" and len(lines) == 13
    assert "RMSE" in r.stderr  # metrics go to stderr when predictions use stdout
    bare = tmp_path / "bare.csv"
    rows = [line.rsplit(",", 1)[0] for line in open(test).read().splitlines()]
    bare.write_text("\n".join(rows) + "\n")
    r2 = run("regress", train, bare, "--target", "progression", "-a", "erf", "-L", "2",
             "--ridge", "1e-3")
    assert r2.exit_code == 0, r2.stderr
    assert r2.stdout == r.stdout and "RMSE" not in r2.stderr


def test_regress_singular_suggests_ridge(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text("a,b,y\n1,2,3\n1,2,3\n0.5,-1,2\n")
    out = tmp_path / "pred.csv"
    err = assert_user_error(run("regress", p, p, "--target", "y", "--ridge", "0", "-o", out),
                            "--ridge")
    assert "singular" in err and not out.exists()
    r = run("regress", p, p, "--target", "y", "--ridge", "1e-6", "-o", out)
    assert r.exit_code == 0 and out.exists()


def test_regress_defaults_report_loo_ridge_and_seed_setting_is_exact(tmp_path, small):
    """Default: auto scale, centred targets, LOO ridge (printed); the seed's setting exact."""
    train, test = small
    out, seed = tmp_path / "pred.csv", tmp_path / "seed.csv"
    r = run("regress", train, test, "--target", "progression", "-a", "erf", "-L", "2",
            "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "ridge auto: λ = " in r.stderr and "leave-one-out" in r.stderr
    Xtr, ytr, _ = read_csv(train, target="progression")
    Xte, _, _ = read_csv(test, target="progression")
    model = ntkhgm.KernelRegressor(activation="erf", depth=2).fit(Xtr, ytr)
    assert f"{model.ridge_:.6g}" in r.stderr
    np.testing.assert_array_equal(read_csv(out)[0][:, 0], model.predict(Xte))
    r = run("regress", train, test, "--target", "progression", "-a", "erf", "-L", "2",
            "--ridge", "1", "--input-scale", "none", "-o", seed)
    assert r.exit_code == 0 and "ridge auto" not in r.stderr
    K = ntkhgm.kernel(Xtr, activation="erf", depth=2)
    Kt = ntkhgm.kernel(Xte, Xtr, activation="erf", depth=2)
    from scipy import linalg
    expected = Kt @ linalg.cho_solve(linalg.cho_factor(K + np.eye(len(Xtr))), ytr)
    np.testing.assert_array_equal(read_csv(seed)[0][:, 0], expected)
    r = run("regress", train, test, "--target", "progression", "-a", "erf", "-L", "2",
            "--ridge", "1", "--input-scale", "none", "--center", "-o", seed)
    assert r.exit_code == 0 and "centred targets" in r.stdout  # the metrics (with -o)
    m = ytr.mean()
    expected = Kt @ np.linalg.solve(K + np.eye(len(Xtr)), ytr - m) + m
    np.testing.assert_allclose(read_csv(seed)[0][:, 0], expected, rtol=1e-12)


@pytest.mark.parametrize("mode", ["none", "auto", "unit-norm"])
def test_kernel_input_scale(tmp_path, small, mode):
    train, test = small
    out = tmp_path / "K.npy"
    r = run("kernel", train, "--test", test, "--target", "progression", "-a", "relu", "-L", "2",
            "--input-scale", mode, "-o", out)
    assert r.exit_code == 0, r.stderr
    Xtr, _, _ = read_csv(train, target="progression")
    Xte, _, _ = read_csv(test, target="progression")
    if mode == "auto":  # one factor, fitted on the training rows
        s = 1 / np.sqrt(np.mean(np.sum(Xtr ** 2, axis=1)))
        Xtr, Xte = Xtr * s, Xte * s
    elif mode == "unit-norm":
        Xtr = Xtr / np.linalg.norm(Xtr, axis=1)[:, None]
        Xte = Xte / np.linalg.norm(Xte, axis=1)[:, None]
    np.testing.assert_allclose(np.load(out), relu_ntk_reference(Xte, Xtr, 2), rtol=1e-12)


# ----------------------------------------------------------------------------- user errors

CSV_ERRORS = [
    ("empty.csv", "", "empty.csv:1:1:", "empty file"),
    ("header.csv", "a,b,progression\n", "header.csv:2:1:", "header only"),
    ("ragged.csv", "a,b,progression\n1,2,3\n4,5\n", "ragged.csv:3:3:", "ragged"),
    ("text.csv", "a,b,progression\n1,2,3\n4,five,6\n", "text.csv:3:2:", "'five'"),
    ("nan.csv", "a,b,progression\n1,NaN,3\n", "nan.csv:2:2:", "not finite"),
    ("inf.csv", "a,b,progression\n1,2,3\n-inf,2,3\n", "inf.csv:3:1:", "not finite"),
    ("big.csv", "a,b,progression\n1e200,2,3\n", "big.csv:2:1:", "too large"),
    ("target.csv", "a,b,c\n1,2,3\n", "target.csv:1:", "unknown target"),
]


# the test file of `regress` takes its target from the training file: no target.csv case
@pytest.mark.parametrize("name, text, where, words, command", [
    (*case, command) for case in CSV_ERRORS
    for command in ("kernel", "regress-train", "regress-test")
    if not (command == "regress-test" and case[0] == "target.csv")])
def test_csv_errors_one_line_exit_2_no_output(tmp_path, name, text, where, words, command):
    bad = tmp_path / name
    bad.write_text(text)
    out = tmp_path / "out.csv"
    if command == "kernel":
        args = ["kernel", bad, "--target", "progression", "-a", "relu", "-L", "1", "-o", out]
    elif command == "regress-train":
        args = ["regress", bad, TEST, "--target", "progression", "-o", out]
    else:
        args = ["regress", TRAIN, bad, "--target", "progression", "-o", out]
    assert_user_error(run(*args), where, words, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_train_test_column_mismatch(tmp_path):
    te = tmp_path / "narrow.csv"
    te.write_text("age,sex,bmi,progression\n1,2,3,4\n")
    out = tmp_path / "K.npy"
    assert_user_error(run("kernel", TRAIN, "--test", te, "--target", "progression", "-a",
                          "relu", "-L", "1", "-o", out), "narrow.csv:2:4:", "3 feature columns")
    assert_user_error(run("regress", TRAIN, te, "--target", "progression"), "narrow.csv")
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["kernel", "missing.csv", "-a", "relu", "-L", "1"], ["missing.csv: no such file"]),
    (["kernel", TRAIN, "-a", "tanh", "-L", "1"], ["unknown activation 'tanh'"]),
    (["kernel", TRAIN, "-a", "relu", "-L", "1", "-o", "K.json"], ["unsupported output"]),
    (["kernel", TRAIN, "-a", "relu", "-L", "1", "-o", "nodir/K.npy"], ["does not exist"]),
    (["kernel", TRAIN, "-a", "relu", "-L", "1", "-o", TRAIN], ["overwrite the input"]),
    (["kernel", TRAIN, "-a", "relu", "-L", "1", "-m", "magic"], ["unknown method"]),
    (["kernel", TRAIN, "-a", "relu", "-L", "1", "--W-std", "2"], ["convention 'nt'"]),
    (["regress", TRAIN, TEST, "--target", "nosuch"], ["unknown target column 'nosuch'"]),
    (["regress", TRAIN, TEST, "--target", "-1", "--ridge", "best"], ["--ridge 'best'"]),
    (["regress", TRAIN, TEST, "--target", "-1", "--ridge", "-1"], ["--ridge '-1'"]),
])
def test_other_user_errors(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert_user_error(run(*args), *words)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- real processes


def test_subprocess_python_m(tmp_path, subprocess_env):
    out = tmp_path / "K.npy"
    p = subprocess.run([sys.executable, "-m", "ntkhgm", "kernel", TRAIN, "--target",
                        "progression", "--activation", "relu", "--depth", "3", "-o", str(out)],
                       capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert p.returncode == 0, p.stderr
    K = np.load(out)
    assert K.shape == (300, 300)
    np.testing.assert_array_equal(K, K.T)
    # stderr is a pipe, not a terminal: no progress bar, only the summary line
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("ntkhgm: wrote")

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,oops\n")
    p = subprocess.run([sys.executable, "-m", "ntkhgm", "kernel", str(bad), "-a", "relu",
                        "-L", "1", "-o", str(tmp_path / "K2.npy")],
                       capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert p.returncode == 2
    assert p.stderr == f"ntkhgm: error: {bad}:3:2: non-numeric value 'oops' in column 'b'\n"
    assert p.stdout == "" and not (tmp_path / "K2.npy").exists()


def test_subprocess_pipeline(tmp_path, subprocess_env):
    p = subprocess.run([sys.executable, "-m", "ntkhgm", "regress", TRAIN, TEST, "--target",
                        "progression", "--ridge", "1", "-m", "closed", "--quiet"],
                       capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert p.returncode == 0, p.stderr
    pred = np.loadtxt(io.StringIO(p.stdout), delimiter=",", skiprows=1)
    assert pred.shape == (142,)
    assert "R²" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.skipif(shutil.which("ntkhgm") is None, reason="console script not installed")
def test_console_script(subprocess_env):
    p = subprocess.run(["ntkhgm", "activations"], capture_output=True, text=True,
                       env=subprocess_env, timeout=120)
    assert p.returncode == 0 and "resin" in p.stdout


def test_subprocess_broken_pipe(subprocess_env):
    p = subprocess.Popen([sys.executable, "-m", "ntkhgm", "kernel", TRAIN, "--target", "-1",
                          "-a", "relu", "-L", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=subprocess_env)
    first = p.stdout.readline()
    p.stdout.close()  # like `| head -1`
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert len(first.split(b",")) == 300
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_progress_bar_only_on_terminals(monkeypatch):
    from ntkhgm.cli import kernel_cmds

    with kernel_cmds._progress("x", quiet=False) as cb:
        assert cb is None  # pytest's stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with kernel_cmds._progress("x", quiet=True) as cb:
        assert cb is None
    with kernel_cmds._progress("x", quiet=False) as cb:
        assert callable(cb)
        cb(1, 3)
        cb(3, 3)
