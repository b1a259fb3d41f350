"""Tampered and broken Pfaffian files are detected before any kernel value is returned (issue 13).

Every kind of Pfaffian file ntkhgm reads is edited here: shipped catalog files
(through ``NTKHGM_DATA_DIR``, σ and σ') and user-activation files in the cache
(σ and σ').  The edits: bytes without a new hash, one coefficient with a
recomputed hash, a gauge transformation F ↦ g·F with a recomputed hash (still
integrable: only a numeric check against σ's moments can see it), a foreign
annihilator, a foreign σ expression, truncation, deep nesting, and a file too
large to read.  References: the closed forms of math.md §6 (a clean run) and the
exact integrability condition (the gauge really is integrable).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

import ntkhgm
from ntkhgm.algebra import cache
from ntkhgm.algebra.pfaffian import (
    MAX_FILE_BYTES,
    PfaffianSystem,
    RationalFunction,
    content_hash,
    integrability_defect_modp,
)
from ntkhgm.algebra.sigma_expr import parse_sigma
from ntkhgm.checks import cross_check_system
from ntkhgm.cli import main
from ntkhgm.errors import PfaffianFileError

A = np.array([1.0, 2.0, 0.5])
B = np.array([1.5, 0.7, 0.5])
C = np.array([0.3, -0.9, 0.49])


_SHIPPED: dict[tuple[str, bool], PfaffianSystem] = {}


def shipped(name: str, derivative: bool) -> PfaffianSystem:
    """The shipped system (read with the real shipped folder, whatever the test set)."""
    if (name, derivative) not in _SHIPPED:
        saved = os.environ.pop("NTKHGM_DATA_DIR", None)
        try:
            system = cache.load_pfaffian(name, derivative)
        finally:
            if saved is not None:
                os.environ["NTKHGM_DATA_DIR"] = saved
        assert system is not None
        _SHIPPED[name, derivative] = system
    return _SHIPPED[name, derivative]


def file_name(system: PfaffianSystem) -> str:
    return f"{system.key}.json"


# -- exact edits of the matrices ---------------------------------------------------------

def _mul(p, q):
    out: dict = {}
    for m1, c1 in p.items():
        for m2, c2 in q.items():
            m = (m1[0] + m2[0], m1[1] + m2[1], m1[2] + m2[2])
            out[m] = out.get(m, Fraction(0)) + c1 * c2
    return {m: c for m, c in out.items() if c}


def _add(p, q):
    out = dict(p)
    for m, c in q.items():
        out[m] = out.get(m, Fraction(0)) + c
    return {m: c for m, c in out.items() if c}


def gauge(system: PfaffianSystem, key: str, num: dict, den: dict) -> PfaffianSystem:
    """P_key ↦ P_key + (num/den)·I: the system of g·F where ∂_key g / g = num/den."""
    rows = []
    for i, row in enumerate(system.matrices[key]):
        new = list(row)
        e = row[i]
        new[i] = RationalFunction(_add(_mul(e.num, den), _mul(num, e.den)), _mul(e.den, den))
        rows.append(tuple(new))
    mats = dict(system.matrices)
    mats[key] = tuple(rows)
    return replace(system, matrices=mats)


X11_POWER = ({(0, 0, 0): Fraction(1)}, {(1, 0, 0): Fraction(100)})        # g = x11^(1/100)
FLAT_X12 = ({(0, 1, 0): Fraction(2)}, {(0, 0, 0): Fraction(1), (0, 2, 0): Fraction(1)})
# g = 1 + x12²: ∂12 g / g = 2 x12 / (1 + x12²), zero on x12 = 0 (invisible to the recipe)


def one_coefficient(system: PfaffianSystem) -> PfaffianSystem:
    """Add 1 to one numerator coefficient of P_x12[0][-1]."""
    mats = dict(system.matrices)
    rows = [list(r) for r in mats["x12"]]
    e = rows[0][-1]
    m = next(iter(e.num)) if e.num else (0, 0, 0)
    rows[0][-1] = RationalFunction(_add(e.num, {m: Fraction(1)}), e.den)
    mats["x12"] = tuple(tuple(r) for r in rows)
    return replace(system, matrices=mats)


# -- where the files go -------------------------------------------------------------------

@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty shipped-Pfaffian folder and an empty user cache."""
    d = tmp_path / "shipped"
    d.mkdir()
    monkeypatch.setenv("NTKHGM_DATA_DIR", str(d))
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(tmp_path / "cache"))
    return d


