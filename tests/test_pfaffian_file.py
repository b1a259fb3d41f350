"""Pfaffian files (issue 3 §2-4, issue 6 §3-4): schema, hash, hostile files, cache, atomicity.

References are independent of the code under test: docs/math.md §4's ReLU Pfaffian,
the exact integrability condition, and 2-D quadrature.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest_algebra import assert_matches_relu_reference

from ntkhgm.algebra import cache
from ntkhgm.algebra.backends.base import Backend, BackendResult
from ntkhgm.algebra.pfaffian import (
    PfaffianSystem,
    RationalFunction,
    check_integrability_exact,
    compile_matrices,
    content_hash,
    integrability_defect_modp,
)
from ntkhgm.errors import BackendCrashError, BackendError, InputError, PfaffianFileError
from ntkhgm.paths import shipped_pfaffian_dir

SHIPPED = shipped_pfaffian_dir()


def relu_text() -> str:
    return (SHIPPED / "relu.json").read_text()


def rehash(obj: dict) -> str:
    obj = dict(obj)
    obj["sha256"] = content_hash(obj)
    return json.dumps(obj)


# --------------------------------------------------------------------------- shipped files

CATALOG = ["relu", "relu2", "relu3", "resin", "erf", "normcdf", "sin", "gelu"]


@pytest.mark.parametrize("name", CATALOG)
@pytest.mark.parametrize("deriv", [False, True])
def test_shipped_files_load_and_are_exactly_integrable(name, deriv):
    path = SHIPPED / f"{name}{'.derivative' if deriv else ''}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not shipped (see the report on gelu)")
    system = cache.load_file(path)
    assert system.activation == name and system.derivative == deriv
    assert system.std_monomials[0] == (0, 0, 0)
    if path.stat().st_size < 20_000:
        assert check_integrability_exact(system) == []
    else:  # gelu: the sympy check takes minutes; exact modular check at random points
        assert integrability_defect_modp(system, tries=5) == ""


def test_shipped_ranks():
    ranks = {"relu": 2, "relu.derivative": 2, "resin": 5, "resin.derivative": 8}
    for key, r in ranks.items():
        assert cache.load_file(SHIPPED / f"{key}.json").rank == r


def test_shipped_relu_is_math_md():
    assert_matches_relu_reference(cache.load_file(SHIPPED / "relu.json"))


def test_shipped_relu_against_quadrature():
    from ntkhgm.checks import check_pfaffian_numeric

    system = cache.load_file(SHIPPED / "relu.json")
    assert check_pfaffian_numeric(system, n_points=1, seed=3) < 1e-9


def test_relu_initial_value_matches_seed():
    # F(−1, 0, −1) = (1/4, π/8) (docs/math.md §4) from the recipe 2^j M_{2i+j} M_{2k+j}
    from math import gamma, pi

    system = cache.load_file(SHIPPED / "relu.json")

    def M(n, t):  # ReLU moment, docs/math.md §5
        return gamma((n + 2) / 2) / (2 * (-t) ** ((n + 2) / 2))
    vals = [c * M(n1, -1.0) * M(n2, -1.0) for c, n1, n2 in system.initial_value_terms()]
    assert np.allclose(vals, [0.25, pi / 8], rtol=1e-14)


# --------------------------------------------------------------------------- round trip

def test_json_roundtrip_and_compiled_evaluator():
    system = PfaffianSystem.from_json(relu_text())
    again = PfaffianSystem.from_json(system.to_json())
    assert again == system
    obj = json.loads(system.to_json())
    assert obj["schema"] == "ntkhgm.pfaffian/1" and obj["sha256"] == content_hash(obj)
    f = compile_matrices(system)
    x = (np.array([-1.0, -2.0]), np.array([0.3, -0.1]), np.array([-1.5, -0.7]))
    got = f(*x)["x12"]
    d = x[1] ** 2 - x[0] * x[2]
    assert np.allclose(got[:, 1, 0], -4 / d) and np.allclose(got[:, 1, 1], -5 * x[1] / d)


# --------------------------------------------------------------------------- hostile files

def _mutations():
    obj = json.loads(relu_text())
    out = {}
    o = dict(obj)
    o["activation"] = "relu2"
    out["wrong hash"] = json.dumps(o)
    out["truncated"] = relu_text()[: len(relu_text()) // 2]
    out["not json"] = "\x00\x01garbage"
    out["top-level list"] = "[1, 2]"
    o = json.loads(relu_text())
    o["matrices"]["x12"][0] = ["0"]
    out["wrong shape"] = rehash(o)
    o = json.loads(relu_text())
    o["matrices"]["x12"][1][0] = "__import__('os').system('touch /tmp/pwned-ntkhgm')"
    out["code in entry"] = rehash(o)
    o = json.loads(relu_text())
    o["matrices"]["x12"][1][0] = "4/(x11*x22-y^2)"
    out["unknown symbol"] = rehash(o)
    o = json.loads(relu_text())
    o["matrices"]["x12"][1][0] = "(x11+x12+x22+1)^64"
    out["slow expression"] = rehash(o)
    o = json.loads(relu_text())
    o["matrices"]["x12"][1][0] = "5/(x11*x22-x12^2)"      # 4 → 5 breaks integrability
    out["non-integrable"] = rehash(o)
    o = json.loads(relu_text())
    o["matrices"]["x12"][1][0] = 4
    out["number not string"] = rehash(o)
    o = json.loads(relu_text())
    o["std_monomials"] = [[0, 1, 0], [0, 0, 0]]
    out["1 not first"] = rehash(o)
    o = json.loads(relu_text())
    o["annihilator"] = 'u*du-1; shell("x")'
    out["bad annihilator"] = rehash(o)
    o = json.loads(relu_text())
    o["extra"] = 1
    out["extra key"] = rehash(o)
    o = json.loads(relu_text())
    o["schema"] = "ntkhgm.pfaffian/999"
    out["future schema"] = rehash(o)
    o = json.loads(relu_text())
    o["initial_values"]["terms"][1] = [3, 1, 1]
    out["initial values"] = rehash(o)
    o = json.loads(relu_text())
    o["activation"] = "../../etc/passwd"
    out["path name"] = rehash(o)
    out["deep json"] = "[" * 100000 + "]" * 100000
    return out


@pytest.mark.parametrize("kind, text", list(_mutations().items()), ids=list(_mutations()))
def test_hostile_or_corrupt_files_are_refused(kind, text):
    with pytest.raises(PfaffianFileError) as info:
        PfaffianSystem.from_json(text, source="f.json")
    assert "\n" not in str(info.value)
    assert not Path("/tmp/pwned-ntkhgm").exists()


def test_modp_integrability_detects_a_small_change():
    system = PfaffianSystem.from_json(relu_text())
    assert integrability_defect_modp(system) == ""
    m = {k: [list(r) for r in v] for k, v in system.matrices.items()}
    m["x11"][0][0] = RationalFunction({(0, 0, 0): Fraction(-2)}, {(1, 0, 0): Fraction(1)})
    bad = PfaffianSystem(system.activation, False, system.annihilator, system.std_monomials,
                         {k: tuple(tuple(r) for r in v) for k, v in m.items()})
    assert integrability_defect_modp(bad) != ""
    assert check_integrability_exact(bad) != []


# --------------------------------------------------------------------------- cache

def _as_user(system: PfaffianSystem, name: str) -> PfaffianSystem:
    return dataclasses.replace(system, activation=name)


def test_catalog_reads_shipped_only_and_user_names_user_only(isolated_cache, tmp_path,
                                                              monkeypatch):
    assert cache.load_pfaffian("relu", False).backend  # shipped
    assert cache.has_pfaffian("relu", True)
    assert not cache.has_pfaffian("nosuch", False)
    isolated_cache.mkdir(parents=True)
    # a user-cache file with a catalog name is never read (an older version's, or a shadow)
    (isolated_cache / "relu.json").write_text(relu_text()[:100])
    assert cache.load_pfaffian("relu", False) == PfaffianSystem.from_json(relu_text())
    assert cache.list_user_activations() == []
    # a damaged user system is reported with the way out
    (isolated_cache / "mine.json").write_text(relu_text()[:100])
    with pytest.raises(PfaffianFileError, match="--force"):
        cache.load_pfaffian("mine", False)
    monkeypatch.setenv("NTKHGM_DATA_DIR", str(tmp_path / "empty"))
    assert cache.load_pfaffian("relu", False) is None
    assert cache.list_user_activations() == ["mine"]


@pytest.mark.parametrize("name", ["relu", "ReSin", "relu7", "sigmoid"])
def test_catalog_names_are_reserved(isolated_cache, name):
    system = PfaffianSystem.from_json(relu_text())
    with pytest.raises(InputError, match="reserved"):
        cache.store_pfaffian(_as_user(system, name.lower()))
    with pytest.raises(InputError, match="reserved"):
        cache.compute_pfaffian("u*du-1", False, name=name, backend_obj=_FailingBackend())
    assert not isolated_cache.exists()


def test_store_then_load(isolated_cache):
    system = _as_user(PfaffianSystem.from_json(relu_text()), "myrelu")
    path = cache.store_pfaffian(system)
    assert path == isolated_cache / "myrelu.json"
    assert cache.load_pfaffian("myrelu", False) == system
    assert [p.name for p in isolated_cache.iterdir()] == ["myrelu.json"]
    assert cache.list_user_activations() == ["myrelu"]


def _store_many(args):
    cache_dir, n = args
    os.environ["NTKHGM_CACHE_DIR"] = cache_dir
    system = _as_user(PfaffianSystem.from_json((SHIPPED / "relu.json").read_text()), "myrelu")
    for _ in range(n):
        cache.store_pfaffian(system)
    return True


def test_concurrent_stores_leave_one_valid_file(isolated_cache):
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        assert all(pool.map(_store_many, [(str(isolated_cache), 20)] * 3))
    files = sorted(p.name for p in isolated_cache.iterdir())
    assert files == ["myrelu.json"]        # no temporary files left behind
    PfaffianSystem.from_json((isolated_cache / "myrelu.json").read_text())


class _FailingBackend(Backend):
    """Dies in the middle of a computation."""

    name = "failing"

    @classmethod
    def locate(cls):
        return "nowhere"

    def version(self):
        return "0"

    def pfaffian(self, annihilator, progress=None):
        if progress:
            progress("restriction", 0.1)
        raise BackendCrashError("failing: the process died (killed by signal SIGKILL)")


class _NonIntegrableBackend(_FailingBackend):
    name = "liar"

    def pfaffian(self, annihilator, progress=None):
        one = ({(0, 0, 0): Fraction(1)}, {(0, 0, 0): Fraction(1)})
        xx = ({(0, 0, 0): Fraction(1)}, {(1, 0, 0): Fraction(1)})
        return BackendResult([(0, 0, 0)], {"x11": [[one]], "x12": [[xx]], "x22": [[one]]})


@pytest.mark.parametrize("backend", [_FailingBackend, _NonIntegrableBackend])
def test_failures_never_enter_the_cache(isolated_cache, backend):
    with pytest.raises(BackendError):
        cache.compute_pfaffian("relu", False, force=True, name="myrelu", backend_obj=backend())
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []
