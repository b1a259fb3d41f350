"""Fail closed on every input the README accepts (issue 13), each case of the issue reproduced.

Inputs: CSV cells and files, output folders, CAS environment variables, σ
expressions, signals during writes and to the CAS child, cache folders; and the
numeric range of the README (huge, tiny and degenerate rows, large W_std).
References are independent: closed forms evaluated in mpmath, exact homogeneity
of the ReLU kernel, the arc-cosine reference of conftest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mpmath
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import relu_ntk_reference
from conftest_algebra import pid_dead

import ntkhgm
from ntkhgm import io as nio
from ntkhgm.algebra import cache
from ntkhgm.algebra.annihilator import parse_annihilator
from ntkhgm.algebra.backends.base import default_timeout, memory_limit
from ntkhgm.algebra.pfaffian import PfaffianSystem
from ntkhgm.algebra.sigma_expr import SigmaSyntaxError, check_annihilates, parse_sigma
from ntkhgm.atomic import atomic_write, atomic_write_text
from ntkhgm.checks import check_pfaffian_numeric
from ntkhgm.cli import main
from ntkhgm.errors import (
    BackendCrashError,
    CSVInputError,
    InputError,
    NumericalError,
    PfaffianFileError,
)

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def one_line_error(code, output):
    lines = output.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("ntkhgm: error:")


# -- CSV reader -----------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["٣", "３", "\u00a01", "1\u00a0", "1_000", "１.５", "2e٣"])
def test_unicode_digits_and_spaces_are_not_numbers(tmp_path, cell):
    float(cell)  # Python's float() takes every one of these: the reader must not
    p = tmp_path / "u.csv"
    p.write_text(f"a,b\n1,2\n{cell},3\n", encoding="utf-8")
    with pytest.raises(CSVInputError, match=r"u\.csv:3:1: non-numeric"):
        nio.read_csv(p)


def test_ascii_numbers_with_blanks_still_read(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text(" 1.5 ,\t-2e-3\n.5,+3.\n")
    X, _, _ = nio.read_csv(p)
    np.testing.assert_array_equal(X, [[1.5, -2e-3], [0.5, 3.0]])


def test_dev_zero_stops_at_once():
    t0 = time.perf_counter()
    with pytest.raises(CSVInputError, match="NUL bytes"):
        nio.read_csv("/dev/zero")
    assert time.perf_counter() - t0 < 5


def test_input_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(nio, "MAX_INPUT_BYTES", 1000)
    p = tmp_path / "big.csv"
    p.write_text("1,2\n" * 400)
    with pytest.raises(CSVInputError, match="too large"):
        nio.read_csv(p)
    p.write_text("1,2\n" * 200)
    assert nio.read_csv(p)[0].shape == (200, 2)


def test_endless_stream_stops_at_the_cap(monkeypatch, tmp_path):
    monkeypatch.setattr(nio, "MAX_INPUT_BYTES", 4 << 20)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():
        try:
            with open(fifo, "wb") as fh:
                while True:
                    fh.write(b"1,2\n" * 65536)
        except (BrokenPipeError, OSError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    with pytest.raises(CSVInputError, match="too large"):
        nio.read_csv(fifo)


# -- output folders ----------------------------------------------------------------------

def test_unwritable_output_folder_is_found_before_any_work(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("1,2\n3,4\n")
    # /proc refuses new files even for root; the check probes by creating one
    code, out = run_cli("kernel", csv, "-a", "resin", "-L", "3", "-o", "/proc/K.npy")
    assert one_line_error(code, out) and "not writable" in out


def test_output_probe_leaves_nothing(tmp_path):
    nio.check_output_path(tmp_path / "K.npy")
    assert list(tmp_path.iterdir()) == []


# -- signals during a write ------------------------------------------------------------

WRITER = """
import sys, time
from ntkhgm.atomic import atomic_write
def write(fh):
    fh.write(b"x" * 100000)
    fh.flush()
    print("ready", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def _writer(tmp_path, subprocess_env):
    target = tmp_path / "K.npy"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=subprocess_env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.glob(".K.npy.*.tmp"))) == 1
    return proc, target


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_during_write_leaves_no_temporary(tmp_path, subprocess_env, sig):
    proc, target = _writer(tmp_path, subprocess_env)
    proc.send_signal(sig)
    rc = proc.wait(timeout=20)
    assert rc != 0
    if sig != signal.SIGINT:
        assert rc == -sig      # the process still ends by the signal it was sent
    assert list(tmp_path.iterdir()) == []