def install(folder, system_or_text, name: str | None = None):
    text = system_or_text if isinstance(system_or_text, str) else system_or_text.to_json()
    path = folder / (name or file_name(system_or_text))
    path.write_text(text)
    # distinct mtime/size per write, so no in-process memo can serve an old parse
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    return path


def assert_refused(activation, derivative, match):
    with pytest.raises(PfaffianFileError, match=match):
        ntkhgm.dual(activation, A, B, C, derivative=derivative, method="hgm")


# -- the gauge cases of the issue ------------------------------------------------------

@pytest.mark.parametrize("name, derivative", [("resin", False), ("resin", True),
                                              ("relu", False), ("gelu", True)])
@pytest.mark.parametrize("key, g", [("x11", X11_POWER), ("x12", FLAT_X12)])
def test_gauge_with_recomputed_hash_is_detected(data_dir, name, derivative, key, g):
    good = shipped(name, derivative)
    bad = gauge(good, key, *g)
    # the hash is recomputed and the gauged system is integrable: only σ's moments see it
    reloaded = PfaffianSystem.from_json(bad.to_json())
    assert integrability_defect_modp(reloaded) == ""
    install(data_dir, bad)
    assert_refused(name, derivative, "does not match the moments")
    # the untouched system passes the same check at rounding level
    assert cross_check_system(good) < 1e-13


def test_one_coefficient_with_recomputed_hash_is_detected(data_dir):
    install(data_dir, one_coefficient(shipped("resin", False)))
    # caught on load (integrability) or by the moment check, never used
    assert_refused("resin", False, "not integrable|does not match the moments")


def test_one_coefficient_without_new_hash_is_detected(data_dir):
    obj = json.loads(shipped("resin", True).to_json())
    entry = obj["matrices"]["x11"][0][0]
    obj["matrices"]["x11"][0][0] = entry.replace("1", "2", 1) if "1" in entry else entry + "+1"
    install(data_dir, json.dumps(obj), "resin.derivative.json")
    assert_refused("resin", True, "hash mismatch")


def test_foreign_annihilator_with_recomputed_hash_is_refused(data_dir):
    # relu2's valid system filed as relu: integrable and consistent, but not relu's
    relu2 = shipped("relu2", False)
    install(data_dir, replace(relu2, activation="relu"), "relu.json")
    assert_refused("relu", False, "annihilator")


@pytest.mark.parametrize("text", [
    "",                                   # truncated to nothing
    "{",                                  # truncated JSON
    "[" * 200_000 + "]" * 200_000,        # nesting deeper than any parser stack
    '{"schema": "ntkhgm.pfaffian/2"}',    # another schema
    "\x00\x01binary",
], ids=["empty", "truncated", "deep-nesting", "schema", "binary"])
def test_broken_shipped_file_is_one_line_error(data_dir, text):
    install(data_dir, text, "resin.json")
    assert_refused("resin", False, "resin.json")
    res = CliRunner().invoke(main, ["dual", "-a", "resin", "--a", "1", "--b", "1",
                                    "--c", "0.5"])
    # the dual table shows hgm's error in its row; the other methods still run
    rows = {line.split("│")[1].strip(): line for line in res.output.splitlines()
            if line.count("│") > 2}
    assert res.exit_code == 0, res.output
    assert "error:" in rows["hgm"] and "error" not in rows["quad"], res.output


