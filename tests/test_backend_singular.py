"""The Singular backend, computing for real (issue 3 §5) and its faults (issue 6 §2, §4).

Not served from the cache: every computation here uses ``force`` and an empty
user cache.  References: docs/math.md §4 (ReLU), the exact integrability condition,
2-D quadrature, and the holonomic ranks of docs/math.md §4.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT  # (the checkout, for subprocesses' PYTHONPATH)
from conftest_algebra import assert_matches_relu_reference, closing_backend, pid_dead

import ntkhgm
from ntkhgm.algebra import cache
from ntkhgm.algebra.annihilator import parse_annihilator
from ntkhgm.algebra.backends.base import CASSession
from ntkhgm.algebra.backends.singular import SingularBackend, _singular_error, find_singular
from ntkhgm.algebra.pfaffian import PfaffianSystem
from ntkhgm.checks import check_pfaffian_numeric
from ntkhgm.errors import (
    AnnihilatorSyntaxError,
    BackendCrashError,
    BackendNotFoundError,
    BackendTimeoutError,
)

if find_singular() is None:
    if os.environ.get("CI"):
        pytest.fail("Singular is required in CI: pip install --no-deps passagemath-singular",
                    pytrace=False)
    pytest.skip("Singular not found (pip install --no-deps passagemath-singular)",
                allow_module_level=True)


pytestmark = pytest.mark.cas


@pytest.fixture(scope="module")
def backend():
    yield from closing_backend(SingularBackend())



def test_relu_matches_math_md(backend, isolated_cache):
    system = cache.compute_pfaffian("relu", False, force=True, backend_obj=backend)
    assert system.backend == "singular" and system.backend_version.startswith("Singular")
    assert system.timings["restriction"] > 0
    assert_matches_relu_reference(system)
    # a recomputed catalog system is returned, never stored (catalog names read shipped files)
    assert not isolated_cache.exists()


def test_relu_derivative(backend, isolated_cache):
    system = cache.compute_pfaffian("relu", True, force=True, backend_obj=backend)
    assert system.rank == 2 and system.annihilator == "u*du"
    assert system.std_monomials == ((0, 0, 0), (0, 1, 0))
    assert check_pfaffian_numeric(system, n_points=1, seed=1) < 1e-9


def test_resin(backend, isolated_cache):
    system = cache.compute_pfaffian("resin", False, force=True, backend_obj=backend)
    assert system.rank == 5
    assert system.std_monomials[0] == (0, 0, 0)
    assert check_pfaffian_numeric(system, n_points=1, seed=2) < 1e-9


@pytest.mark.slow
def test_gelu_derivative_rank_8_within_budget(backend, isolated_cache):
    # issue 11: a rank-8 user system within 60 s; the CAS and Pfaffian steps take ~12 s
    system = cache.compute_pfaffian("(2-u^2)*du^2-(u^3-4*u)*du", True, force=True,
                                    name="mygelu", backend_obj=backend)
    assert system.rank == 8 and system.std_monomials[0] == (0, 0, 0)
    assert system.timings["total"] < 60, system.timings
    f = ntkhgm.get_activation("gelu").function(True)
    assert check_pfaffian_numeric(system, f, n_points=1, seed=3) < 1e-9


def test_user_annihilator_via_api(backend, isolated_cache):
    # the annihilator of ReLU typed differently (du·u − 2 = u·du − 1) gives ReLU's system
    system = cache.compute_pfaffian("du*u-2", False, force=True, name="myrelu",
                                    backend_obj=backend)
    assert system.activation == "myrelu" and system.annihilator == "u*du-1"
    assert_matches_relu_reference(system)
    assert (isolated_cache / "myrelu.json").is_file()


# --------------------------------------------------------------------------- session faults

def _session(timeout=20.0, memory=None):
    return CASSession("Singular", [find_singular(), "-q", "-t", "--no-rc"], timeout=timeout,
                      memory_bytes=memory, error_detector=_singular_error,
                      marker=lambda m: f'print("{m}");')


def test_session_reports_singulars_error_text():
    s = _session()
    try:
        with pytest.raises(BackendCrashError, match="undefined"):
            s.run("nosuchproc_ntkhgm(3);")
        assert "5" in s.run("print(2 + 3);")     # the session survives an error
    finally:
        s.close("quit;")


def test_session_timeout_kills_the_process():
    s = _session()
    pid = s.pid
    t0 = time.perf_counter()
    with pytest.raises(BackendTimeoutError, match="killed"):
        s.run("while (1) { }", timeout=1.0)
    assert time.perf_counter() - t0 < 10
    assert pid_dead(pid)
    with pytest.raises(BackendCrashError, match="not running"):
        s.run("print(1);")


def test_session_detects_a_crash_mid_run():
    s = _session()
    pid = s.pid
    threading.Timer(0.5, lambda: os.kill(pid, 9)).start()
    with pytest.raises(BackendCrashError, match="died"):
        s.run("while (1) { }", timeout=20)
    assert pid_dead(pid)


def test_session_memory_limit():
    s = _session(memory=300 * 2 ** 20)
    pid = s.pid
    with pytest.raises(BackendCrashError, match="memory|died"):
        s.run('string t = "xxxxxxxxxxxxxxxx"; int i; for (i = 1; i < 40; i++) { t = t + t; }')
    assert pid_dead(pid)


def test_missing_executable(monkeypatch):
    monkeypatch.setenv("NTKHGM_SINGULAR", "/nonexistent/Singular")
    assert find_singular() is None
    with pytest.raises(BackendNotFoundError, match="passagemath-singular"):
        SingularBackend()


def test_backend_timeout_leaves_no_process(isolated_cache):
    be = SingularBackend(timeout=0.3)
    with pytest.raises(BackendTimeoutError):
        cache.compute_pfaffian("resin", True, force=True, backend_obj=be)
    pid = be._session.pid
    be.close()
    assert pid_dead(pid)
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []


# --------------------------------------------------------------------------- hostile input

HOSTILE = ['u*du-1; system("sh", "touch {p}")', 'system("sh","touch {p}")',
           'u*du-1$ shell("touch {p}")$ quit;', '"; system("sh", "touch {p}"); "']


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_annihilators_never_reach_singular(template, isolated_cache, tmp_path):
    target = tmp_path / f"pwned-{secrets.token_hex(4)}"
    text = template.format(p=target)
    with pytest.raises(AnnihilatorSyntaxError):
        parse_annihilator(text)
    be = SingularBackend()
    try:
        with pytest.raises(AnnihilatorSyntaxError):
            cache.compute_pfaffian(text, False, force=True, name="evil", backend_obj=be)
        assert be._session is None           # no CAS was even started
    finally:
        be.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", "from ntkhgm.cli import main; main()", "pfaffian",
                        "--annihilator", text, "--name", "evil", "--backend", "singular"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not target.exists()
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []


def test_two_concurrent_cli_runs_leave_one_valid_entry(isolated_cache, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NTKHGM_CACHE_DIR=str(isolated_cache))
    cmd = [sys.executable, "-c", "from ntkhgm.cli import main; main()", "pfaffian",
           "--annihilator", "u*du-1", "--derivative-annihilator", "u*du", "--name", "myrelu",
           "--derivative", "--force", "--backend", "singular", "-q"]
    procs = [subprocess.Popen(cmd + ["-o", str(tmp_path / f"out{i}.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["myrelu.derivative.json",
                                                                 "myrelu.json"]
    system = PfaffianSystem.from_json((isolated_cache / "myrelu.derivative.json").read_text())
    for i in range(2):
        out = PfaffianSystem.from_json((tmp_path / f"out{i}.json").read_text())
        assert out.matrices == system.matrices and out.std_monomials == system.std_monomials


def test_cli_user_activation_with_sigma(isolated_cache, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NTKHGM_CACHE_DIR=str(isolated_cache))
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-c", "from ntkhgm.cli import main; main()", "pfaffian",
                        "--annihilator", "u*du-2", "--derivative-annihilator", "u*du-1",
                        "--sigma", "u^2*step(u)", "--dsigma", "2*u*step(u)", "--name", "sq",
                        "--derivative", "--check", "--force", "-o", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    system = PfaffianSystem.from_json(out.read_text())
    assert system.activation == "sq" and system.derivative and system.rank == 2
    assert system.expression is not None
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["sq.derivative.json", "sq.json"]
    assert check_pfaffian_numeric(system, n_points=1) < 1e-9


@pytest.mark.parametrize("deriv, const", [(False, 2), (True, 1)])
def test_restriction_ideal_contains_math_md_generators(backend, deriv, const):
    """docs/math.md §4: relu gives 2x11∂11 + x12∂12 + 2, …; relu' (the seed's) the same with + 1."""
    from fractions import Fraction

    from ntkhgm.algebra.weyl import Reducer, from_sparse

    ann = parse_annihilator("u*du" if deriv else "u*du-1")
    polys, _ = backend.groebner_basis(ann)
    red = Reducer([from_sparse(g) for g in polys])
    # exponents (x11, x12, x22, dx11, dx12, dx22)
    gens = [
        {(1, 0, 0, 1, 0, 0): 2, (0, 1, 0, 0, 1, 0): 1, (0, 0, 0, 0, 0, 0): const},
        {(0, 1, 0, 0, 1, 0): 1, (0, 0, 1, 0, 0, 1): 2, (0, 0, 0, 0, 0, 0): const},
        {(0, 0, 0, 1, 0, 1): 4, (0, 0, 0, 0, 2, 0): -1},
    ]
    for g in gens:
        assert red.normal_form(from_sparse({m: Fraction(c) for m, c in g.items()})) == {}
    # a wrong constant is not in the ideal
    bad = {(1, 0, 0, 1, 0, 0): 2, (0, 1, 0, 0, 1, 0): 1, (0, 0, 0, 0, 0, 0): 3 - const}
    assert red.normal_form(from_sparse({m: Fraction(c) for m, c in bad.items()})) != {}