def test_sigkill_leftover_is_removed_by_the_next_write(tmp_path, subprocess_env):
    proc, target = _writer(tmp_path, subprocess_env)
    proc.kill()
    proc.wait(timeout=20)
    assert len(list(tmp_path.glob(".K.npy.*.tmp"))) == 1      # SIGKILL cannot be caught
    atomic_write_text(target, "ok")
    assert [p.name for p in tmp_path.iterdir()] == ["K.npy"]


def test_write_failure_leaves_nothing(tmp_path):
    def fail(fh):
        fh.write(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "K.npy", fail)
    assert list(tmp_path.iterdir()) == []


# -- CAS environment -------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "0", "-5", "99999999999999", "1.5", "", " 64 "])
def test_memory_variable(monkeypatch, value):
    monkeypatch.setenv("NTKHGM_CAS_MEMORY_MB", value)
    if value.strip() in ("", "64"):
        assert memory_limit() == (8192 if not value.strip() else 64) * 2 ** 20
    else:
        with pytest.raises(InputError, match="NTKHGM_CAS_MEMORY_MB"):
            memory_limit()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "abc", "0", "-1"])
def test_timeout_variable_bad(monkeypatch, value):
    monkeypatch.setenv("NTKHGM_CAS_TIMEOUT", value)
    with pytest.raises(InputError, match="NTKHGM_CAS_TIMEOUT"):
        default_timeout()


def test_timeout_variable_good(monkeypatch):
    monkeypatch.setenv("NTKHGM_CAS_TIMEOUT", "12.5")
    assert default_timeout() == 12.5
    monkeypatch.delenv("NTKHGM_CAS_TIMEOUT")
    assert default_timeout() == 600.0


def test_bad_cas_variable_is_one_line_error(monkeypatch, isolated_cache):
    monkeypatch.setenv("NTKHGM_CAS_MEMORY_MB", "0")
    code, out = run_cli("pfaffian", "--activation", "relu", "--force")
    assert one_line_error(code, out) and "NTKHGM_CAS_MEMORY_MB" in out


def test_sigint_to_the_cas_child_is_an_error_at_once():
    from ntkhgm.algebra.backends.singular import SingularBackend

    backend = SingularBackend(timeout=120)
    try:
        s = backend.session()
        pid = s.pid
        threading.Timer(1.0, lambda: os.kill(pid, signal.SIGINT)).start()
        t0 = time.perf_counter()
        with pytest.raises(BackendCrashError, match="interrupted"):
            s.run("int i; for (i = 0; i < 2000000000; i++) { }", timeout=120)
        assert time.perf_counter() - t0 < 15
        assert pid_dead(pid)
    finally:
        backend.close()


# -- σ expressions -----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["9^9^9^9", "u^8000*step(u)", "2^(3^5)", "u^(2^7)",
                                  "1e31*u", "(-8)^(1/3)*u", "u^-65"])
def test_sigma_budgets_refuse_fast(text):
    t0 = time.perf_counter()
    with pytest.raises(SigmaSyntaxError, match="out of range"):
        parse_sigma(text)
    assert time.perf_counter() - t0 < 1


def test_sigma_budget_keeps_ordinary_powers():
    e = parse_sigma("u^9*step(u) + 2^-3*u^(1/2)*step(u) + 10^20")
    assert np.isfinite(e(np.array([0.5, 2.0]))).all()


@pytest.mark.parametrize("text", ["exp(u^60)*step(u)", "exp(exp(exp(exp(exp(u)))))*step(u)",
                                  "u^64*step(u)"])