def test_file_too_large_is_refused_before_reading(data_dir, monkeypatch):
    path = data_dir / "resin.json"
    with open(path, "wb") as fh:            # sparse: costs no disk, 1 byte past the cap
        fh.truncate(MAX_FILE_BYTES + 1)

    def no_read(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(type(path), "read_bytes", no_read)
    monkeypatch.setattr(type(path), "open", no_read)
    assert_refused("resin", False, "too large")


# -- user-activation files ------------------------------------------------------------

def user_pair(name="myrelu2"):
    """A user activation u²·Y(u) and its derivative, made from the shipped relu2 systems."""
    s = replace(shipped("relu2", False), activation=name,
                expression=parse_sigma("u^2*step(u)").text)
    d = replace(shipped("relu2", True), activation=name,
                expression=parse_sigma("2*u*step(u)").text)
    return (PfaffianSystem.from_json(s.to_json()), PfaffianSystem.from_json(d.to_json()))


def test_user_files_clean_run_matches_closed_form(data_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    for s in user_pair():
        install(cache_dir, s)
    for derivative in (False, True):
        got = ntkhgm.dual("myrelu2", A, B, C, derivative=derivative, method="hgm")
        ref = ntkhgm.dual("relu2", A, B, C, derivative=derivative, method="closed")
        np.testing.assert_allclose(got, ref, rtol=1e-10)


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("edit", ["gauge", "expression", "coefficient"])
def test_tampered_user_files_are_refused(data_dir, tmp_path, derivative, edit):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    s, d = user_pair()
    target = d if derivative else s
    if edit == "gauge":
        target = gauge(target, "x11", *X11_POWER)
    elif edit == "expression":   # another function, the same system: the moments disagree
        target = replace(target, expression=parse_sigma(
            "u^2*step(u)" if derivative else "u^3*step(u)").text)
    else:
        target = one_coefficient(target)
    install(cache_dir, target)
    install(cache_dir, s if derivative else d)
    with pytest.raises(PfaffianFileError):
        ntkhgm.dual("myrelu2", A, B, C, derivative=derivative, method="hgm")


# -- a corrupt file must not break what does not need it -------------------------------------

def test_corrupt_relu_file_does_not_break_closed_form_kernels(data_dir, tmp_path, conftest_ref):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    for folder in (data_dir, cache_dir):
        install(folder, "{ not json", "relu.json")
        install(folder, "{ not json", "relu.derivative.json")
    X = np.random.default_rng(1).standard_normal((5, 3))
    K = ntkhgm.kernel(X, activation="relu", depth=2)
    np.testing.assert_allclose(K, conftest_ref(X, X, 2), rtol=1e-12)
    with pytest.raises(PfaffianFileError):
        ntkhgm.kernel(X, activation="relu", depth=2, method="hgm")


def test_cli_kernel_with_tampered_file_is_one_line_and_writes_nothing(data_dir, tmp_path):
    install(data_dir, gauge(shipped("resin", False), "x11", *X11_POWER))
    install(data_dir, shipped("resin", True))
    csv = tmp_path / "x.csv"
    csv.write_text("1,2\n0.5,-1\n2,0.3\n")
    out = tmp_path / "K.npy"
    res = CliRunner().invoke(main, ["kernel", str(csv), "-a", "resin", "-L", "1",
                                    "-m", "hgm", "-o", str(out)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntkhgm: error:")
    assert "does not match the moments" in lines[0]
    assert not out.exists() and list(tmp_path.glob(".K.npy*")) == []


@pytest.fixture
def conftest_ref():
    from conftest import relu_ntk_reference

    return relu_ntk_reference


def test_content_hash_covers_the_derivation_inputs():
    obj = json.loads(shipped("relu", False).to_json())
    for key, value in (("annihilator", "u*du-2"), ("backend", {"name": "asir", "version": "x"})):
        edited = dict(obj, **{key: value})
        assert content_hash(edited) != obj["sha256"]
        with pytest.raises(PfaffianFileError, match="hash mismatch"):
            PfaffianSystem.from_json(json.dumps(edited))


def test_pfaffian_command_does_not_serve_a_tampered_file(data_dir, tmp_path):
    install(data_dir, gauge(shipped("resin", False), "x12", *FLAT_X12))
    out = tmp_path / "resin.json"
    res = CliRunner().invoke(main, ["pfaffian", "--activation", "resin", "-o", str(out),
                                    "--quiet"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "does not match the moments" in lines[0] and not out.exists()
