"""The Risa/Asir backend (the user's design card; issue 3 §5, issue 6 §4).

Skipped with a clear reason when Risa/Asir or asir-contrib is absent.  Where
Singular is present too, both backends must give the same Pfaffian system (same
basis, so the same matrices — compared numerically at random points — and the
same dual values).
"""

from __future__ import annotations

import secrets
import time

import numpy as np
import pytest
from conftest_algebra import assert_matches_relu_reference, closing_backend, pid_dead

from ntkhgm.algebra import cache
from ntkhgm.algebra.backends.asir import AsirBackend, find_asir, find_contrib
from ntkhgm.algebra.backends.singular import SingularBackend, find_singular
from ntkhgm.algebra.pfaffian import compile_matrices
from ntkhgm.errors import AnnihilatorSyntaxError, BackendCrashError, BackendTimeoutError

if find_asir() is None:
    pytest.skip("Risa/Asir not found: set NTKHGM_ASIR or put `asir` on PATH",
                allow_module_level=True)
if find_contrib() is None:
    pytest.skip("asir-contrib (nk_restriction.rr, yang.rr) not found: set OpenXM_HOME or "
                "ASIR_CONTRIB_DIR", allow_module_level=True)

pytestmark = [pytest.mark.asir, pytest.mark.cas]



@pytest.fixture(scope="module")
def asir():
    yield from closing_backend(AsirBackend())



def test_relu_matches_math_md(asir, isolated_cache):
    system = cache.compute_pfaffian("relu", False, force=True, backend_obj=asir)
    assert system.backend == "asir" and system.backend_version.startswith("Risa/Asir")
    assert_matches_relu_reference(system)


def test_relu_derivative_rank(asir, isolated_cache):
    assert cache.compute_pfaffian("relu", True, force=True, backend_obj=asir).rank == 2


@pytest.mark.skipif(find_singular() is None, reason="Singular not found")
@pytest.mark.parametrize("name, deriv, rank", [("relu", True, 2), ("resin", False, 5)])
def test_same_system_as_singular(asir, isolated_cache, name, deriv, rank):
    a = cache.compute_pfaffian(name, deriv, force=True, store=False, backend_obj=asir)
    with SingularBackend() as sb:
        s = cache.compute_pfaffian(name, deriv, force=True, store=False, backend_obj=sb)
    assert a.rank == s.rank == rank
    assert a.std_monomials == s.std_monomials
    rng = np.random.default_rng(7)
    x11, x22 = -rng.uniform(0.5, 2, 5), -rng.uniform(0.5, 2, 5)
    x12 = rng.uniform(-0.5, 0.5, 5) * np.sqrt(x11 * x22)
    fa, fs = compile_matrices(a)(x11, x12, x22), compile_matrices(s)(x11, x12, x22)
    for k in fa:
        assert np.allclose(fa[k], fs[k], rtol=1e-12, atol=1e-12)
    # same dual values: one Euler step of the ODE from the same F gives the same F
    F = rng.normal(size=(5, rank))
    for k in fa:
        assert np.allclose(np.einsum("pij,pj->pi", fa[k], F),
                           np.einsum("pij,pj->pi", fs[k], F), rtol=1e-12, atol=1e-12)


def test_asir_error_text_and_no_debug_prompt(asir):
    s = asir.session()
    with pytest.raises(BackendCrashError, match="Risa/Asir reported an error"):
        s.run("ntkhgm_no_such_function(1)$")
    assert "7" in s.run("print(3+4)$")       # still at top level, not in (debug)
    with pytest.raises(BackendCrashError, match="syntax error"):
        s.run("for (;;) ;$")


def test_asir_timeout_kills_the_process():
    be = AsirBackend(timeout=1.0)
    s = be.session()
    pid = s.pid
    t0 = time.perf_counter()
    with pytest.raises(BackendTimeoutError):
        s.run("I = 0$ while (1) { I++; }$", timeout=1.0)
    assert time.perf_counter() - t0 < 10
    assert pid_dead(pid)
    be.close()


def test_hostile_annihilator_never_reaches_asir(tmp_path):
    target = tmp_path / f"pwned-{secrets.token_hex(4)}"
    be = AsirBackend()
    try:
        for text in (f'u*du-1$ shell("touch {target}")$', f'shell("touch {target}")',
                     "u*du-1; quit;"):
            with pytest.raises(AnnihilatorSyntaxError):
                cache.compute_pfaffian(text, False, force=True, name="evil", backend_obj=be)
        assert be._session is None
    finally:
        be.close()
    assert not target.exists()