def test_overflowing_sigma_never_passes_the_check(text):
    # u*du - 1 annihilates u only: every one of these must fail, none may pass on NaN
    with pytest.raises(InputError):
        check_annihilates(parse_annihilator("u*du-1"), parse_sigma(text), timeout=30)


def test_sigma_check_time_limit():
    from ntkhgm.algebra import sigma_expr

    with pytest.raises(InputError, match="took longer"):
        with sigma_expr.time_limit(0.2, "a test"):
            while True:
                pass


def test_numeric_pfaffian_check_fails_on_nan():
    system = cache.load_pfaffian("relu", False)

    def nan_sigma(u):
        return np.where(u > 3, np.nan, np.maximum(u, 0))

    err = check_pfaffian_numeric(system, nan_sigma, n_points=1, raise_on_failure=False)
    assert err == float("inf")
    with pytest.raises(PfaffianFileError):
        check_pfaffian_numeric(system, nan_sigma, n_points=1)


# -- cache folders -------------------------------------------------------------------

def _system():
    return cache.load_pfaffian("relu", False)


def _user_copy():
    from dataclasses import replace

    s = replace(_system(), activation="myrelu", expression=parse_sigma("u*step(u)").text)
    return PfaffianSystem.from_json(s.to_json())


def test_cache_folder_is_a_file(tmp_path):
    f = tmp_path / "cachefile"
    f.write_text("x")
    with pytest.raises(InputError, match="cannot write to the cache folder"):
        cache.store_pfaffian(_user_copy(), f)


def test_cache_folder_is_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InputError, match="symbolic link"):
        cache.store_pfaffian(_user_copy(), link)
    assert list(real.iterdir()) == []


def test_cache_folder_unwritable():
    with pytest.raises(InputError, match="cannot write to the cache folder"):
        cache.store_pfaffian(_user_copy(), Path("/proc/ntkhgm-cache"))


def test_cache_store_failure_in_cli_is_one_line(tmp_path, monkeypatch):
    f = tmp_path / "cachefile"
    f.write_text("x")
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(f))
    code, out = run_cli("pfaffian", "--annihilator", "u*du-1", "--name", "myrelu",
                        "--sigma", "u*step(u)", "--quiet")
    assert one_line_error(code, out), out


# -- the numeric range of the README -------------------------------------------------------

def _mp_relu_dual(a, b, c):
    a, b, c = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)
    r = mpmath.sqrt(a * b)
    th = mpmath.acos(c / r)
    return r * (mpmath.sin(th) + (mpmath.pi - th) * mpmath.cos(th)) / (2 * mpmath.pi)


@pytest.mark.parametrize("scale", [1e-81, 1e-120, 1e-150, 1e75, 1e150])
def test_relu_kernel_is_exactly_homogeneous_over_the_range(scale):
    # distinct rows (exact duplicates are issue 9's degeneracy handling, not a range question)
    X = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.3], [-1.5, 0.2]])
    K = ntkhgm.kernel(X * scale, activation="relu", depth=3)
    ref = relu_ntk_reference(X, X, 3) * scale * scale
    np.testing.assert_allclose(K, ref, rtol=1e-12)


def test_tiny_rows_cli(tmp_path):
    csv = tmp_path / "tiny.csv"
    csv.write_text("1e-82,1e-82\n2e-82,1e-82\n1e-82,3e-82\n")
    code, out = run_cli("kernel", csv, "-a", "relu", "-L", "1")
    assert code == 0, out
    K = np.array([[float(v) for v in line.split(",")] for line in out.strip().splitlines()])
    X = np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(K, relu_ntk_reference(X, X, 1) * 1e-164, rtol=1e-12)


@pytest.mark.parametrize("a, b, c", [(1e308, 1e308, 1e308), (1e300, 2e300, -1.2e300),
                                     (1e-300, 1e-300, 9e-301), (5e-320, 1e-310, 0.0)])
def test_relu_dual_over_the_double_range(a, b, c):
    got = ntkhgm.dual("relu", a, b, c, method="closed")
    with mpmath.workdps(40):
        ref = float(_mp_relu_dual(a, b, c))
    assert float(got) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("name", ["erf", "normcdf", "sin"])
