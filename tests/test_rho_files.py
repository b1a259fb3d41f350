"""The shipped (√a, √b, ρ) systems: equal to the exact derivation, and nothing read is trusted."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from fractions import Fraction

import pytest

from ntkhgm.algebra.cache import load_file, load_pfaffian
from ntkhgm.algebra.pfaffian import content_hash
from ntkhgm.errors import PfaffianFileError
from ntkhgm.numeric import hgm
from ntkhgm.numeric.pfaffian_ode import RhoSystem
from ntkhgm.numeric.rho_files import (
    MAX_FILE_BYTES,
    load_rho_system,
    rho_file_bytes,
    rho_file_name,
    transform_defect_modp,
)
from ntkhgm.paths import shipped_pfaffian_dir, shipped_rho_dir

SHIPPED = sorted(shipped_pfaffian_dir().glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_pfaffian_has_its_transform(path):
    """Each file equals the exact sympy derivation from the shipped Pfaffian (a regenerated
    Pfaffian without ``make rho-systems`` fails here)."""
    system = load_file(path)
    loaded = load_rho_system(system, shipped_rho_dir())
    assert loaded is not None, f"no current {rho_file_name(system.activation, system.derivative)}"
    assert loaded == RhoSystem.from_pfaffian(system)


def test_catalog_derives_nothing(monkeypatch):
    """A catalog activation's system comes from the package data: no sympy derivation."""
    def refuse(system):
        raise AssertionError("derived at run time")
    monkeypatch.setattr(RhoSystem, "from_pfaffian", classmethod(lambda cls, s: refuse(s)))
    monkeypatch.setattr(hgm, "_RHO_MEMO", {})
    for name, derivative in (("resin", False), ("resin", True), ("gelu", True), ("erf", False)):
        rs = hgm.rho_system(load_pfaffian(name, derivative))
        assert rs.rank == load_pfaffian(name, derivative).rank


def test_evaluation_without_sympy():
    """A cold process evaluates ReSin's hgm dual without importing sympy."""
    code = ("import sys, numpy as np; from ntkhgm.duals import dual; "
            "v = dual('resin', np.array([1.0]), np.array([2.0]), np.array([0.3]), method='hgm'); "
            "assert np.isfinite(v).all(); print('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def _rewrite(directory, system, edit):
    """Write the shipped file of ``system`` into ``directory`` after ``edit`` of its
    object, re-hashed (a deliberate forgery, not a corruption)."""
    obj = json.loads(gzip.decompress(rho_file_bytes(RhoSystem.from_pfaffian(system), system)))
    edit(obj)
    obj["sha256"] = content_hash(obj)
    path = directory / rho_file_name(system.activation, system.derivative)
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    return path


def _bump_coefficient(obj):
    for row in obj["system"]["numerators"]:
        for entry in row:
            if entry:
                entry[0][3] = str(Fraction(entry[0][3]) + Fraction(1, 10**12))
                return


@pytest.mark.parametrize("edit, message", [
    (_bump_coefficient, "is not the Pfaffian's"),
    (lambda o: o["system"].__setitem__("m1", o["system"]["m1"] + 1), "is not the Pfaffian's"),
    (lambda o: o["system"].__setitem__("kappa", "2"), "is not the Pfaffian's"),
    (lambda o: o["system"]["rest"].append([0, 0, 1, "1/3"]), "is not the Pfaffian's"),
    (lambda o: o["system"].__setitem__("kappa", "0"), "kappa"),
    (lambda o: o["system"].__setitem__("rank", 4), "rank"),
    (lambda o: o["system"]["numerators"].pop(), "array"),
    (lambda o: o["system"]["rest"].append([-1, 0, 0, "1"]), "exponent"),
    (lambda o: o["system"]["rest"].append([0, 0, 0, "__import__('os')"]), "not a rational"),
    (lambda o: o["system"]["rest"].append([0, 0, 0, 1.5]), "string"),
    (lambda o: o["system"]["rest"].append([0, 0, 0, f"1/{(1 << 61) - 1}"]), "modulo the prime"),
    (lambda o: o["system"].__setitem__("extra", 1), "wrong keys"),
])
def test_forged_file_is_refused(tmp_path, edit, message):
    system = load_pfaffian("resin", True)
    _rewrite(tmp_path, system, edit)
    with pytest.raises(PfaffianFileError, match=message):
        load_rho_system(system, tmp_path)


# mtime=0: the same bytes in every process (pytest-xdist collects the ids in each worker)
@pytest.mark.parametrize("content, message", [
    (b"not gzip", "gzip"),
    (gzip.compress(b"{not json", mtime=0), "JSON"),
    (gzip.compress(b"[1, 2]", mtime=0), "not a ntkhgm.rho_system/1"),
    (gzip.compress(b" " * (MAX_FILE_BYTES + 10), mtime=0), "too large"),
], ids=["not gzip", "not JSON", "wrong schema", "too large"])
def test_corrupt_file_is_refused(tmp_path, content, message):
    system = load_pfaffian("resin", False)
    (tmp_path / rho_file_name("resin", False)).write_bytes(content)
    with pytest.raises(PfaffianFileError, match=message):
        load_rho_system(system, tmp_path)


def test_edited_file_fails_its_hash(tmp_path):
    system = load_pfaffian("resin", False)
    text = gzip.decompress(rho_file_bytes(RhoSystem.from_pfaffian(system), system)).decode()
    (tmp_path / rho_file_name("resin", False)).write_bytes(
        gzip.compress(text.replace('"m1":2', '"m1":1').encode()))
    with pytest.raises(PfaffianFileError, match="hash"):
        load_rho_system(system, tmp_path)


def test_file_of_another_pfaffian_is_not_used(tmp_path):
    """A file made from another Pfaffian (regenerated systems) is skipped, not an error."""
    system = load_pfaffian("resin", False)
    _rewrite(tmp_path, system, lambda o: o.__setitem__("pfaffian", "0" * 64))
    assert load_rho_system(system, tmp_path) is None
    assert load_rho_system(system, tmp_path / "absent") is None


def test_forged_shipped_file_warns_and_derives(tmp_path, monkeypatch):
    """The evaluator never uses a file that fails its check: it warns and derives."""
    import ntkhgm.paths

    system = load_pfaffian("resin", False)
    _rewrite(tmp_path, system, _bump_coefficient)
    monkeypatch.setattr(ntkhgm.paths, "shipped_rho_dir", lambda: tmp_path)
    monkeypatch.setattr(hgm, "_RHO_MEMO", {})
    with pytest.warns(RuntimeWarning, match="deriving the system"):
        rs = hgm.rho_system(system)
    assert rs == RhoSystem.from_pfaffian(system)


def test_modular_check_sees_the_transform_of_another_system():
    """The check compares with the Pfaffian itself: resin's transform is not relu's."""
    relu, erf = load_pfaffian("relu", False), load_pfaffian("erf", False)
    assert transform_defect_modp(RhoSystem.from_pfaffian(relu), relu) == ""
    assert transform_defect_modp(RhoSystem.from_pfaffian(erf), relu) != ""