@pytest.mark.parametrize("derivative", [False, True])
def test_closed_forms_finite_for_huge_variances(name, derivative):
    a = np.array([1e300, 1e308, 2.0])
    b = np.array([3e299, 1e308, 1e300])
    c = np.array([-5e299, 1e308, 1e150])
    v = ntkhgm.dual(name, a, b, c, derivative=derivative, method="closed")
    assert np.all(np.isfinite(v))
    with mpmath.workdps(700):    # local: never change the global mpmath context
        for i in range(3):
            A, B, C = (mpmath.mpf(x[i]) for x in (a, b, c))
            if name == "erf":
                ref = (4 / mpmath.pi / mpmath.sqrt((1 + 2 * A) * (1 + 2 * B) - 4 * C * C)
                       if derivative else
                       2 / mpmath.pi * mpmath.asin(2 * C / mpmath.sqrt((1 + 2 * A) * (1 + 2 * B))))
            elif name == "normcdf":
                root = mpmath.sqrt((1 + A) * (1 + B))
                ref = (1 / (2 * mpmath.pi * mpmath.sqrt(root * root - C * C)) if derivative
                       else 0.25 + mpmath.asin(C / root) / (2 * mpmath.pi))
            else:
                ref = mpmath.exp(-(A + B) / 2) * (mpmath.cosh(C) if derivative else mpmath.sinh(C))
            assert abs(v[i] - float(ref)) <= 1e-13 * max(abs(float(ref)), 1e-300) + 1e-300


def test_dual_cli_at_the_double_limit_is_a_table_not_a_traceback():
    code, out = run_cli("dual", "-a", "relu", "--a", "1e308", "--b", "1e308", "--c", "1e308")
    assert code == 0 and "5e+307" in out and "Traceback" not in out
    assert "ρ = 1" in out


@pytest.mark.parametrize("name, method", [("resin", "auto"), ("gelu", "series+hgm")])
def test_numeric_methods_refuse_variances_out_of_range(tmp_path, name, method):
    csv = tmp_path / "big.csv"
    csv.write_text("1e150,1\n0.5,2\n1,1\n")
    t0 = time.perf_counter()
    code, out = run_cli("kernel", csv, "-a", name, "-L", "1", "-o", tmp_path / "K.npy",
                        "--method", method)
    assert one_line_error(code, out) and "variance beyond the range" in out
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "K.npy").exists()


def test_non_finite_dual_is_an_error_naming_lambda():
    with pytest.raises(NumericalError, match=r"non-finite.*Λ = \[\[1e\+308"):
        ntkhgm.dual("relu", 1e308, 1e308, 1e308, method="gh")


def test_huge_w_std_is_one_line_error(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("1,2\n3,4\n")
    code, out = run_cli("kernel", csv, "-a", "relu", "-L", "1", "--convention", "nt",
                        "--W-std", "1e200")
    assert one_line_error(code, out), out


def test_huge_values_give_finite_relu_and_erf_kernels(tmp_path):
    csv = tmp_path / "big.csv"
    csv.write_text("1e150,1\n0.5,2\n1,1\n")
    for name in ("relu", "erf"):
        code, out = run_cli("kernel", csv, "-a", name, "-L", "1")
        assert code == 0, out
        K = np.array([[float(v) for v in line.split(",")]
                      for line in out.strip().splitlines() if not line.startswith("ntkhgm")])
        assert np.all(np.isfinite(K)) and K.shape == (3, 3)
    X = np.array([[1e150, 1.0], [0.5, 2.0], [1.0, 1.0]])
    K = ntkhgm.kernel(X, activation="relu", depth=1)
    # the pairs of normal rows are untouched by the huge one; the huge diagonal is exact
    np.testing.assert_allclose(K[1:, 1:], relu_ntk_reference(X[1:], X[1:], 1), rtol=1e-12)
    assert K[0, 0] == pytest.approx(2e300, rel=1e-12)
